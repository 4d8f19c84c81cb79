"""Quota composition: one selection made of parts, each chosen by its own strategy, no row twice.

    quota:60*length_window,20*complexity,20*diversity

reads "60 rows by length_window, then 20 by complexity among the rows left, then 20 by diversity
among the rows left" (the parts run in the order written; counts must add up to N). A part's
strategy is any strategy or weighted combination (`quota:50*rating:1,length:1,50*diversity`: a
token starting with `<count>*` starts a new part). A `diversity` part sees the rows the earlier
parts chose as centres already picked, so it adds rows far from them (plugins.diversity).

Also here, the recipe's first part: `length_window` - rows whose answer has between
`Context.length_window` words (default 100..400), by HW5's default sort (score + 1e-5 * words);
the rows outside the window rank below every row inside it, in the same order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from plugins.loaders import DataError

PREFIX = "quota:"
DEFAULT_WINDOW = (100, 400)


def is_quota(spec: str) -> bool:
    return spec.strip().startswith(PREFIX)


@dataclass(frozen=True)
class Part:
    count: int
    strategy: str

    @property
    def label(self) -> str:
        return f"{self.count}*{self.strategy}"


def parse_quota(spec: str, n: int | None = None) -> list[Part]:
    """`quota:60*a,20*b,20*c` -> parts; checks each strategy and, with n, that the counts add up to it."""
    from plugins.strategies import parse_strategy

    body = spec.strip()[len(PREFIX) :]
    parts: list[list] = []
    for token in body.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*\*\s*(.+?)\s*", token)
        if m:
            parts.append([int(m.group(1)), m.group(2)])
        elif parts and token.strip():
            parts[-1][1] += "," + token.strip()  # a weighted combination inside a part
        else:
            raise DataError(f"strategy {spec!r}: write quota:<count>*<strategy>,<count>*<strategy>,...")
    out = [Part(c, s) for c, s in parts]
    for p in out:
        if p.count <= 0:
            raise DataError(f"strategy {spec!r}: part {p.label!r} needs a positive count")
        if is_quota(p.strategy):
            raise DataError(f"strategy {spec!r}: a quota cannot hold another quota")
        parse_strategy(p.strategy)
    if n is not None and sum(p.count for p in out) != n:
        raise DataError(f"strategy {spec!r}: the parts add up to {sum(p.count for p in out)} rows, not N={n}")
    return out


def select_quota(rows: list[dict], spec: str, n: int, ctx) -> tuple[list[int], list[str], dict]:
    """(picked indices in part order, the part label of each, manifest block)."""
    from plugins import diversity
    from plugins.strategies import score

    parts = parse_quota(spec, n)
    if n > len(rows):
        raise DataError(f"N={n} is larger than the pool ({len(rows)} rows after dropping duplicates)")
    picked: list[int] = []
    chosen_by: list[str] = []
    notes = []
    for p in parts:
        if p.strategy == "diversity":
            _, idx = diversity.pick(rows, p.count, ctx, taken=picked)
            notes.append({"part": p.label, **ctx.notes.get("diversity", {})})
        else:
            s = np.asarray(score(rows, p.strategy, ctx), dtype=np.float64).copy()
            s[picked] = -np.inf  # rows an earlier part chose
            idx = [int(i) for i in np.argsort(-s, kind="stable")[: p.count]]
        picked += idx
        chosen_by += [p.label] * len(idx)
    assert len(set(picked)) == n == len(picked)
    block = {
        "spec": spec,
        "parts": [{"strategy": p.strategy, "count": p.count, "label": p.label} for p in parts],
        "chosen_by": {rows[i]["id"]: lab for i, lab in zip(picked, chosen_by, strict=True)},
        "diversity": notes,
    }
    return picked, chosen_by, block


def s_length_window(rows: list[dict], ctx) -> np.ndarray:
    """HW5's default sort inside the answer-length window; rows outside it rank below, same order."""
    from plugins.strategies import UNSCORED, answer_words, percentile, score

    lo, hi = getattr(ctx, "length_window", None) or DEFAULT_WINDOW
    words = answer_words(rows)
    inside = (words >= lo) & (words <= hi)
    base = percentile(score(rows, "hw5_default", ctx))
    ctx.notes["length_window"] = {"answer_words": [int(lo), int(hi)], "inside": int(inside.sum())}
    return np.where(inside, base, UNSCORED + base)
