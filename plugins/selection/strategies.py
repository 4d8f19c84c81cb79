"""Selection strategies: each scores every row of a pool (higher = picked first); top-N picks.

Strategies (names used on the command line and in dataset names `alpaca_top100_by_<name>`):

    length        words of question + answer (whitespace-separated tokens)
    rating        the pool's own `score` (ChatGPT rating, as AlpaGasus)
    hw5_default   HW5's sort: score + 1e-5 * words
    long_is_more  answer length in tokens of the embedded tokenizer ("Long Is More", ICML 2024)
    complexity    instruction complexity: constraints, steps, code and math cues (see `complexity`)
    ifd           instruction-following difficulty with the small model (plugins.selection.ifd, Superfiltering)
    random, random_s0..random_s2   uniform random with a seed (the floor every strategy must beat)
    mix           rating + long_is_more + ifd, equal weights
    length_window HW5's sort among answers of 100..400 words (Context.length_window), the rest below
    diversity     k-center greedy over MiniLM embeddings of the top rows by HW5's sort (plugins.selection.diversity)

A selection of parts, `quota:60*length_window,20*complexity,20*diversity`, is plugins.selection.quota.

Combinations are written `name:weight,name:weight`; each score is turned into its percentile
rank in the pool first, so weights mean the same whatever the scale.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from pathlib import Path

import numpy as np

from plugins.pools import DataError, no_gc
from plugins.selection import diversity, quota
from plugins.selection.progress import Progress
from plugins.selection.words import word_counts

MIX = "rating:1,long_is_more:1,ifd:1"
UNSCORED = -1e6  # offset of rows a strategy did not score (IFD outside its candidates): below the rest
STRATEGIES = (
    "length",
    "rating",
    "hw5_default",
    "long_is_more",
    "complexity",
    "ifd",
    "random",
    "mix",
    "length_window",
    "diversity",
)
STUDY_STRATEGIES = (
    "random_s0",
    "random_s1",
    "random_s2",
    "rating",
    "hw5_default",
    "length",
    "long_is_more",
    "complexity",
    "ifd",
    "mix",
    "length_window",
    "diversity",
)


@dataclass
class Context:
    """What the expensive strategies need; plugins never import tools, so callers pass paths in."""

    seed: int = 0
    model: Path | None = None  # the embedded model: tokenizer for long_is_more, LM for IFD
    cache_dir: Path | None = None  # IFD cache (tools pass tools.core.paths.cache_dir() / "ifd")
    ifd_candidates: int | None = (
        None  # score only the top-K by a cheap strategy; None = 3N on CPU, all on GPU
    )
    n: int = 100  # the subset size being selected (sets the CPU candidate count)
    ifd_prefilter: str = "hw5_default"
    ifd_batch_tokens: int = 4096
    ifd_max_tokens: int | None = None  # per sequence; None = 512 on a GPU, 256 on CPU
    progress: bool = True
    device: str | None = None
    embedding: str = "auto"  # diversity: minilm | hashed | auto (plugins.selection.diversity)
    diversity_prefilter: str | None = "hw5_default"  # DEITA's order: quality first; "none" = whole pool
    diversity_candidates: int | None = None  # None = 20N, at least 2000 (plugins.selection.diversity)
    length_window: tuple[int, int] = (100, 400)  # answer words, for length_window
    notes: dict = field(default_factory=dict)  # what ran, for the manifest (IFD candidates, cache hits)
    _memo: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- words
def total_words(rows: list[dict], ctx: Context | None = None) -> np.ndarray:
    key = "total_words"
    if ctx is not None and key in ctx._memo:
        return ctx._memo[key]
    with no_gc():
        fields = list(chain.from_iterable(map(itemgetter("instruction", "input", "output"), rows)))
        w = word_counts(fields).reshape(-1, 3).sum(axis=1)
    if ctx is not None:
        ctx._memo[key] = w
    return w


def answer_words(rows: list[dict]) -> np.ndarray:
    return word_counts([r["output"] for r in rows])


# ------------------------------------------------------------------------------------------- strategies
def _scores(rows: list[dict], strategy: str) -> np.ndarray:
    missing = [r["id"] for r in rows if r.get("score") is None]
    if missing:
        raise DataError(
            f"strategy {strategy!r} needs a 'score' on every row; {len(missing)} rows have none "
            f"(first: {missing[0]}); use length, long_is_more, complexity, ifd or random instead"
        )
    return np.fromiter((r["score"] for r in rows), dtype=np.float64, count=len(rows))


def s_length(rows: list[dict], ctx: Context) -> np.ndarray:
    return total_words(rows, ctx).astype(np.float64)


def s_rating(rows: list[dict], ctx: Context) -> np.ndarray:
    return _scores(rows, "rating")


def s_hw5_default(rows: list[dict], ctx: Context) -> np.ndarray:
    return _scores(rows, "hw5_default") + 1e-5 * total_words(rows, ctx)


def s_long_is_more(rows: list[dict], ctx: Context) -> np.ndarray:
    if ctx.model is None:
        raise DataError("strategy 'long_is_more' needs the embedded tokenizer (models/smollm2-135m-instruct)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ctx.model))
    # an answer that repeats (a canned refusal, a pool built from copies) is tokenized once
    texts = list(dict.fromkeys(r["output"] for r in rows))
    counts: dict[str, int] = {}
    chunk = 4096  # a progress line per chunk in a log: tokenizing 52k answers takes minutes on a CPU
    with Progress(len(texts), "long_is_more: tokenizing answers", "answers", enabled=ctx.progress) as bar:
        for c in range(0, len(texts), chunk):
            part = texts[c : c + chunk]
            ids = tok(part, add_special_tokens=False)["input_ids"]
            counts.update(zip(part, map(len, ids), strict=True))
            bar.update(len(part))
    return np.fromiter((counts[r["output"]] for r in rows), dtype=np.float64, count=len(rows))


_CONSTRAINT = re.compile(
    r"\b(must|should|at least|at most|no more than|fewer than|exactly|only|without|include|including|"
    r"exclude|make sure|ensure|limit|maximum|minimum|within|format|each|every)\b",
    re.I,
)
_STEPS = re.compile(
    r"\b(step|steps|first|then|finally|list|outline|explain|compare|analy[sz]e|why|how)\b", re.I
)
_CODE = re.compile(
    r"```|\b(code|python|java(script)?|sql|function|program|algorithm|regex|html|c\+\+)\b", re.I
)
_MATH = re.compile(
    r"\d\s*[-+*/^=<>]\s*\d|\b(calculate|compute|solve|equation|probability|sum|integral)\b", re.I
)


def complexity(text: str) -> float:
    """Cues of a demanding instruction: constraints (1 each), steps/reasoning (0.5 each), code (2),
    math (2), and log2 of its length in words; a cheap stand-in for Evol-Instruct's 'deepening'."""
    words = max(1, len(text.split()))
    return (
        len(_CONSTRAINT.findall(text))
        + 0.5 * len(_STEPS.findall(text))
        + (2.0 if _CODE.search(text) else 0.0)
        + (2.0 if _MATH.search(text) else 0.0)
        + float(np.log2(words))
    )


