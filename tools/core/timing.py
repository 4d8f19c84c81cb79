"""Speed measured as speed: a pinned thread count, a warm-up, several repeats, the median and the spread.

On a shared CPU a single timing is mostly the neighbours' load (the recovery report once gave 0.57, 0.65
and 17.14 tokens/s for three stages, two of them the same architecture). So every speed figure here is
`repeats` timings of the same work after `warmup` untimed calls, with PyTorch's intra-op threads pinned
(`threads`; OpenMP workers spin-waiting for busy cores slow a CPU run many times over), reported as the
median and the spread: the interquartile range (the middle half of the timings; the whole range below 4
repeats). A figure whose spread is more than NOISY_SHARE of its median is marked noisy: compare it with
another only when neither is.

    t = measure(lambda: model.generate(...), repeats=5, threads=1)
    r = rate(tokens, t)           # {"per_s": median work/s, "spread": ..., "noisy": bool, ...}
    cell(r["per_s"], r["spread"], n=r["repeats"])  # "13.1 ± 0.4", "13.1 ± 3.2 (noisy)", or not estimable
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable

NOISY_SHARE = 0.10  # a spread above 10% of the median marks the figure noisy
REPEATS = 5


def spread(values: list[float]) -> float:
    """The interquartile range of `values` (their whole range when there are fewer than 4)."""
    if len(values) < 2:
        return 0.0
    if len(values) < 4:
        return max(values) - min(values)
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


def noisy(median: float | None, spread_: float | None, share: float = NOISY_SHARE) -> bool:
    """Whether a figure's spread exceeds `share` of its median."""
    if not median or spread_ is None:
        return False
    return spread_ > share * abs(median)


NOT_ESTIMABLE = "not estimable (one timing, no spread)"


def cell(
    median: float | None,
    spread_: float | None,
    digits: int = 1,
    share: float = NOISY_SHARE,
    n: int | None = None,
) -> str:
    """A table cell: `median ± spread`, with `(noisy)` when the spread exceeds `share` of the median.
    Without a spread (none recorded, or `n`, the timings it rests on, below 2) the figure is one timing,
    mostly the machine's load: NOT_ESTIMABLE, never a bare number."""
    if median is None:
        return "-"
    if spread_ is None or (n is not None and n < 2):
        return NOT_ESTIMABLE
    mark = " (noisy)" if noisy(median, spread_, share) else ""
    return f"{median:.{digits}f} ± {spread_:.{digits}f}{mark}"


@contextlib.contextmanager
def pinned_threads(threads: int | None):
    """PyTorch's intra-op thread count set to `threads` inside the block (unchanged when None)."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure(
    fn: Callable[[], object],
    repeats: int = REPEATS,
    warmup: int = 1,
    threads: int | None = 1,
    sync: Callable[[], None] | None = None,
) -> dict:
    """Time `fn` `repeats` times after `warmup` untimed calls, threads pinned; seconds, median and spread."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    sync = sync or (lambda: None)
    samples = []
    with pinned_threads(threads):
        for _ in range(warmup):
            fn()
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            samples.append(time.perf_counter() - t0)
    med = statistics.median(samples)
    return {
        "median_s": med,
        "spread_s": spread(samples),
        "samples_s": [round(s, 6) for s in samples],
        "repeats": repeats,
        "warmup": warmup,
        "threads": threads,
        "noisy": noisy(med, spread(samples)),
    }


def rate(work: float, timing: dict) -> dict:
    """`work` units per second from a `measure` result: the median rate and the spread of the rates."""
    rates = [work / s for s in timing["samples_s"] if s > 0]
    med = statistics.median(rates) if rates else 0.0
    sp = spread(rates)
    return {
        "per_s": med,
        "spread": sp,
        "noisy": noisy(med, sp),
        "repeats": timing["repeats"],
        "threads": timing["threads"],
    }
