"""`--runner ray` for tools.flows.sweep: each run is a Ray task placed by the resources its preflight bill asks.

Each run asks for one CPU, one GPU (or the custom resource $SMALLDATA_RAY_GPU stands in for one) and the
memory of its bill (tools.train.placement); Ray packs the runs onto the nodes that fit, and a run that no
node can hold is refused before anything trains (exit 2). A curriculum stage's task takes the task of the
stage it continues as an argument, so Ray starts it only after that one ended. Without RAY_ADDRESS a local
Ray instance is started (and stopped at the end); with RAY_ADDRESS (`auto`, `ray://head:10001`, ...) the
tasks go to that cluster.

Many nodes: every node must see this repository, its .venv and the output folders at the same paths. A
sweep on a cluster of more than one node refuses to start unless $SMALLDATA_SHARED_SAVES (or the sweep's
--shared-saves) names the shared folder holding the outputs' saves/, and every node reads back a marker
file the driver wrote there.

A lost node: a task whose worker or node dies is retried on another node (Ray's max_retries, $SMALLDATA_RAY_
RETRIES, default 3; a failed training is a result, never an exception, so only lost workers are retried).
The retry goes through train_one like any run: it resumes from the last complete checkpoint (before its
final step: tools.train.resume_point). The training child of a lost worker is killed with it (a watchdog
kills the worker's process group), so a run never trains twice at once. run.json records `node` (where it
finished), `nodes` and `attempts`.

Usage (through the sweep):
    python -m tools.flows.sweep --study rank --model llama2_7b --runner ray
    RAY_ADDRESS=auto SMALLDATA_SHARED_SAVES=/mnt/shared python -m tools.flows.sweep --study rank --runner ray
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.core.paths import ROOT, out_root
from tools.train.placement import PlacementError, check_fit, gpu_resource, node_label, ray_options, readable

SHARED_ENV = "SMALLDATA_SHARED_SAVES"
RETRIES_ENV = "SMALLDATA_RAY_RETRIES"
# Kills the process group of a Ray worker once that worker is gone (its node lost): the training child
# it started would otherwise go on writing the run's folder while the retry resumes it elsewhere.
WATCHDOG = """
import os, signal, sys, time
pid = int(sys.argv[1])
while True:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:  # a zombie nobody reaps (no init in a container) is gone too
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
    except (ProcessLookupError, FileNotFoundError):
        break
    time.sleep(0.3)
try:
    os.killpg(pid, signal.SIGKILL)
except (ProcessLookupError, PermissionError):
    pass
"""


def _attempts_file(job: dict) -> Path:
    out = Path(job["output_dir"])
    return out.parent / f".{out.name}.attempts.jsonl"  # beside the run: a fresh restart keeps it


def _train(job: dict, _parent_result: dict | None = None, train: Callable | None = None) -> dict:
    """Runs in a Ray worker; `_parent_result` is only there to make Ray wait for the parent stage. `train`
    (default train_one) trains the job: a search passes one that also watches for its pruner's stop."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import ray

    from tools.train.trainer import train_one

    ctx = ray.get_runtime_context()
    node = {"id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address()}
    here = node_label(node)
    record = _attempts_file(job)
    record.parent.mkdir(parents=True, exist_ok=True)
    with open(record, "a", encoding="utf-8") as f:
        f.write(json.dumps({"sweep": job.get("sweep_id"), "node": here, "pid": os.getpid()}) + "\n")
    mine = [json.loads(x) for x in record.read_text().splitlines() if x.strip()]
    nodes = [a["node"] for a in mine if a.get("sweep") == job.get("sweep_id")]
    job = {**job, "node": here, "nodes": nodes, "attempts": len(nodes)}
    try:
        os.setpgid(0, 0)  # this worker leads its own group: the watchdog kills it and its children at once
    except OSError:
        pass
    dog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid())], start_new_session=True)
    try:
        res = (train or train_one)(job)
    finally:
        dog.kill()
        dog.wait()
    res.update(node=here, nodes=nodes, attempts=len(nodes))
    return res


def init_ray():
    """Join RAY_ADDRESS, or start a local instance; returns (ray, whether we started it)."""
    try:
        import ray
    except ImportError as e:
        raise SystemExit("--runner ray needs Ray: `make setup-extras` (pip install 'ray[tune]')") from e
    if ray.is_initialized():
        return ray, False
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    kwargs = {"runtime_env": {"env_vars": env}, "log_to_driver": False}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
    else:
        ray.init(include_dashboard=False, num_cpus=os.cpu_count() or 1, **kwargs)
    return ray, True


