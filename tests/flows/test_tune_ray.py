"""The search with --runner ray on a real Ray cluster built on this machine (the cluster of
tests/train/test_ray_cluster.py: a head without GPUs and two workers, each with one `gpu_slot` and the
memory of one tiny run's bill), real llamafactory-cli runs on the tiny model. Two trials train at once, one
per worker, placed by their bills, with the Optuna study in the same SQLite storage; the search resumed from
that storage then trains a bad trial, which the median pruner stops at its first epoch on its worker."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.flows import test_tune as tt
from tests.train import test_ray_cluster as rc
from tools.core.paths import DATA, ROOT, Run, report_dir
from tools.flows import trial as T
from tools.flows import tune, tune_ray

# the fixtures of the tests these extend: test_ray_cluster's cluster (one per module), test_tune's storage
bill_mb, cluster, on_cluster = rc.bill_mb, rc.cluster, rc.on_cluster
EPOCHS, storage, worker_ids = tt.EPOCHS, tt.storage, rc.worker_ids
# 16 rows, 2 a step: 8 steps an epoch. The pruner's stop reaches a worker's trial within a few tenths of a
# second (the search's poll, then the worker's); a tiny epoch of 2 steps can end sooner than that.
ROWS = 16
STEPS_PER_EPOCH = ROWS // 2

# One worker runs every Ray test of the suite (make test's -n): one cluster at a time on the machine.
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture()
def data(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    rows = [
        {"instruction": f"Write {i} in words.", "input": "", "output": f"It is {i}."} for i in range(ROWS)
    ]
    (d / "alpaca_top100.json").write_text(json.dumps(rows))
    shutil.copy(DATA / "demo_dev.json", d / "demo_dev.json")
    info = {n: {"file_name": f"{n}.json"} for n in ("alpaca_top100", "demo_dev")}
    (d / "dataset_info.json").write_text(json.dumps(info))
    return d


def ray_argv(folder, trials: int, pruner: str, *extra: str) -> list[str]:
    """test_tune's arguments with the preflight on (every trial billed), on Ray, on ROWS rows."""
    args = [a for a in tt.argv(folder, trials) if a != "--skip-preflight"]
    rows = ["--set", f"train_rows={ROWS}", "--set", f"max_samples={ROWS}"]
    return [*args, *rows, "--runner", "ray", "--pruner", pruner, *extra]


# ------------------------------------------------------------------------------------ fast
def test_make_tune_passes_the_runner_and_parallel_and_parallel_needs_ray(out_dir, capsys):
    cmd = ["make", "-n", "tune", "STUDY=lr", "MODEL=tiny", "TRIALS=3", "RUNNER=ray", "PARALLEL=2"]
    shown = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "-m tools.flows.tune --study lr --model tiny --trials 3 --runner ray --parallel 2" in shown
    local = subprocess.run(cmd[:-2], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "--runner local" in local and "--parallel" not in local
    assert tune.main(["--study", "lr", "--model", "tiny", "--parallel", "2"]) == 2
    assert "--parallel needs --runner ray" in capsys.readouterr().err
    assert not report_dir("lr").exists()


def test_one_trial_per_gpu_of_the_cluster_unless_told():
    gpus = SimpleNamespace(totals={"CPU": 3, "gpu_slot": 2}, gpu="gpu_slot")
    assert tune_ray.slots(gpus, 0) == 2 and tune_ray.slots(gpus, 3) == 3
    assert tune_ray.slots(SimpleNamespace(totals={"CPU": 8}, gpu="GPU"), 0) == 1


# ------------------------------------------------------------------------------------ a real cluster
@pytest.mark.slow
def test_trials_train_in_parallel_on_ray_and_the_pruner_stops_one_on_its_worker(
    on_cluster, out_dir, data, capsys
):
    import optuna

    _, workers = on_cluster
    # four times the batch: a base variant larger than any node, refused before anything is written
    assert tune.main(ray_argv(data, 1, "{name: none}", "--set", "per_device_train_batch_size=8")) == 2
    err = capsys.readouterr().err
    assert "asks for CPU 1, gpu_slot 1, memory" in err and "no node of the cluster can hold it" in err
    assert not report_dir("lr").exists() and not (out_dir / "saves").exists()

    report_dir("lr").mkdir(parents=True)
    st = optuna.create_study(
        study_name="lr-tiny", storage=f"sqlite:///{report_dir('lr') / 'tune.db'}", direction="minimize"
    )
    for lr in (1.0e-3, 5.0e-4, 5.0e-5):  # two good trials, then a learning rate far too low
        st.enqueue_trial({"learning_rate": lr})

    # two trials at once (one gpu_slot per worker), none pruned: both complete
    assert tune.main(ray_argv(data, 2, "{name: none}", "--parallel", "2")) == 0
    out = capsys.readouterr().out
    assert "ray: 3 node(s)" in out and "ray: up to 2 trial(s) at once" in out
    assert out.count("asks for CPU 1, gpu_slot 1, memory") == 2  # each placed by its own bill
    first = storage().trials
    assert [t.state.name for t in first] == ["COMPLETE", "COMPLETE", "WAITING"]  # the third not asked yet
    first = first[:2]
    recs = [json.loads(Run("tiny", "lr", t.user_attrs["run"]).run_json.read_text()) for t in first]
    nodes = {r["node"].split("/")[1] for r in recs}
    assert nodes == worker_ids(workers)  # one on each worker, never the head
    assert max(r["started"] for r in recs) < min(r["ended"] for r in recs)  # they trained at the same time
    assert all(sorted(t.intermediate_values) == list(range(1, EPOCHS + 1)) for t in first)

    # the same storage, one more trial: below the median of the two at epoch 1, stopped there on its worker
    assert tune.main(ray_argv(data, 3, "{name: median, n_startup_trials: 1}")) == 0
    out = capsys.readouterr().out
    trials = storage().trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    bad = trials[2]
    assert bad.params == {"learning_rate": 5.0e-5} and list(bad.intermediate_values) == [1]
    assert bad.user_attrs["epoch_reached"] == 1 and bad.user_attrs["node"].split("/")[1] in worker_ids(
        workers
    )
    assert "pruned at epoch 1" in out and "(had finished)" not in out  # its training child was stopped
    run = Run("tiny", "lr", bad.user_attrs["run"])
    rec = json.loads(run.run_json.read_text())
    assert rec["status"] == "pruned" and rec["pruned_at_epoch"] == 1 and not run.is_finished()
    assert [p.epoch for p in run.trained.epochs()] == [1]  # no later epoch kept
    assert rec["steps_run"] + rec["steps_saved"] == rec["steps_planned"] == STEPS_PER_EPOCH * EPOCHS
    assert not T.stop_file(run.output_dir).exists()
    summary = json.loads((report_dir("lr") / "tune.json").read_text())
    assert summary["counts"] == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 0}
    assert summary["best"]["run"] in {f"tiny/lr/{t.user_attrs['run']}" for t in first}