def s_complexity(rows: list[dict], ctx: Context) -> np.ndarray:
    return np.array([complexity(f"{r['instruction']}\n{r['input']}") for r in rows], dtype=np.float64)


def s_ifd(rows: list[dict], ctx: Context) -> np.ndarray:
    """The `ifd` strategy: IFD on the pool, or on a cheap prefiltered candidate set on CPU."""
    if ctx.model is None:
        raise DataError("strategy 'ifd' needs the embedded model (models/smollm2-135m-instruct)")
    import torch

    from plugins.selection.ifd import compute_ifd

    device = ctx.device or ("cuda" if torch.cuda.is_available() else "cpu")
    k = ctx.ifd_candidates
    if k is None:
        # CPU: SmolLM2-135M scores ~100-800 tokens/s on 2 cores, so 3N candidates (300 for N=100)
        # take minutes; a GPU scores the whole pool
        k = len(rows) if device != "cpu" else max(3 * ctx.n, 200)
    cand = list(range(len(rows)))
    prefiltered = k < len(rows)
    out = np.zeros(len(rows))
    if prefiltered:
        cheap = score(rows, ctx.ifd_prefilter, ctx)
        cand = [int(i) for i in np.argsort(-cheap, kind="stable")[:k]]
        # rows not scored rank below every scored one, in the prefilter's order
        out = UNSCORED + percentile(cheap)
    ifd, stats = compute_ifd(
        [rows[i] for i in cand],
        ctx.model,
        ctx.cache_dir,
        ctx.ifd_batch_tokens,
        ctx.ifd_max_tokens or (512 if device != "cpu" else 256),
        device,
        ctx.progress,
    )
    ctx.notes["ifd"] = {
        **stats,
        "prefiltered": prefiltered,
        "candidates": len(cand),
        "prefilter": ctx.ifd_prefilter if prefiltered else None,
        "pool": len(rows),
    }
    # Superfiltering: IFD >= 1 means the instruction does not help; those rank below the rest
    out[cand] = np.where(ifd < 1.0, ifd, -ifd)
    return out