def alive_nodes(ray) -> list[dict]:
    return [
        {"id": n["NodeID"], "ip": n.get("NodeManagerAddress", "?"), "resources": n.get("Resources", {})}
        for n in ray.nodes()
        if n.get("Alive")
    ]


def _sees(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def check_shared(ray, nodes: list[dict], shared: str | None = None) -> str | None:
    """On more than one node: the outputs' saves/ must lie in the named shared folder, and every node must
    read the marker the driver wrote there. Returns the checked folder (None on one node)."""
    if len(nodes) <= 1:
        return None
    saves = (out_root() / "saves").resolve()
    shared = shared or os.environ.get(SHARED_ENV)
    if not shared:
        raise PlacementError(
            f"a Ray cluster of {len(nodes)} nodes needs shared outputs: set {SHARED_ENV} (or --shared-saves) "
            f"to the shared folder holding {saves}, mounted at the same path on every node"
        )
    root = Path(shared).resolve()
    if not (saves == root or saves.is_relative_to(root)):
        raise PlacementError(f"{SHARED_ENV}={shared} does not hold the outputs' {saves} (SMALLDATA_OUT)")
    saves.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = saves / f".shared-check-{token[:12]}"
    marker.write_text(token)
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = ray.remote(num_cpus=0, max_retries=0)(_sees)
        refs = [
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["id"], soft=False)).remote(
                str(marker), token
            )
            for n in nodes
        ]
        seen = ray.get(refs, timeout=120)
    finally:
        marker.unlink(missing_ok=True)
    blind = [node_label(n) for n, ok in zip(nodes, seen, strict=True) if not ok]
    if blind:
        raise PlacementError(
            f"node(s) {', '.join(blind)} do not see {marker} written by this driver: "
            f"{SHARED_ENV}={shared} is not shared storage mounted at the same path on every node"
        )
    return str(root)


@dataclass
class Cluster:
    """A joined (or started) Ray cluster whose nodes were checked: runs are placed on it by their bill."""

    ray: Any
    started: bool
    nodes: list[dict]
    totals: dict
    gpu: str
    task: Any
    sweep_id: str

    def fit(self, jobs: list[dict]) -> dict[str, dict]:
        """Each run's request; PlacementError for a run that no node can hold."""
        return check_fit(jobs, self.nodes, self.totals, self.gpu)

    def submit(self, job: dict, want: dict, parent=None, train: Callable | None = None):
        print(f"ray: {job['run']} asks for {readable(want)}", flush=True)
        return self.task.options(**ray_options(want)).remote(
            {**job, "sweep_id": self.sweep_id}, parent, train
        )

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def connect(jobs: list[dict], shared: str | None = None) -> Cluster:
    """Join or start Ray; refuse (PlacementError) a run no node can hold or outputs the nodes do not share,
    before anything trains."""
    ray, started = init_ray()
    try:
        nodes = alive_nodes(ray)
        c = Cluster(ray, started, nodes, ray.cluster_resources(), gpu_resource(), None, "")
        c.fit(jobs)
        where = check_shared(ray, nodes, shared)
    except BaseException:
        if started:
            ray.shutdown()
        raise
    print(
        f"ray: {len(nodes)} node(s): "
        + "; ".join(f"{node_label(n)} {readable(n['resources'])}" for n in nodes)
    )
    if where:
        print(f"ray: shared outputs checked on every node ({where})")
    retries = int(os.environ.get(RETRIES_ENV, "3"))
    c.task = ray.remote(max_retries=retries, retry_exceptions=False)(_train)
    c.sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    return c


def where_note(res: dict) -> str:
    """The result's note with the node it trained on (and the nodes it was retried on)."""
    tries = (
        f", after {res['attempts']} attempts on {' -> '.join(res['nodes'])}"
        if res.get("attempts", 1) > 1
        else ""
    )
    return "; ".join(x for x in (res.get("note"), f"on node {res.get('node')}{tries}") if x)


def run_jobs(jobs: list[dict], report: Callable[[dict], None], shared: str | None = None) -> list[dict]:
    c = connect(jobs, shared)
    try:
        wants = c.fit(jobs)
        refs: dict[str, object] = {}
        for job in jobs:  # parents come first in the rendered order
            parent = refs.get(job["parent"]) if job.get("parent") else None
            refs[job["variant"]] = c.submit(job, wants[job["run"]], parent)
        pending, results = list(refs.values()), []
        while pending:
            ready, pending = c.ray.wait(pending, num_returns=1)
            res = c.ray.get(ready[0])
            res["note"] = where_note(res)
            results.append(res)
            report(res)
        return results
    finally:
        c.close()
