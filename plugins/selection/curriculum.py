"""Easy / Medium / Hard stages of a subset (HW5's curriculum), which add up to the subset.

Default: thirds by rank of difficulty, so no stage is ever empty (from 3 rows up) whatever the
pool: rows with code or math are the hardest, the others rank by answer length in words. HW5's
own rule, cuts by value, is one option away (`--thresholds 50,120`: easy < 50 words, medium 50 to
120, hard > 120 words or an answer containing code or math); on the real pools those cuts can
leave a stage empty (the 2k Alpaca pool's top 100 by HW5's sort: 11 / 0 / 89), which is an error
naming cuts taken from the subset's own quantiles. By any strategy score instead
(`by=<strategy>`): thirds of that score's ranks within the subset, a higher score being harder.
"""

from __future__ import annotations

import re

import numpy as np

from plugins.pools import DataError
from plugins.selection.strategies import answer_words

STAGES = ("easy", "medium", "hard")
HW5_THRESHOLDS = (50, 120)
DEFAULT_THRESHOLDS = None  # thirds by rank; HW5_THRESHOLDS are the by-value alternative

_CODE = re.compile(
    r"```|^\s*(def|class)\s+\w+.*:\s*$|^\s*from\s+[\w.]+\s+import\b|^\s*import\s+[\w.]+\s*$|^\s*(for|while|if)\b.*:\s*$"
    r"|[{};]\s*$|</?[a-z]+\d?>|\w+\(.*\)\s*;",
    re.M,
)
_MATH = re.compile(
    r"\\frac|\\sum|\$[^$\n]+\$|\b\d+\s*[-+*/^×÷]\s*\d+\s*=|\b[a-z]\s*\^\s*\d|\bsqrt\(|[∑∫√π≈≤≥]"
)


def has_code_or_math(text: str) -> bool:
    """Code fences or code-like lines, LaTeX, an arithmetic equation, powers, math symbols."""
    return bool(_CODE.search(text) or _MATH.search(text))


def parse_thresholds(spec: str | tuple | None) -> tuple[int, int] | None:
    """`--thresholds 50,120` -> (50, 120); None keeps the default split by rank."""
    if spec is None:
        return None
    if isinstance(spec, str):
        parts = [p for p in re.split(r"[,:]", spec) if p.strip()]
        try:
            spec = tuple(int(p) for p in parts)
        except ValueError:
            raise DataError(f"--thresholds {spec!r}: two whole numbers of words, e.g. 50,120") from None
    if len(spec) != 2 or not 0 < spec[0] < spec[1]:
        raise DataError(f"thresholds {spec!r}: need two increasing positive word counts, e.g. 50,120")
    return int(spec[0]), int(spec[1])


def _thirds(rows: list[dict], order: np.ndarray) -> dict[str, list[dict]]:
    """Rows cut into thirds along `order` (easiest first); each stage keeps the subset's order."""
    stage = np.empty(len(rows), dtype=np.int64)
    stage[order] = np.minimum(2, 3 * np.arange(len(rows)) // max(1, len(rows)))
    out: dict[str, list[dict]] = {s: [] for s in STAGES}
    for r, k in zip(rows, stage, strict=True):
        out[STAGES[int(k)]].append(r)
    return out


def _by_value(rows: list[dict], words: np.ndarray, code: np.ndarray, t: tuple[int, int]) -> dict:
    out: dict[str, list[dict]] = {s: [] for s in STAGES}
    for r, w, c in zip(rows, words, code, strict=True):
        out["hard" if c or w > t[1] else "medium" if w >= t[0] else "easy"].append(r)
    return out


def propose_thresholds(words: np.ndarray, code: np.ndarray) -> tuple[int, int] | None:
    """Cuts at the subset's own tertiles of answer words (rows with code or math go to hard anyway),
    or None when no cut by value leaves three non-empty stages (too many ties or too few rows)."""
    w = np.sort(words[~code])
    if len(w) < 3:
        return None
    # easy: w < lo (the lowest third); hard: w > hi, i.e. w >= the top third's smallest count
    lo, hi = max(1, int(w[len(w) // 3])), int(w[(2 * len(w)) // 3]) - 1
    if hi <= lo:
        return None
    counts = [(w < lo).sum(), ((w >= lo) & (w <= hi)).sum(), (w > hi).sum() + code.sum()]
    return (lo, hi) if min(counts) > 0 else None


def split(
    rows: list[dict], thresholds: tuple[int, int] | None = None, by_scores: np.ndarray | None = None
) -> dict[str, list[dict]]:
    """Stage name -> rows (in subset order); every row lands in exactly one stage.

    `by_scores` (one per row, higher = harder) or, by default, code/math first then answer words:
    thirds by rank, ties in subset order. `thresholds`: HW5's cut by value; a DataError when a
    stage comes out empty, proposing cuts from this subset's quantiles."""
    if by_scores is not None:
        by_scores = np.asarray(by_scores)
        if by_scores.shape != (len(rows),):
            raise ValueError(f"curriculum: {by_scores.shape[0]} scores for {len(rows)} rows")
        return _thirds(rows, np.argsort(by_scores, kind="stable"))
    words = answer_words(rows)
    code = np.array([has_code_or_math(r["output"]) for r in rows], dtype=bool)
    if thresholds is None:
        return _thirds(rows, np.lexsort((words, code)))  # last key first: code/math, then words
    stages = _by_value(rows, words, code, thresholds)
    empty = [s for s in STAGES if not stages[s]]
    if empty and len(rows) >= 3:
        q = np.percentile(words, [0, 33, 67, 100]).astype(int).tolist()
        prop = propose_thresholds(words, code)
        hint = f"try --thresholds {prop[0]},{prop[1]} (this subset's tertiles), or " if prop else ""
        raise DataError(
            f"--thresholds {thresholds[0]},{thresholds[1]} leave stage {', '.join(empty)} empty "
            f"({', '.join(f'{s} {len(v)}' for s, v in stages.items())} of {len(rows)} rows; answer words "
            f"min {q[0]}, 33% {q[1]}, 67% {q[2]}, max {q[3]}; {int(code.sum())} with code or math count "
            f"as hard): {hint}drop --thresholds to split by rank into thirds"
        )
    return stages


def word_ranges(stages: dict[str, list[dict]]) -> str:
    """'easy 34 (1-240 words), ...': what each stage holds, for the status line."""
    parts = []
    for s, rows in stages.items():
        w = answer_words(rows) if rows else np.zeros(0)
        parts.append(f"{s} {len(rows)}" + (f" ({int(w.min())}-{int(w.max())} words)" if len(w) else ""))
    return ", ".join(parts)
