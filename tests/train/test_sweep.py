"""Sweeps: real llamafactory-cli runs on the tiny model, resumable after a kill, isolated failures, Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from filelib import sha256_file
from tools.core.paths import ROOT, Run
from tools.flows import sweep
from tools.train import last_checkpoint, resume_point
from tools.train.configs import main as configs_main
from tools.train.trainer import _clear_for_fresh_start, _set_aside

STAGES = ("alpaca_top100", "alpaca_top100_easy", "alpaca_top100_medium", "alpaca_top100_hard")


@pytest.fixture()
def tiny_data(tmp_path) -> Path:
    """A private dataset_dir with the names the studies train on, so tests need no `make data`."""
    d = tmp_path / "data"
    d.mkdir()
    rows = [
        {"instruction": f"Write the number {i} in words.", "input": "", "output": f"It is {i}."}
        for i in range(8)
    ]
    info = {}
    for name in STAGES:
        (d / f"{name}.json").write_text(json.dumps(rows))
        info[name] = {"file_name": f"{name}.json"}
    (d / "dataset_info.json").write_text(json.dumps(info))
    return d


def args(data: Path, *extra: str) -> list[str]:
    return [
        "--study",
        "rank",
        "--model",
        "tiny",
        "--only",
        "r4,r8",
        "--no-eval",
        "--dataset-dir",
        str(data),
        *extra,
    ]


def run_json(variant: str, study: str = "rank") -> dict:
    return json.loads(Run("tiny", study, variant).run_json.read_text())


# ------------------------------------------------------------------------------------ fast
def test_last_checkpoint_is_the_newest_complete_one(tmp_path):
    for step, complete in ((2, True), (10, True), (12, False)):
        ck = tmp_path / f"checkpoint-{step}"
        ck.mkdir()
        if complete:
            (ck / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert last_checkpoint(tmp_path / "nothing") is None


def test_a_final_step_checkpoint_inside_an_epoch_is_not_resumed_from(tmp_path):
    def ckpt(step: int, epoch: float, end: int | None = 6) -> Path:
        ck = tmp_path / f"checkpoint-{step}"
        ck.mkdir()
        state = {"global_step": step, "max_steps": end, "epoch": epoch}
        (ck / "trainer_state.json").write_text(json.dumps(state))
        return ck

    six = ckpt(6, 1.5)  # 4 steps an epoch: the last step is inside the second epoch
    assert resume_point(tmp_path) == (None, [six])  # the only checkpoint is the last step: start over
    five = ckpt(5, 1.25)
    assert resume_point(tmp_path) == (five, [six])
    assert last_checkpoint(tmp_path) == six
    eight = ckpt(8, 2.0, end=8)  # a last step that ends an epoch: nothing is trained past it
    assert resume_point(tmp_path) == (eight, [])
    ckpt(9, 2.25, None)  # a state without max_steps says nothing about the end: resumed from as before
    assert resume_point(tmp_path) == (tmp_path / "checkpoint-9", [])

    # set aside, not deleted, until the run has finished again; a fresh start keeps it too
    _set_aside([six])
    assert not six.exists() and (tmp_path / ".checkpoint-6.retrain" / "trainer_state.json").exists()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-9"
    _clear_for_fresh_start(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [".checkpoint-6.retrain"]


def test_unregistered_dataset_fails_the_run_not_the_sweep(out_dir, tmp_path, tiny_model, capsys):
    empty = tmp_path / "nodata"
    empty.mkdir()
    assert sweep.main(args(empty)) == 1
    out = capsys.readouterr().out
    assert "0 trained, 0 already finished, 2 failed" in out
    rec = run_json("r4")
    assert rec["status"] == "failed" and "'alpaca_top100' is not registered" in rec["error"]
    assert "not registered" in Path(rec["log"]).read_text()


def jobs_for(data: Path, study: str = "rank", only=("r4", "r8")) -> list[dict]:
    return sweep.plan(study, "tiny", dataset_dir=data, only=list(only))


def test_a_failed_run_is_recorded_and_the_next_one_still_runs(out_dir, tiny_data):
    jobs = jobs_for(tiny_data)
    jobs[0]["cli"], jobs[1]["cli"] = ["/bin/false"], ["/bin/true"]
    seen = []
    results = sweep.run_local(jobs, seen.append)
    assert [r["status"] for r in results] == ["failed", "failed"] == [r["status"] for r in seen]
    assert "exited 1" in results[0]["note"] and "no adapter or model was saved" in results[1]["note"]
    assert run_json("r4")["returncode"] == 1 and run_json("r8")["returncode"] == 0
    assert run_json("r8")["status"] == "failed"


def test_finished_run_is_skipped_until_its_data_changes(out_dir, tiny_data):
    (job,) = jobs_for(tiny_data, only=("r4",))
    out = Path(job["output_dir"])
    out.mkdir(parents=True)
    (out / "adapter_model.safetensors").write_bytes(b"x")
    (out / "DONE").write_text("{}")
    fp = {"alpaca_top100": sha256_file(tiny_data / "alpaca_top100.json")}
    rec = {"status": "finished", "data_fingerprint": fp, "config_sha256": job["config_sha256"], "wall_s": 1.0}
    (out / "run.json").write_text(json.dumps(rec))
    job["cli"] = ["/bin/false"]  # would fail if it were launched
    assert sweep.train_one(job)["status"] == "done"
    (other,) = jobs_for(tiny_data, only=("r8",))
    assert other["config_sha256"] != job["config_sha256"]  # what a changed hyperparameter looks like
    (tiny_data / "alpaca_top100.json").write_text("[]")
    job["cli"] = ["/bin/true"]
    res = sweep.train_one(job)
    assert "data changed (alpaca_top100): retrained" in res["note"]
    (stale,) = out.parent.glob(".r4.stale-*")
    assert (stale / "DONE").exists() and not (out / "DONE").exists()


def test_a_stage_waits_for_the_stage_it_continues(out_dir, tiny_data):
    jobs = jobs_for(tiny_data, "curriculum", ("stage1_easy", "stage2_easy_medium"))
    assert jobs[1]["parent"] == "stage1_easy"
    assert jobs[1]["resolved_config"]["adapter_name_or_path"] == jobs[0]["output_dir"]
    res = sweep.train_one(jobs[1])
    assert res["status"] == "failed" and "(stage1_easy) has not finished" in res["note"]


# ------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_two_rank_sweep_end_to_end_from_a_clean_folder(out_dir, tiny_model, tiny_data, capsys):
    assert sweep.main(args(tiny_data, "--warm")) == 0
    out = capsys.readouterr().out
    assert "[1/2] tiny/rank/r4" in out and "[2/2] tiny/rank/r8" in out and "2 trained, 0 already" in out
    for variant, rank in (("r4", 4), ("r8", 8)):
        run = Run("tiny", "rank", variant)
        assert run.is_finished() and run.output_dir == out_dir / "saves/tiny/lora/rank" / variant
        assert (out_dir / "experiments/rank" / f"tiny_lora_sft_{variant}.yaml").exists()
        assert list(run.tb_dir.glob("*/events.out.tfevents.*"))
        assert "Training completed" in run.log.read_text() or "train_loss" in run.log.read_text()
        rec = run_json(variant)
        assert rec["status"] == "finished" and rec["returncode"] == 0
        assert rec["resolved_config"]["lora_rank"] == rank and rec["hparams"]["lora_alpha"] == 2 * rank
        assert rec["resolved_config"]["output_dir"] == str(run.output_dir)
        assert rec["git_commit"] and rec["versions"]["llamafactory"] == "0.9.5"
        assert rec["wall_s"] > 0 and rec["peak_rss_mb"] > 100 and rec["template"] == "smollm2"
        assert rec["data_fingerprint"] == {"alpaca_top100": sha256_file(tiny_data / "alpaca_top100.json")}
        adapter = json.loads((run.output_dir / "adapter_config.json").read_text())
        assert adapter["r"] == rank
    started = run_json("r4")["started"]
    assert sweep.main(args(tiny_data)) == 0  # a re-run trains nothing
    assert "0 trained, 2 already finished" in capsys.readouterr().out
    assert run_json("r4")["started"] == started


@pytest.mark.slow
def test_a_killed_sweep_resumes_only_what_was_missing(out_dir, tiny_model, tiny_data, capsys):
    # --warm: the runs are children of the sweep's own fork server, in its process group, killed with it
    cmd = [sys.executable, "-m", "tools.flows.sweep", *args(tiny_data, "--set", "max_steps_cap=6", "--warm")]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    r4, r8 = Run("tiny", "rank", "r4"), Run("tiny", "rank", "r8")
    deadline = time.time() + 300
    try:
        while not (r4.done_marker.exists() and last_checkpoint(r8.output_dir)):
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.time() < deadline, "timed out waiting for r8's first checkpoint"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its llamafactory-cli child
        proc.wait()
    assert not r8.is_finished() and run_json("r8")["status"] == "running"
    started = run_json("r4")["started"]

    assert sweep.main(args(tiny_data, "--set", "max_steps_cap=6", "--warm")) == 0  # resumed in a warm child
    out = capsys.readouterr().out
    assert "tiny/rank/r4" in out and "already finished" in out and "1 trained, 1 already finished" in out
    assert run_json("r4")["started"] == started
    rec = run_json("r8")
    assert rec["status"] == "finished" and rec["resumed_from"].startswith(str(r8.output_dir / "checkpoint-"))
    assert "resumed from checkpoint-" in out
    state = json.loads((r8.output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 6


@pytest.mark.slow
def test_a_run_killed_after_its_final_checkpoint_ends_at_the_same_step_and_weights(
    out_dir, tiny_model, tiny_data, capsys
):
    import torch
    from safetensors.torch import load_file

    argv = args(tiny_data, "--only", "r4", "--set", "max_steps_cap=6", "--warm")
    assert sweep.main(argv) == 0  # uninterrupted: 6 steps, a checkpoint after each (1.5 epochs of 4)
    run = Run("tiny", "rank", "r4")
    whole = load_file(run.output_dir / "adapter_model.safetensors")
    # what a kill after checkpoint-6 leaves: the checkpoints, run.json "running", no DONE or final files
    for p in run.output_dir.iterdir():
        if not p.name.startswith("checkpoint-") and p.name not in ("run.json", "train.log"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    (run.output_dir / "run.json").write_text(json.dumps({**run_json("r4"), "status": "running"}))
    capsys.readouterr()

    assert sweep.main(argv) == 0
    assert "resumed from checkpoint-5" in capsys.readouterr().out
    state = json.loads((run.output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and max(h["step"] for h in state["log_history"]) == 6
    assert run_json("r4")["resumed_from"].endswith("checkpoint-5")
    assert (run.output_dir / "checkpoint-6").is_dir() and not list(run.output_dir.glob(".checkpoint-*"))
    again = load_file(run.output_dir / "adapter_model.safetensors")
    assert again.keys() == whole.keys()
    assert all(torch.allclose(again[k], whole[k], atol=1e-6) for k in whole)


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # with the other Ray tests, on one worker: one Ray instance at a time
def test_two_run_sweep_through_ray_on_cpu(out_dir, tiny_model, tiny_data, capsys, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert sweep.main(args(tiny_data, "--runner", "ray")) == 0
    assert "2 trained" in capsys.readouterr().out
    for variant in ("r4", "r8"):
        assert Run("tiny", "rank", variant).is_finished()
        rec = run_json(variant)
        assert rec["status"] == "finished" and rec["peak_rss_mb"] > 100
        assert rec["pid"] != os.getpid()  # trained from a Ray worker, not this process


def test_evaluation_is_one_child_process_and_logged(out_dir, capsys):
    """Every run goes to one evaluation process; its failure is reported with its log, the report still runs."""
    runs = [Run.base("tiny"), Run("tiny", "rank", "r4")]
    # `python -m tools.train.configs --runs ...` is a usage error (exit 2): stands in for a failing evaluation
    rows = sweep.evaluate(runs, "demo_eval", "rank", evaluator=configs_main, reporter=configs_main)
    assert rows == [("rank", "evaluate", 2), ("rank", "report", 2)]
    out = capsys.readouterr().out
    assert "evaluate 2 run(s) in one process" in out and out.count("FAILED, see") == 2
    log = out_dir / "saves/tiny/lora/rank/sweep_eval.log"
    text = log.read_text()
    assert "--runs tiny/base/base tiny/rank/r4 --testset demo_eval" in text and "invalid choice" in text
    assert sweep.evaluate(runs, "demo_eval", "rank", evaluator=None, reporter=None) == []


def test_gpu_memory_is_read_per_process_from_nvidia_smi():
    from tools.core.runinfo import parse_compute_apps

    assert parse_compute_apps("1234, 5900\n99, 100\n1234, 12\n[N/A], x\n") == {1234: 5912, 99: 100}
    from tools.core.runinfo import visible_gpus

    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == {2, 3}
    assert visible_gpus({}) is None and visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-1a2b"}) is None


def test_finished_run_with_other_hyperparameters_is_retrained(out_dir, tiny_data):
    """A quick look with --set max_steps_cap=... must not pass for the study's real run later."""
    (job,) = jobs_for(tiny_data, only=("r4",))
    out = Path(job["output_dir"])
    out.mkdir(parents=True)
    (out / "adapter_model.safetensors").write_bytes(b"x")
    (out / "DONE").write_text("{}")
    fp = {"alpaca_top100": sha256_file(tiny_data / "alpaca_top100.json")}
    (out / "run.json").write_text(json.dumps({"data_fingerprint": fp, "config_sha256": "other"}))
    job["cli"] = ["/bin/true"]
    assert sweep.train_one(job)["note"].startswith("config changed: retrained; old run kept in .r4.stale-")