def s_length_window(rows: list[dict], ctx: Context) -> np.ndarray:
    """HW5's default sort among answers of ctx.length_window words; the rest rank below, same order."""
    lo, hi = ctx.length_window
    words = answer_words(rows)
    inside = (words >= lo) & (words <= hi)
    base = percentile(score(rows, "hw5_default", ctx))
    ctx.notes["length_window"] = {"answer_words": [int(lo), int(hi)], "inside": int(inside.sum())}
    return np.where(inside, base, UNSCORED + base)


def _quality(rows: list[dict], ctx: Context) -> np.ndarray | None:
    pre = ctx.diversity_prefilter
    return None if pre in (None, "none") else score(rows, pre, ctx)


def pick_diverse(rows: list[dict], m: int, ctx: Context, taken: list[int] | None = None) -> list[int]:
    """m rows by k-center greedy after the quality prefilter, `taken` rows counting as picked."""
    cand, picks, _ = diversity.pick(rows, m, ctx, _quality(rows, ctx), taken)
    return [int(cand[i]) for i in picks]


def s_diversity(rows: list[dict], ctx: Context) -> np.ndarray:
    """Picks first in pick order, then the other candidates farthest first, then the rest by quality."""
    quality = _quality(rows, ctx)
    cand, picks, nearest = diversity.pick(rows, min(ctx.n, len(rows)), ctx, quality)
    out = UNSCORED + (percentile(quality) if quality is not None else np.zeros(len(rows)))
    out[cand] = np.minimum(nearest, 2.0)  # cosine distance: 0..2
    out[cand[picks]] = 3.0 + (len(picks) - np.arange(len(picks))) / max(1, len(picks))
    return out


def select_quota(rows: list[dict], spec: str, n: int, ctx: Context) -> tuple[list[int], list[str], dict]:
    """A quota composition (plugins.selection.quota) with this module's strategies."""
    return quota.select_quota(rows, spec, n, ctx, score, pick_diverse, parse_strategy)


def s_random(rows: list[dict], ctx: Context, seed: int | None = None) -> np.ndarray:
    return np.random.default_rng(ctx.seed if seed is None else seed).random(len(rows))


BASE: dict[str, Callable[[list[dict], Context], np.ndarray]] = {
    "length": s_length,
    "rating": s_rating,
    "hw5_default": s_hw5_default,
    "long_is_more": s_long_is_more,
    "complexity": s_complexity,
    "ifd": s_ifd,
    "random": s_random,
    "length_window": s_length_window,
    "diversity": s_diversity,
}


