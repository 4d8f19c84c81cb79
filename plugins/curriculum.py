"""Easy / Medium / Hard stages of a subset (HW5's curriculum), which add up to the subset.

By answer length (default, HW5's thresholds): easy < 50 words, medium 50 to 120, hard > 120 words
or an answer containing code or math. By any strategy score instead (`by=<strategy>`): tertiles
of that score's ranks within the subset, a higher score being harder.
"""

from __future__ import annotations

import re

import numpy as np

from plugins.loaders import DataError
from plugins.strategies import answer_words

STAGES = ("easy", "medium", "hard")
DEFAULT_THRESHOLDS = (50, 120)

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


def parse_thresholds(spec: str | tuple | None) -> tuple[int, int]:
    if spec is None:
        return DEFAULT_THRESHOLDS
    if isinstance(spec, str):
        parts = [p for p in re.split(r"[,:]", spec) if p.strip()]
        try:
            spec = tuple(int(p) for p in parts)
        except ValueError:
            raise DataError(f"--thresholds {spec!r}: two whole numbers of words, e.g. 50,120") from None
    if len(spec) != 2 or not 0 < spec[0] < spec[1]:
        raise DataError(f"thresholds {spec!r}: need two increasing positive word counts, e.g. 50,120")
    return int(spec[0]), int(spec[1])


def split(
    rows: list[dict], thresholds: tuple[int, int] = DEFAULT_THRESHOLDS, by_scores: np.ndarray | None = None
) -> dict[str, list[dict]]:
    """Stage name -> rows (in subset order); every row lands in exactly one stage."""
    stages: dict[str, list[dict]] = {s: [] for s in STAGES}
    if by_scores is not None:
        # thirds by rank, not by value: scores with many ties (templated instructions) still split
        rank = np.empty(len(rows), dtype=np.int64)
        rank[np.argsort(by_scores, kind="stable")] = np.arange(len(rows))
        for r, k in zip(rows, rank, strict=True):
            stages[STAGES[min(2, 3 * int(k) // max(1, len(rows)))]].append(r)
        return stages
    words = answer_words(rows)
    for r, w in zip(rows, words, strict=True):
        if w > thresholds[1] or has_code_or_math(r["output"]):
            stages["hard"].append(r)
        elif w >= thresholds[0]:
            stages["medium"].append(r)
        else:
            stages["easy"].append(r)
    return stages
