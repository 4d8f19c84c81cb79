"""The sweep on a real multi-node Ray cluster built on this machine (ray.cluster_utils.Cluster): a head
without GPUs and two workers each declaring one `gpu_slot` (standing in for a GPU) and the memory of one
tiny run's preflight bill. Runs land on the workers; a run larger than any node is refused before anything
trains; a worker lost in the middle of a run is survived by resuming that run on the other worker."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.train import test_sweep as ts
from tests.train.test_sweep import args, run_json
from tools.core.paths import Run
from tools.flows import sweep
from tools.train import last_checkpoint
from tools.train.placement import MB, PlacementError, check_fit, request

ray = pytest.importorskip("ray")

# One worker runs every Ray test of the suite (make test's -n): one cluster at a time on the machine.
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture()
def tiny_data(tmp_path):
    return ts.tiny_data.__wrapped__(tmp_path)


# ------------------------------------------------------------------------------------ fast
NODES = [
    {"id": "aaaa1111", "ip": "10.0.0.1", "resources": {"CPU": 4, "memory": 8 * 1024 * MB}},
    {"id": "bbbb2222", "ip": "10.0.0.2", "resources": {"CPU": 4, "gpu_slot": 1, "memory": 4 * 1024 * MB}},
]
TOTALS = {"CPU": 8, "gpu_slot": 1, "memory": 12 * 1024 * MB}


def job(mb: float | None, name: str = "tiny/rank/r4", device: str = "cpu") -> dict:
    return {"run": name, "memory_estimate": {"total_mb": mb, "device": device} if mb else None}


def test_a_run_asks_for_its_bill_and_a_gpu_slot():
    want = request(job(3000), TOTALS, "gpu_slot")
    assert want == {"CPU": 1, "gpu_slot": 1, "memory": 3000 * MB}
    assert request(job(None), {"CPU": 2}, "GPU") == {"CPU": 1}  # no GPU in the cluster, no bill
    assert request(job(9000, device="cuda"), {"GPU": 1, "gpu_memory_mb": 8e4}, "GPU") == {
        "CPU": 1,
        "GPU": 1,
        "gpu_memory_mb": 9000.0,
    }
    assert check_fit([job(3000)], NODES, TOTALS, "gpu_slot")["tiny/rank/r4"]["gpu_slot"] == 1


def test_a_run_no_node_can_hold_is_named_with_its_bill_and_the_largest_node():
    with pytest.raises(PlacementError) as e:
        check_fit([job(3000, "tiny/rank/r4"), job(6000, "tiny/rank/r8")], NODES, TOTALS, "gpu_slot")
    msg = str(e.value)
    assert "run tiny/rank/r8" in msg and "preflight bill 6000 MB" in msg and "r4" not in msg
    assert "the largest node, 10.0.0.2/bbbb2222, has" in msg and "memory 4096 MB" in msg


# ------------------------------------------------------------------------------------ a real cluster
@pytest.fixture(scope="module")
def bill_mb(tiny_model) -> float:
    from tools.flows.preflight import check
    from tools.train import render_study

    rep = check(render_study("rank", "tiny", {"max_steps_cap": 2}, ["r4"]), "tiny")
    return rep.bills["r4"]["total_mb"]


@pytest.fixture(scope="module")
def cluster(bill_mb):
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    memory = int((bill_mb + 200) * MB)  # one tiny run fits; a run with 4x the batch does not
    workers = [c.add_node(num_cpus=1, resources={"gpu_slot": 1}, memory=memory) for _ in range(2)]
    c.wait_for_nodes()
    yield c, workers
    c.shutdown()


@pytest.fixture()
def on_cluster(cluster, out_dir, monkeypatch):
    c, workers = cluster
    monkeypatch.setenv("RAY_ADDRESS", c.address)
    monkeypatch.setenv("SMALLDATA_RAY_GPU", "gpu_slot")
    monkeypatch.setenv("SMALLDATA_SHARED_SAVES", str(out_dir))
    monkeypatch.delenv("SMALLDATA_RAY_RETRIES", raising=False)
    return c, workers


def worker_ids(workers) -> set[str]:
    return {w.node_id[:8] for w in workers}


@pytest.mark.slow
def test_runs_land_on_the_nodes_that_fit_and_an_oversized_run_is_refused(
    on_cluster, out_dir, tiny_data, capsys
):
    _, workers = on_cluster
    extra = ["--runner", "ray", "--set", "max_steps_cap=2", "--shared-saves", str(out_dir)]
    assert sweep.main(args(tiny_data, *extra)) == 0
    out = capsys.readouterr().out
    assert "ray: 3 node(s)" in out and "shared outputs checked on every node" in out
    assert "asks for CPU 1, gpu_slot 1, memory" in out and "on node " in out
    nodes = {run_json(v)["node"].split("/")[1] for v in ("r4", "r8")}
    assert nodes <= worker_ids(workers)  # never the head: it has no gpu_slot
    for v in ("r4", "r8"):
        assert run_json(v)["attempts"] == 1 and Run("tiny", "rank", v).is_finished()

    # four times the batch: a bill larger than any node, refused before anything trains
    big = [
        "--runner",
        "ray",
        "--only",
        "r16",
        "--set",
        "max_steps_cap=2",
        "--set",
        "per_device_train_batch_size=8",
    ]
    assert sweep.main(args(tiny_data, *big)) == 2
    err = capsys.readouterr().err
    assert "run tiny/rank/r16 asks for" in err and "preflight bill" in err and "the largest node" in err
    assert not Run("tiny", "rank", "r16").output_dir.exists()


@pytest.mark.slow
def test_a_multi_node_sweep_without_shared_outputs_is_refused(on_cluster, tiny_data, monkeypatch, capsys):
    monkeypatch.delenv("SMALLDATA_SHARED_SAVES")
    assert sweep.main(args(tiny_data, "--runner", "ray", "--only", "r4")) == 2
    assert "needs shared outputs: set SMALLDATA_SHARED_SAVES" in capsys.readouterr().err
    assert not Run("tiny", "rank", "r4").output_dir.exists()


@pytest.mark.slow
def test_a_lost_node_mid_run_resumes_the_run_on_another_node(on_cluster, tiny_data, capsys):
    c, workers = on_cluster
    run = Run("tiny", "rank", "r4")
    box: dict = {}
    argv = args(tiny_data, "--runner", "ray", "--only", "r4", "--set", "max_steps_cap=12")
    t = threading.Thread(target=lambda: box.update(rc=sweep.main(argv)), daemon=True)
    t.start()
    deadline = time.time() + 240
    while not (last_checkpoint(run.output_dir) and run.run_json.exists()):
        assert t.is_alive() and time.time() < deadline, "no checkpoint to resume from"
        time.sleep(0.2)
    first = run_json("r4")["node"]
    lost = next(w for w in workers if w.node_id.startswith(first.split("/")[1]))
    step = int(last_checkpoint(run.output_dir).name.split("-")[1])
    c.remove_node(lost, allow_graceful=False)  # its raylet, its worker and (watchdog) the training child
    t.join(timeout=240)
    assert not t.is_alive() and box["rc"] == 0
    rec = run_json("r4")
    assert rec["status"] == "finished" and rec["attempts"] == 2
    assert rec["nodes"][0] == first and rec["node"] == rec["nodes"][1] != first
    assert rec["resumed_from"] and int(rec["resumed_from"].rsplit("-", 1)[1]) >= step
    state = json.loads((run.output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 12
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert len(steps) == len(set(steps))  # no step trained twice
    log = run.log.read_text()
    assert log.count("$ ") == 2 and "after 2 attempts" in capsys.readouterr().out
    assert (run.output_dir / "DONE").exists()
