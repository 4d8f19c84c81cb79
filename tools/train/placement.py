"""Where each run of a Ray sweep may train: what it asks for (from its preflight bill) and which nodes fit.

A run asks for one CPU, one GPU (or the custom resource named by $SMALLDATA_RAY_GPU standing in for one,
e.g. `gpu_slot` on a CPU-only test cluster) and the memory its bill says: the bill's `total_mb` as Ray's
`memory` resource when the bill is for a CPU run (host RAM), or as the custom resource `gpu_memory_mb`
when the bill is for a GPU and the cluster's nodes declare it (`ray start --resources
'{"gpu_memory_mb": 81920}'`). Ray then packs the runs onto the nodes whose free resources fit.

A run that no node could ever hold is refused before anything trains (`PlacementError`, exit 2),
naming the run, its bill and the largest node. Pure functions over plain dicts: tested without Ray.
"""

from __future__ import annotations

import os

from tools.core.profiles import ConfigError

MB = 1024 * 1024
GPU_ENV = "SMALLDATA_RAY_GPU"  # the resource a run asks one of; default Ray's own "GPU"
GPU_MEMORY = "gpu_memory_mb"  # a custom resource a GPU node may declare: its GPU memory in MB


class PlacementError(ConfigError):
    """No node of the cluster can hold a run, or the cluster's outputs are not shared: refused (exit 2)."""


def gpu_resource() -> str:
    return os.environ.get(GPU_ENV, "").strip() or "GPU"


def request(job: dict, totals: dict, gpu: str | None = None) -> dict:
    """The resources one run asks for, in Ray's units (memory in bytes), given the cluster's totals."""
    gpu = gpu or gpu_resource()
    want: dict[str, float] = {"CPU": 1}
    if totals.get(gpu):  # a GPU (or its stand-in) where the cluster has one; CPU-only clusters train on CPUs
        want[gpu] = 1
    bill = job.get("memory_estimate") or {}
    mb = bill.get("total_mb")
    if mb:
        if bill.get("device", "cpu") == "cpu":
            want["memory"] = int(mb * MB)
        elif totals.get(GPU_MEMORY):
            want[GPU_MEMORY] = float(mb)
    return want


def ray_options(want: dict) -> dict:
    """`request` as keyword arguments of a Ray task's .options()."""
    opts: dict = {"num_cpus": want.get("CPU", 1)}
    custom = {k: v for k, v in want.items() if k not in ("CPU", "GPU", "memory")}
    if "GPU" in want:
        opts["num_gpus"] = want["GPU"]
    if "memory" in want:
        opts["memory"] = want["memory"]
    if custom:
        opts["resources"] = custom
    return opts


def readable(res: dict) -> str:
    """Resources for people: memory in MB, counts as integers where they are."""
    out = []
    for k in sorted(res):
        v = res[k]
        if k in ("memory", "object_store_memory"):
            out.append(f"{k} {v / MB:.0f} MB")
        elif k == "CPU" or not k.startswith("node:"):
            out.append(f"{k} {int(v) if float(v).is_integer() else v}")
    return ", ".join(x for x in out if not x.startswith("node:") and "accelerator_type" not in x)


def fits(want: dict, resources: dict) -> bool:
    return all(resources.get(k, 0) >= v for k, v in want.items())


def node_label(node: dict) -> str:
    return f"{node.get('ip', '?')}/{str(node.get('id', ''))[:8]}"


def largest(nodes: list[dict], want: dict) -> dict:
    """The node closest to holding `want`: most memory among those with its GPU kind, else overall."""
    key = "memory" if "memory" in want else GPU_MEMORY if GPU_MEMORY in want else "CPU"
    kinds = [k for k in want if k not in ("CPU", "memory", GPU_MEMORY)]
    pool = [n for n in nodes if all(n["resources"].get(k, 0) for k in kinds)] or nodes
    return max(pool, key=lambda n: (n["resources"].get(key, 0), n["resources"].get("CPU", 0)))


def check_fit(jobs: list[dict], nodes: list[dict], totals: dict, gpu: str | None = None) -> dict[str, dict]:
    """Every run's request; raises PlacementError naming each run that no node can hold."""
    wants, bad = {}, []
    for job in jobs:
        want = request(job, totals, gpu)
        wants[job["run"]] = want
        if not any(fits(want, n["resources"]) for n in nodes):
            big = largest(nodes, want) if nodes else {"resources": {}}
            mb = (job.get("memory_estimate") or {}).get("total_mb")
            bill = f"preflight bill {mb:.0f} MB" if mb else "no preflight bill"
            bad.append(
                f"run {job['run']} asks for {readable(want)} ({bill}); the largest node, "
                f"{node_label(big)}, has {readable(big['resources'])}: no node of the cluster can hold it"
            )
    if bad:
        raise PlacementError("; ".join(bad) + " (nothing was trained)")
    return wants
