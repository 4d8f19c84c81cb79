"""The leakage guard: training rows that repeat an evaluation prompt, caught before training.

A row the model trains on that is also a dev or test prompt (or a light rewording of one) inflates
that set's score and hides overfitting. Each training row's prompt (instruction + input) is compared
with every evaluation prompt two ways:
  - exact: the same text once lower-cased, whitespace collapsed and punctuation dropped;
  - near: the two prompts share long word runs - the share of the shorter prompt's `n`-word shingles
    (the top-N filter's shingles of plugins.selection.strategies, here 8 words long) also found in the other is
    at least `threshold`. Eight words in the same order rarely repeat by chance; a reworded copy keeps many.
Prompts shorter than `n` words are compared exactly only. Matches are reported with both ids, and
recorded in the subset's manifest (`leakage`), which the report shows; nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections import defaultdict

from plugins.selection.strategies import _shingles

NGRAM = 8
THRESHOLD = 0.5


def normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def prompt_text(row: dict) -> str:
    return f"{row.get('instruction', '')} {row.get('input', '')}"


class Index:
    """The evaluation prompts, indexed by normalised text and by shingle, so a pool checks in one pass."""

    def __init__(self, sets: dict[str, list[dict]], n: int = NGRAM):
        self.n = n
        self.exact: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self.by_shingle: dict[str, set[int]] = defaultdict(set)
        self.items: list[tuple[str, str, set[str]]] = []  # (set, id, shingles)
        for name, rows in sets.items():
            for r in rows:
                text = prompt_text(r)
                self.exact[normalise(text)].append((name, str(r.get("id"))))
                if len(normalise(text).split()) < n:
                    continue
                sh = _shingles(text, n)
                k = len(self.items)
                self.items.append((name, str(r.get("id")), sh))
                for s in sh:
                    self.by_shingle[s].add(k)

    def matches(self, row: dict, threshold: float = THRESHOLD) -> list[dict]:
        """Every evaluation prompt this row's prompt repeats: {set, id, kind, shared_share}."""
        text = prompt_text(row)
        norm = normalise(text)
        found = [
            {"set": s, "id": i, "kind": "exact", "shared_share": 1.0} for s, i in self.exact.get(norm, [])
        ]
        seen = {(f["set"], f["id"]) for f in found}
        if len(norm.split()) < self.n:
            return found
        sh = _shingles(text, self.n)
        counts: dict[int, int] = defaultdict(int)
        for s in sh:
            for k in self.by_shingle.get(s, ()):
                counts[k] += 1
        for k, shared in sorted(counts.items()):
            name, rid, other = self.items[k]
            share = shared / max(1, min(len(sh), len(other)))
            if share >= threshold and (name, rid) not in seen:
                found.append({"set": name, "id": rid, "kind": "near", "shared_share": round(share, 3)})
        return found


def check(
    rows: list[dict], sets: dict[str, list[dict]], n: int = NGRAM, threshold: float = THRESHOLD
) -> list[dict]:
    """[{id (training row), set, eval_id, kind: exact|near, shared_share}] for every overlap."""
    index = Index(sets, n)
    out = []
    for r in rows:
        for m in index.matches(r, threshold):
            out.append(
                {
                    "id": str(r.get("id")),
                    "set": m["set"],
                    "eval_id": m["id"],
                    "kind": m["kind"],
                    "shared_share": m["shared_share"],
                }
            )
    return out


def summary(
    overlaps: list[dict], sets: dict[str, list[dict]], n: int = NGRAM, threshold: float = THRESHOLD
) -> dict:
    """The manifest's `leakage` block: what was checked, how, and every overlap found."""
    return {
        "checked_against": {name: len(rows) for name, rows in sets.items()},
        "method": f"exact normalised prompt, or >= {threshold:g} of the shorter prompt's {n}-word shingles shared",
        "n_overlapping_rows": len({o["id"] for o in overlaps}),
        "overlaps": overlaps,
    }
