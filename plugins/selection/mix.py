"""General instruction data mixed into a small training set: the forgetting guard.

A few percent of rows from another pool keep the model's general abilities from drifting while it
learns the 100 (the replay idea of continual learning). The rows are drawn at random for a seed,
never ones the training set already holds (same id or same instruction text), and the rest of the
general pool gives a held-out set to measure forgetting on (perplexity of general answers), so the
rows a run trained on are never the rows it is measured on.
"""

from __future__ import annotations

import math
import re

import numpy as np

from plugins.pools import DataError

MAX_SHARE = 0.5


def _key(row: dict) -> str:
    return re.sub(r"\s+", " ", f"{row.get('instruction', '')}\n{row.get('input', '')}").strip().lower()


def general_count(n_train: int, share: float) -> int:
    """Rows to add so that general rows are `share` of the mixed set (at least one)."""
    if not 0 < share <= MAX_SHARE:
        raise DataError(f"--share {share}: use a share of the mixed set above 0 and at most {MAX_SHARE}")
    return max(1, math.ceil(n_train * share / (1 - share) - 1e-9))


def mix_general(
    train: list[dict], general: list[dict], share: float, heldout_n: int = 100, seed: int = 0
) -> tuple[list[dict], list[dict], list[dict]]:
    """(mixed rows, the general rows added, held-out general rows) - disjoint from the training rows."""
    k = general_count(len(train), share)
    ids = {str(r.get("id")) for r in train}
    texts = {_key(r) for r in train}
    fresh = [r for r in general if str(r.get("id")) not in ids and _key(r) not in texts and r.get("output")]
    if len(fresh) < k:
        raise DataError(
            f"the general pool has {len(fresh)} usable rows (with an answer, not in the training set); "
            f"{k} are needed for a share of {share:g}"
        )
    order = np.random.default_rng(seed).permutation(len(fresh))
    added = [dict(fresh[i], general=True) for i in order[:k]]
    heldout = [dict(fresh[i]) for i in order[k : k + heldout_n]]
    mixed = [dict(r, general=False) for r in train] + added
    # spread the general rows through the set, in a fixed order for the seed
    mixed = [mixed[i] for i in np.random.default_rng(seed + 1).permutation(len(mixed))]
    return mixed, added, heldout
