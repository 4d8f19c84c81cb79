"""Quota composition: one selection made of parts, each chosen by its own strategy, no row twice.

    quota:60*length_window,20*complexity,20*diversity

reads "60 rows by length_window, then 20 by complexity among the rows left, then 20 by diversity
among the rows left" (the parts run in the order written). Counts that do not add up to N are read
as shares and scaled to N by largest remainder (60/20/20 at N=10: 6/2/2), and the manifest records the
counts used. A part's
strategy is any strategy or weighted combination (`quota:50*rating:1,length:1,50*diversity`: a
token starting with `<count>*` starts a new part). A `diversity` part sees the rows the earlier
parts chose as centres already picked, so it adds rows far from them (plugins.selection.diversity).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from plugins.pools import DataError

PREFIX = "quota:"


def is_quota(spec: str) -> bool:
    return spec.strip().startswith(PREFIX)


@dataclass(frozen=True)
class Part:
    count: int
    strategy: str

    @property
    def label(self) -> str:
        return f"{self.count}*{self.strategy}"


def parse_quota(spec: str, n: int | None = None, check=None) -> list[Part]:
    """`quota:60*a,20*b,20*c` -> parts, scaled to n; `check(strategy)` (plugins.selection.strategies.parse_strategy
    when called from there) raises for an unknown strategy."""
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
        if check is not None:
            check(p.strategy)
    total = sum(p.count for p in out)
    if n is not None and total != n:
        exact = [p.count * n / total for p in out]
        counts = [int(x) for x in exact]
        by_remainder = sorted(range(len(out)), key=lambda i: (-(exact[i] - counts[i]), i))
        for i in by_remainder[: n - sum(counts)]:
            counts[i] += 1
        out = [Part(c, p.strategy) for c, p in zip(counts, out, strict=True)]
    return out


def select_quota(
    rows: list[dict], spec: str, n: int, ctx, score, pick_diverse, check=None
) -> tuple[list[int], list[str], dict]:
    """(picked indices in part order, the part label of each, manifest block). `score(rows, strategy,
    ctx)`, `pick_diverse(rows, m, ctx, taken) -> indices` and `check` come from plugins.selection.strategies
    (passed in, so this module never imports it: no import circle)."""
    parts = parse_quota(spec, n, check)
    if n > len(rows):
        raise DataError(f"N={n} is larger than the pool ({len(rows)} rows after dropping duplicates)")
    picked: list[int] = []
    chosen_by: list[str] = []
    notes = []
    for p in parts:
        if p.count == 0:  # a share scaled to nothing at a small N
            continue
        if p.strategy == "diversity":
            idx = pick_diverse(rows, p.count, ctx, picked)
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
        "scaled_to_n": sum(p.count for p in parse_quota(spec)) != n,
        "parts": [{"strategy": p.strategy, "count": p.count, "label": p.label} for p in parts],
        "chosen_by": {rows[i]["id"]: lab for i, lab in zip(picked, chosen_by, strict=True)},
        "diversity": notes,
    }
    return picked, chosen_by, block
