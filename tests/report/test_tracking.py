"""TRACK=mlflow against the real MLflow tracking server (sqlite backend, served artifacts), read back with
MLflow's client; an unreachable server or a missing tracker package stops the sweep before training."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import psutil
import pytest

from tests.train import test_sweep as ts
from tests.train.test_sweep import args, run_json
from tools.core.paths import Run, report_dir, venv_bin
from tools.flows import sweep
from tools.flows.tracking import Tracker, TrackingError, serve_env


@pytest.fixture()
def tiny_data(tmp_path):
    return ts.tiny_data.__wrapped__(tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ fast
def test_an_unreachable_tracking_server_stops_the_sweep_before_training(
    out_dir, tiny_data, monkeypatch, capsys
):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    assert sweep.main(args(tiny_data, "--track", "mlflow", "--skip-preflight")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be reached" in err[0] and "make mlflow" in err[0]
    assert "Traceback" not in err[0] and not (out_dir / "saves").exists()


def test_a_tracker_that_is_not_installed_or_unknown_is_refused(out_dir):
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(TrackingError, match="TRACK=wandb needs the wandb package"):
            Tracker("wandb", "rank", "tiny")
    with pytest.raises(TrackingError, match="one of tensorboard, mlflow, wandb, swanlab"):
        Tracker("comet", "rank", "tiny")


def test_the_embedded_store_is_sqlite_under_the_output_root(out_dir, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    t = Tracker("mlflow", "rank", "tiny")
    assert (
        t.uri == f"sqlite:///{out_dir / 'mlruns' / 'mlflow.db'}" and (out_dir / "mlruns/mlflow.db").exists()
    )
    exp = t.client.get_experiment_by_name("rank")
    assert exp.artifact_location == (out_dir / "mlruns" / "artifacts").as_uri()


def test_the_served_store_runs_without_mlflows_job_runner_unless_asked(out_dir, capsys, monkeypatch):
    from tools.flows import tracking

    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    assert tracking.main(["--port", "5001", "--dry-run"]) == 0
    shown = capsys.readouterr().out.splitlines()[0]
    assert shown.startswith("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false ") and shown.endswith("--port 5001")
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")  # the caller's choice is kept
    assert serve_env()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"
    assert not (out_dir / "mlruns").exists()  # a dry run starts and makes nothing


# ------------------------------------------------------------------------------------ the real server
@pytest.fixture()
def mlflow_server(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    port, store = free_port(), tmp_path / "store"
    store.mkdir()
    cmd = [*venv_bin("mlflow"), "server", "--backend-store-uri"]
    cmd += [f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination", str(store / "artifacts")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(tmp_path / "mlflow-server.log", "w")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, cwd=store, start_new_session=True, env=serve_env()
    )
    uri = f"http://127.0.0.1:{port}"
    import requests

    deadline = time.time() + 180
    while True:
        assert proc.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-2000:]
        assert time.time() < deadline, "mlflow server did not start"
        try:
            if requests.get(uri + "/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.5)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    yield uri, proc
    if proc.poll() is None:
        os.killpg(proc.pid, 9)
        proc.wait()
    log.close()


def _cmdline(p) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:  # ended while the tree was listed
        return []


@pytest.mark.slow
def test_a_two_run_sweep_is_read_back_from_the_mlflow_server(
    out_dir, tiny_model, tiny_data, mlflow_server, capsys
):
    from mlflow.tracking import MlflowClient

    uri, server = mlflow_server
    argv = args(tiny_data, "--track", "mlflow", "--set", "max_steps_cap=2", "--skip-preflight", "--warm")
    assert sweep.main(argv) == 0
    assert "2 run(s) and the decision logged to MLflow" in capsys.readouterr().out
    # started as `make mlflow` starts it: without MLflow's job runner (tools.flows.tracking.SERVER_ENV)
    tree = psutil.Process(server.pid).children(recursive=True)
    assert tree and not [p.pid for p in tree if "huey" in " ".join(_cmdline(p))]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("rank")
    runs = {
        r.data.tags.get("smalldata.variant") or "decision": r for r in client.search_runs([exp.experiment_id])
    }
    assert set(runs) == {"r4", "r8", "decision"}
    for v in ("r4", "r8"):
        r, rec = runs[v], run_json(v)
        assert rec["tracking"]["mlflow_run_id"] == r.info.run_id and r.info.status == "FINISHED"
        assert r.data.tags["smalldata.study"] == "rank" and r.data.tags["smalldata.run"] == f"tiny/rank/{v}"
        assert r.data.tags["smalldata.data_sha256"] and r.data.tags["smalldata.status"] == "finished"
        assert rec["resolved_config"]["report_to"] == ["tensorboard", "mlflow"]
        assert (
            "train_loss" in r.data.metrics
        )  # logged by LLaMA-Factory's trainer (report_to), in the same run
        assert "learning_rate" in r.data.params  # its arguments too

    # scores and a decision as the evaluation and tools.report.choose leave them; a re-run trains nothing
    r4 = Run("tiny", "rank", "r4")
    for testset, mean, ci in (("demo_dev", 0.6, [0.5, 0.7]), ("demo_eval", 0.55, [0.4, 0.7])):
        d = r4.output_dir / "eval" / testset / "greedy"
        d.mkdir(parents=True)
        (d / "scores.json").write_text(json.dumps({"mean": mean, "ci95": ci, "n": 10}))
    best = {
        "run": "tiny/rank/r4",
        "trained": "tiny/rank/r4",
        "epoch": None,
        "decoding": "greedy",
        "score": 0.6,
        "ci95": [0.5, 0.7],
    }
    choice = {"dev": "demo_dev", "metric": "judge", "best": best, "candidates": [best], "note": "r4 by judge"}
    report_dir("rank").mkdir(parents=True, exist_ok=True)
    (report_dir("rank") / "choice.json").write_text(json.dumps(choice))
    (report_dir("rank") / "report.md").write_text("# rank\n")
    assert sweep.main(argv) == 0
    assert "0 trained, 2 already finished" in capsys.readouterr().out
    runs = {
        r.data.tags.get("smalldata.variant"): r
        for r in client.search_runs([exp.experiment_id])  # a tag filter leaves out runs without the tag
        if "smalldata.variant" in r.data.tags
    }
    m = client.get_run(runs["r4"].info.run_id).data.metrics
    assert m["judge.dev.demo_dev.greedy"] == 0.6 and m["judge.test.demo_eval.greedy.ci95_lo"] == 0.4
    assert m["judge.dev.r4.greedy.ci95_hi"] == 0.7
    assert client.get_run(runs["r4"].info.run_id).data.tags["smalldata.chosen"] == "true"
    decisions = client.search_runs(
        [exp.experiment_id], "tags.`smalldata.kind` = 'decision'", order_by=["attributes.start_time DESC"]
    )
    assert decisions[0].data.tags["smalldata.chosen"] == "tiny/rank/r4"
    names = {a.path for a in client.list_artifacts(decisions[0].info.run_id, "report")}
    assert {"report/choice.json", "report/report.md"} <= names

    # the server gone after training: one warning line, the runs' own files untouched
    os.killpg(server.pid, 9)
    server.wait()
    t = Tracker.__new__(Tracker)
    t.__dict__.update(
        kind="mlflow", study="rank", model="tiny", uri=uri, client=client, experiment=exp.experiment_id
    )
    t.run_ids = {"tiny/rank/r4": runs["r4"].info.run_id}
    before = {p.name: p.stat().st_mtime for p in r4.output_dir.iterdir()}
    t.finish([{"run": "tiny/rank/r4", "status": "done"}])
    assert "MLflow logging failed" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime for p in r4.output_dir.iterdir()} == before and r4.is_finished()