def test_two_sweeps_never_train_the_same_run_at_once(out_dir, tiny_data):
    import fcntl

    (job,) = jobs_for(tiny_data, only=("r4",))
    out = Path(job["output_dir"])
    out.parent.mkdir(parents=True)
    with open(out.parent / f".{out.name}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        res = sweep.train_one(job)
    assert res["status"] == "failed" and "another sweep" in res["note"]
    assert not out.exists()  # nothing touched


def test_a_study_that_names_a_heldout_set_measures_forgetting_on_it(out_dir, tiny_data, monkeypatch):
    """improve.yaml's `heldout:` and `zeroshot:` reach tools.eval.study as --heldout and --zeroshot, for the
    base and every run."""
    seen = {}

    def finished(jobs, report):
        return [{"run": j["run"], "variant": j["variant"], "status": "finished"} for j in jobs]

    monkeypatch.setattr(sweep, "run_local", finished)
    monkeypatch.setattr(sweep, "evaluate", lambda runs, *a, **k: seen.update(runs=runs, **k))
    sweep.sweep("improve", "tiny", dataset_dir=tiny_data, skip_preflight=True)
    assert seen["extra"] == [
        "--heldout",
        "alpaca_top100_mix_general_heldout",
        "--zeroshot",
        "python_mc",
        "arc_easy",
    ]
    assert seen["runs"][0] == Run.base("tiny") and len(seen["runs"]) > 1
    seen.clear()
    sweep.sweep("rank", "tiny", only=["r4"], dataset_dir=tiny_data, skip_preflight=True)
    assert seen["extra"] is None  # a study without one adds nothing


def test_a_heldout_that_names_nothing_is_refused(tmp_path, monkeypatch):
    from tools.train import configs

    (tmp_path / "bad.yaml").write_text(
        "question: q\nscientific: [lora_rank]\nheldout: ''\nvariants:\n  r4: {lora_rank: 4}\n"
    )
    monkeypatch.setattr(configs, "STUDIES", tmp_path)
    with pytest.raises(configs.ConfigError, match="`heldout` must name a registered dataset"):
        configs.load_study("bad")


@pytest.mark.parametrize("value", ["[]", "''", "python_mc", "[python_mc, '']", "['a b']"])
def test_zeroshot_tasks_that_are_not_a_list_of_names_are_refused(value, tmp_path, monkeypatch):
    from tools.train import configs

    (tmp_path / "bad.yaml").write_text(
        f"question: q\nscientific: [lora_rank]\nzeroshot: {value}\nvariants:\n  r4: {{lora_rank: 4}}\n"
    )
    monkeypatch.setattr(configs, "STUDIES", tmp_path)
    with pytest.raises(configs.ConfigError, match="`zeroshot` must list lm-eval task names"):
        configs.load_study("bad")
