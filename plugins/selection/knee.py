"""The knee of the sorted score curve (with `kneed`), and the pool plotted length vs score (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def find_knee(scores: np.ndarray) -> int | None:
    """Rank at the knee of the scores sorted high to low: a proposed cut (None when flat/undefined)."""
    s = np.sort(scores[np.isfinite(scores)])[::-1]
    if len(s) < 3 or s[0] == s[-1]:
        return None
    from kneed import KneeLocator

    x = np.arange(1, len(s) + 1)
    k = KneeLocator(x, s, curve="convex", direction="decreasing", online=False)
    # a knee at rank 1 (a step curve's first drop) proposes nothing useful
    return int(k.knee) if k.knee is not None and k.knee > 1 else None


def plot(
    path: str | Path,
    words: np.ndarray,
    scores: np.ndarray,
    chosen: list[int],
    knee: int | None,
    title: str,
) -> Path:
    """Left: every row, words against score, chosen rows marked; right: sorted scores and the knee."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    finite = np.isfinite(scores)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    words = np.maximum(words, 1)
    a.scatter(
        words[finite],
        scores[finite],
        s=6,
        c="#9aa4b1",
        label=f"pool ({int(finite.sum())} scored of {len(scores)})",
    )
    ch = np.array(chosen, dtype=int)
    a.scatter(words[ch], scores[ch], s=14, c="#d62728", label=f"chosen ({len(ch)})")
    s_sorted = np.sort(scores[finite])[::-1]
    if knee is not None:
        a.axhline(s_sorted[knee - 1], color="#2ca02c", ls="--", lw=1, label=f"knee cut (top {knee})")
    a.set_xscale("log")
    a.set_xlabel("words (question + answer)")
    a.set_ylabel("strategy score")
    a.legend(fontsize=8)
    b.plot(np.arange(1, len(s_sorted) + 1), s_sorted, lw=1.2)
    b.axvline(len(ch), color="#d62728", lw=1, label=f"N = {len(ch)}")
    if knee is not None:
        b.axvline(knee, color="#2ca02c", ls="--", lw=1, label=f"knee = {knee}")
    b.set_xlabel("rank")
    b.set_ylabel("score, sorted")
    b.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")  # written whole, then renamed: never half a PNG
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
    return path
