"""The search (tools.flows.tune) on the tiny model with real llamafactory-cli runs: the sampler proposes and
trains trials named by their parameters, the median pruner stops a bad trial at its first epoch, and a
tune killed mid-trial (SIGKILL of its process group) resumes from the SQLite storage with no trial lost or
trained twice. Fast tests: the space, the names, the refusals."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tools.core.paths import DATA, ROOT, Run, report_dir
from tools.core.profiles import ConfigError
from tools.core.runinfo import command_of
from tools.flows import trial as T
from tools.flows import tune

EPOCHS = 3
# 4 rows, 2 per step: 2 steps an epoch, a checkpoint and a dev eval_loss (4 dev rows) at each epoch's end
SETS = ["max_steps_cap=", "save_steps=", "train_rows=4", "max_samples=4", f"num_train_epochs={EPOCHS}"]
SETS += ["eval_dataset=demo_dev"]
# docs/tune.md: the search at the CPU budget of tools.flows.tune_bench --budget cpu, from a fresh clone
FRESH = re.compile(r'^make tune STUDY=lr TRIALS=6 MODEL=smollm2_135m TUNE_ARGS="[^"]*"', re.M)


@pytest.fixture()
def data(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    rows = [{"instruction": f"Write {i} in words.", "input": "", "output": f"It is {i}."} for i in range(4)]
    (d / "alpaca_top100.json").write_text(json.dumps(rows))
    shutil.copy(DATA / "demo_dev.json", d / "demo_dev.json")
    info = {n: {"file_name": f"{n}.json"} for n in ("alpaca_top100", "demo_dev")}
    (d / "dataset_info.json").write_text(json.dumps(info))
    return d


def argv(data: Path, trials: int, *extra: str) -> list[str]:
    sets = [x for s in SETS for x in ("--set", s)]
    base = ["--study", "lr", "--model", "tiny", "--trials", str(trials), "--dataset-dir", str(data)]
    return [*base, *sets, "--skip-preflight", "--poll", "0.2", *extra]


def storage():
    import optuna

    return optuna.load_study(study_name="lr-tiny", storage=f"sqlite:///{report_dir('lr') / 'tune.db'}")


# ------------------------------------------------------------------------------------ fast
def test_names_carry_the_trial_number_and_its_parameters():
    assert T.trial_name(3, {"learning_rate": 3.2e-4, "lora_rank": 8}) == "t003_lr3.2e-4_r8"
    assert T.trial_name(12, {"lora_target": "q_proj,v_proj"}) == "t012_tgtq_proj+v_proj"


def test_the_space_is_checked_with_every_problem_at_once():
    space = T.parse_space(
        {"params": {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}}}, "x"
    )
    assert space["learning_rate"]["log"] is True
    with pytest.raises(ConfigError) as e:
        T.parse_space(
            {"params": {"a": {"low": 0, "high": 1, "log": True}, "b": {"type": "cat"}}, "bogus": 1}, "x"
        )
    assert "bogus" in str(e.value) and "a: a log range" in str(e.value) and "b: type 'cat'" in str(e.value)


def test_a_study_without_search_and_a_bad_pruner_are_refused(out_dir, data, capsys):
    assert tune.main(["--study", "rank", "--model", "tiny", "--skip-preflight"]) == 2
    assert "no `search:` block" in capsys.readouterr().err
    assert tune.main([*argv(data, 1), "--pruner", "[1, 2]"]) == 2
    assert "--pruner" in capsys.readouterr().err
    assert not (report_dir("lr") / "tune.db").exists()


def test_data_that_is_not_registered_is_refused_before_a_trial_is_spent(out_dir, tmp_path, capsys):
    """A fresh clone before `make data`: every trial would fail on the missing dataset, and failed trials
    count towards --trials, so the search would be used up; it is refused before the study is written."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert tune.main(argv(empty, 6)) == 2
    err = capsys.readouterr().err
    assert "alpaca_top100" in err and "make data" in err and len(err.strip().splitlines()) == 1, err
    assert not (report_dir("lr") / "tune.db").exists() and not (out_dir / "saves").exists()
    from tools.flows import tune_bench  # the benchmark says so before its grid's first run

    assert tune_bench.main(["--budget", "cpu", "--dataset-dir", str(empty)]) == 2
    assert "'alpaca_top100' is not registered" in capsys.readouterr().err
    assert not list(out_dir.glob("cache/tune-bench/*/saves/*"))


