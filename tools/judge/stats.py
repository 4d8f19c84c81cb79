"""Means with bootstrap 95 % intervals, and the paired difference of two runs.

On 150 prompts a judge mean moves by a few tenths from resampling alone, so every mean is
reported with its percentile-bootstrap interval, and two runs are compared on the prompts both
answered (a paired bootstrap of the per-prompt differences), never by their means alone.
"""

from __future__ import annotations

import numpy as np

N_BOOT = 2000
SEED = 0


def bootstrap_ci(values, n_boot: int = N_BOOT, seed: int = SEED, level: float = 0.95) -> list[float] | None:
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        return None
    if x.size == 1:
        return [float(x[0]), float(x[0])]
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    a = (1 - level) / 2
    return [float(np.quantile(means, a)), float(np.quantile(means, 1 - a))]


def summary(values) -> dict:
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    return {
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "ci95": bootstrap_ci(x),
        "n": int(x.size),
    }


def paired_difference(a: dict[str, float], b: dict[str, float]) -> dict:
    """b - a on the ids scored in both, with a paired bootstrap interval; `significant` when 0 is outside it."""
    ids = sorted(set(a) & set(b))
    d = [b[i] - a[i] for i in ids]
    s = summary(d)
    ci = s["ci95"]
    return {
        "n_paired": len(ids),
        "only_in_a": len(set(a) - set(b)),
        "only_in_b": len(set(b) - set(a)),
        "mean_a": float(np.mean([a[i] for i in ids])) if ids else None,
        "mean_b": float(np.mean([b[i] for i in ids])) if ids else None,
        "diff": s["mean"],
        "ci95": ci,
        "significant": bool(ci is not None and (ci[0] > 0 or ci[1] < 0)),
    }
