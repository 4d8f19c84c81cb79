"""`--runner ray` for tools.flows.sweep: each run is a Ray task holding one GPU (one CPU where there is none).

N GPUs train N runs at once. A curriculum stage's task takes the task of the stage it continues as an
argument, so Ray starts it only after that one ended. Without RAY_ADDRESS a local Ray instance is
started (and stopped at the end); with RAY_ADDRESS (`auto`, `ray://head:10001`, ...) the tasks go to
that cluster, whose nodes must see this repository, its .venv and the output folders at the same paths
(a shared filesystem): a task runs the same `llamafactory-cli train` there and writes the same folders.
Ray is an optional extra: `make setup-extras`.

Usage (through the sweep):
    python -m tools.flows.sweep --study rank --model llama2_7b --runner ray
    RAY_ADDRESS=auto python -m tools.flows.sweep --study rank --model llama2_7b --runner ray
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from tools.core.paths import ROOT


def _train(job: dict, _parent_result: dict | None = None) -> dict:
    """Runs in a Ray worker; `_parent_result` is only there to make Ray wait for the parent stage."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tools.train.trainer import train_one

    return train_one(job)


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


def run_jobs(jobs: list[dict], report: Callable[[dict], None]) -> list[dict]:
    ray, started = init_ray()
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        # One GPU per run where the cluster has GPUs (CUDA_VISIBLE_DEVICES is set per task by Ray).
        opts = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
        task = ray.remote(max_retries=0)(_train).options(**opts)
        refs: dict[str, object] = {}
        for job in jobs:  # parents come first in the rendered order
            refs[job["variant"]] = task.remote(job, refs.get(job["parent"]) if job.get("parent") else None)
        pending, results = list(refs.values()), []
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            res = ray.get(ready[0])
            results.append(res)
            report(res)
        return results
    finally:
        if started:
            ray.shutdown()