def test_the_data_check_reads_comma_joined_lists_as_llamafactory_does(tmp_path):
    """A chain's stage trains on `a,b`: each name is looked up, not the joined string."""
    d = tmp_path / "data"
    d.mkdir()
    for n in ("a", "b", "dev"):
        (d / f"{n}.json").write_text("[]")
    (d / "dataset_info.json").write_text(json.dumps({n: {"file_name": f"{n}.json"} for n in ("a", "dev")}))
    with pytest.raises(ConfigError, match="'b' is not registered"):
        tune.require_data({"dataset": "a,b", "eval_dataset": "dev"}, d)
    (d / "dataset_info.json").write_text(
        json.dumps({n: {"file_name": f"{n}.json"} for n in ("a", "b", "dev")})
    )
    tune.require_data({"dataset": "a, b", "eval_dataset": "dev"}, d)


def test_make_tune_takes_the_benchmarks_cpu_budget_as_documented():
    """The fresh-clone command of docs/tune.md passes tune_bench's --budget cpu overrides, and they render to
    the lr study cut down (8 rows at 64 tokens, 4 a step: 2 steps an epoch, 3 epochs, all 8 dev rows)."""
    from tools.flows.tune_bench import BUDGETS
    from tools.train import parse_set, render_study

    (documented,) = FRESH.findall((ROOT / "docs" / "tune.md").read_text())
    make_args = shlex.split(documented)
    tune_args = shlex.split(make_args[-1].removeprefix("TUNE_ARGS="))
    assert tune_args == [x for s in BUDGETS["cpu"] for x in ("--set", s)]
    shown = subprocess.run(
        # --no-print-directory: under `make test` this make is nested and would add "make[1]: ..." lines
        ["make", "-n", "--no-print-directory", *make_args[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    passed = ["--runner", "local", *tune_args]
    assert shlex.split(shown.stdout.splitlines()[-1])[-len(passed) :] == passed
    for r in render_study("lr", "smollm2_135m", parse_set(BUDGETS["cpu"])):
        c = r.config
        shape = (c["max_samples"], c["cutoff_len"], c["num_train_epochs"], c["warmup_steps"])
        assert shape == (8, 64, 3, 0), c
        assert c["eval_dataset"] == "demo_dev" and "max_steps" not in c and "save_steps" not in c
        assert "8 rows / 4 = 2 steps per epoch" in r.text and c["disable_gradient_checkpointing"] is True


# ------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_sampler_runs_trials_and_the_median_pruner_stops_a_bad_one(out_dir, data, tiny_model, capsys):
    import optuna

    report_dir("lr").mkdir(parents=True)
    st = optuna.create_study(
        study_name="lr-tiny", storage=f"sqlite:///{report_dir('lr') / 'tune.db'}", direction="minimize"
    )
    st.enqueue_trial({"learning_rate": 1.0e-3})  # a good trial first, then a learning rate far too low
    st.enqueue_trial({"learning_rate": 5.0e-5})
    assert tune.main([*argv(data, 2), "--pruner", "{name: median, n_startup_trials: 1}"]) == 0
    trials = storage().trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    good, bad = trials
    assert good.user_attrs["run"] == "t000_lr1e-3" and bad.user_attrs["run"] == "t001_lr5e-5"
    assert sorted(good.intermediate_values) == [1, 2, 3] and good.value == min(
        good.intermediate_values.values()
    )
    assert bad.user_attrs["epoch_reached"] == 1 and list(bad.intermediate_values) == [1]
    assert bad.intermediate_values[1] > good.intermediate_values[1]
    # each trial is an ordinary run: its folder, run.json, and the finished one's DONE
    g, b = Run("tiny", "lr", "t000_lr1e-3"), Run("tiny", "lr", "t001_lr5e-5")
    assert g.is_finished() and json.loads(g.run_json.read_text())["hparams"]["learning_rate"] == 1.0e-3
    rec = json.loads(b.run_json.read_text())
    assert rec["status"] == "pruned" and rec["pruned_at_epoch"] == 1
    assert (
        rec["steps_planned"] == 2 * EPOCHS and rec["steps_run"] + rec["steps_saved"] == rec["steps_planned"]
    )
    out = report_dir("lr")
    summary = json.loads((out / "tune.json").read_text())
    assert summary["best"]["run"] == g.name and summary["counts"] == {"COMPLETE": 1, "PRUNED": 1, "FAIL": 0}
    md = (out / "tune.md").read_text()
    assert "t001_lr5e-5" in md and "pruned" in md and (out / "tune_slice.png").stat().st_size > 0
    assert "<table>" in (out / "tune.html").read_text()
    assert "PRUNED" in capsys.readouterr().out


@pytest.mark.slow
def test_a_tune_killed_mid_trial_resumes_with_no_trial_lost_or_run_twice(out_dir, data, tiny_model):
    cmd = [*command_of(tune.main), *argv(data, 2, "--pruner", "{name: none}")]
    env = {**os.environ, "SMALLDATA_OUT": str(out_dir)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    saves = out_dir / "saves" / "tiny" / "lora" / "lr"
    deadline = time.time() + 240
    try:  # kill once the first trial has kept its first epoch's checkpoint, mid-trial
        while time.time() < deadline and proc.poll() is None:
            if any(
                d.name.startswith("t000") and Run("tiny", "lr", d.name).epochs() for d in saves.glob("t*")
            ):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the tune ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (first,) = [d.name for d in saves.glob("t000*")]
    assert not Run("tiny", "lr", first).is_finished()
    assert [t.state.name for t in storage().trials] == ["RUNNING"]

    assert tune.main(argv(data, 2, "--pruner", "{name: none}")) == 0
    trials = storage().trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[0].user_attrs["interrupted"] and trials[1].user_attrs["requeued_from"] == 0
    # the re-queued trial is the killed one: same parameters, same run folder, resumed from its checkpoint
    assert trials[1].params == trials[0].params and trials[1].user_attrs["run"] == first
    assert json.loads(Run("tiny", "lr", first).run_json.read_text())["resumed_from"]
    runs = [t.user_attrs["run"] for t in trials[1:]]
    assert trials[2].params != trials[0].params  # the resumed sampler does not repeat its first proposal
    assert len(set(runs)) == 2 and sorted(d.name for d in saves.glob("t*")) == sorted(runs)
    assert all(Run("tiny", "lr", r).is_finished() for r in runs)
    # a finished tune asked again trains nothing more
    assert tune.main(argv(data, 2, "--pruner", "{name: none}")) == 0
    assert len(storage().trials) == 3


def test_sampler_and_pruner_are_data_and_the_objective_comes_from_the_rule(tmp_path):
    import optuna

    assert isinstance(tune.make_sampler({"name": "tpe", "seed": 0}, None), optuna.samplers.TPESampler)
    assert isinstance(tune.make_sampler({"name": "random"}, 3), optuna.samplers.RandomSampler)
    hb = tune.make_pruner({"name": "hyperband", "reduction_factor": 2}, 3)
    assert isinstance(hb, optuna.pruners.HyperbandPruner)
    with pytest.raises(ConfigError, match="not one of"):
        tune.make_pruner({"name": "asha"}, 3)
    with pytest.raises(ConfigError, match="n_bogus"):
        tune.make_pruner({"name": "median", "n_bogus": 1}, 3)
    from tools.report import objective_of, write_tune_report

    obj = objective_of("lr")  # the default rule starts with judge_mean: searched on eval_loss, and said so
    assert (obj.metric, obj.direction) == ("eval_loss", "minimize") and "judge_mean" in obj.note
    rows = [
        {"number": 0, "variant": "t000_lr1e-3", "params": {"learning_rate": 1e-3}, "epochs": {1: 2.0, 2: 1.5}}
        | {"value": 1.5, "state": "COMPLETE", "epoch_reached": 2, "steps_run": 4, "steps_planned": 4},
        {"number": 1, "variant": "t001_lr5e-5", "params": {"learning_rate": 5e-5}, "epochs": {1: 2.5}}
        | {"value": 2.5, "state": "PRUNED", "epoch_reached": 1, "steps_run": 2, "steps_planned": 4},
    ]
    summary = {"study": "lr", "model": "tiny", "sampler": {}, "pruner": {}, "storage": "x", "counts": {}}
    summary |= {"metric": "eval_loss", "direction": "minimize", "objective_note": obj.note}
    summary |= {"steps": {"planned": 8, "run": 6, "saved": 2, "saved_share": 0.25}}
    paths = write_tune_report(tmp_path, summary, rows, {"learning_rate": 1.0})
    md = (tmp_path / "tune.md").read_text()
    assert "| 1 | t001_lr5e-5 | 5e-05 | 2.5 | - | 2.5 | pruned | 1 | 2 | 4 |" in md
    assert "pruning saved 2 (25%" in md and "learning_rate 1.00" in md
    assert (tmp_path / "tune_slice.png").stat().st_size > 1000 and len(paths) == 4