def parse_strategy(spec: str) -> dict[str, float]:
    """`mix`, `ifd`, `random_s1` or `rating:0.5,ifd:0.5` -> {name: weight}; errors list what exists."""
    spec = MIX if spec.strip() == "mix" else spec
    out: dict[str, float] = {}
    for part in spec.split(","):
        name, _, w = part.strip().partition(":")
        if not (name in BASE or re.fullmatch(r"random_s\d+", name)):
            raise DataError(
                f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}, random_s<seed>, "
                "or weighted combinations like rating:0.5,ifd:0.5"
            )
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise DataError(f"strategy {spec!r}: weight {w!r} of {name!r} is not a number") from None
        if not np.isfinite(weight) or weight <= 0:
            raise DataError(f"strategy {spec!r}: weight of {name!r} must be a positive number, got {w!r}")
        out[name] = out.get(name, 0.0) + weight
    return out


def _one(rows: list[dict], name: str, ctx: Context) -> np.ndarray:
    m = re.fullmatch(r"random_s(\d+)", name)
    if m:
        return s_random(rows, ctx, seed=int(m.group(1)))
    key = f"score:{name}"
    if key not in ctx._memo:
        ctx._memo[key] = np.asarray(BASE[name](rows, ctx), dtype=np.float64)
    return ctx._memo[key]


def percentile(x: np.ndarray) -> np.ndarray:
    """Rank in [0, 1], ties sharing their mean rank, so weights are scale-free."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return (sums / counts)[inv] / max(1, len(x) - 1)


def score(rows: list[dict], strategy: str, ctx: Context | None = None) -> np.ndarray:
    """One score per row for a strategy or a weighted combination (higher = better)."""
    ctx = ctx or Context()
    weights = parse_strategy(strategy)
    if len(weights) == 1:
        return _one(rows, next(iter(weights)), ctx)
    total = sum(weights.values())
    return sum(w / total * percentile(_one(rows, n, ctx)) for n, w in weights.items())


# ------------------------------------------------------------------------------------------- top-N
def _shingles(text: str, n: int = 2) -> set[str]:
    """Runs of `n` words (lower-cased); a text shorter than n words is one shingle. The top-N filter
    uses word pairs; the leakage guard (plugins.selection.leakage) long runs."""
    w = re.findall(r"\w+", text.lower())
    return {" ".join(w[i : i + n]) for i in range(max(1, len(w) - n + 1))}


def top_n(
    rows: list[dict], scores: np.ndarray, n: int, near_dup: float | None = None
) -> tuple[list[int], list[dict]]:
    """Indices of the N best rows, ties broken by id (ascending), so the pick does not depend on the
    file's order (the 2k real pool has 1,238 rows rated 4.5); with `near_dup`, a row whose instruction
    shares more than that Jaccard share of word pairs with one already picked is skipped."""
    if n <= 0:
        raise DataError(f"N must be positive, got {n}")
    if n > len(rows):
        raise DataError(f"N={n} is larger than the pool ({len(rows)} rows after dropping duplicates)")
    ids = np.array([str(r["id"]) for r in rows])
    order = np.lexsort((ids, -np.asarray(scores, dtype=np.float64)))  # last key first: score, then id
    if not near_dup:
        return [int(i) for i in order[:n]], []
    picked, sets, skipped = [], [], []
    for i in order:
        s = _shingles(f"{rows[i]['instruction']} {rows[i]['input']}")
        clash = next(
            (j for j, t in zip(picked, sets, strict=True) if len(s & t) / max(1, len(s | t)) > near_dup), None
        )
        if clash is not None:
            skipped.append({"id": rows[i]["id"], "near_duplicate_of": rows[clash]["id"]})
            continue
        picked.append(int(i))
        sets.append(s)
        if len(picked) == n:
            return picked, skipped
    raise DataError(f"only {len(picked)} rows left after the near-duplicate filter ({near_dup}); N={n}")
