"""Strategies, weights, top-N, near-duplicates, knee, curriculum, demo pool and IFD on the tiny model."""

from __future__ import annotations

import re

import numpy as np
import pytest

from plugins.pools import DataError, demo_pool
from plugins.selection import (
    Context,
    batches,
    complexity,
    compute_ifd,
    curriculum,
    find_knee,
    parse_strategy,
    percentile,
    score,
    top_n,
    total_words,
    word_counts,
)


def rows_of(*triples):
    return [
        {"id": f"r{i}", "instruction": q, "input": "", "output": a, "score": s}
        for i, (q, a, s) in enumerate(triples)
    ]


POOL = rows_of(
    ("Say hi.", "Hi.", 5.0),
    ("Explain gravity.", "Gravity pulls masses together " * 10, 4.0),
    ("Write a Python function that adds two numbers.", "def add(a, b):\n    return a + b", 4.5),
    ("List three colours.", "Red, green and blue.", 5.0),
)


def test_word_counts_match_str_split():
    texts = ["a b", "", "  x\ny  ", "héllo wörld\tok", "one", "tab\tand\r\nnewline"]
    assert list(word_counts(texts)) == [len(t.split()) for t in texts]
    assert list(total_words(POOL)) == [len(f"{r['instruction']} {r['output']}".split()) for r in POOL]


def test_named_strategies_rank_as_documented():
    ctx = Context()
    assert [r["id"] for r in (POOL[i] for i in top_n(POOL, score(POOL, "length", ctx), 1)[0])] == ["r1"]
    rating = score(POOL, "rating", ctx)
    assert list(top_n(POOL, rating, 2)[0]) == [0, 3]
    # ties are broken by id, whatever the file's order: the same rows from a reversed pool
    rev = POOL[::-1]
    assert [rev[i]["id"] for i in top_n(rev, score(rev, "rating", Context()), 2)[0]] == ["r0", "r3"]
    assert [POOL[i]["id"] for i in top_n(POOL, np.zeros(4), 3)[0]] == ["r0", "r1", "r2"]
    hw5 = score(POOL, "hw5_default", ctx)
    assert np.allclose(hw5, rating + 1e-5 * total_words(POOL))
    assert top_n(POOL, hw5, 1)[0] == [3]  # the longer of the two 5.0 rows
    assert complexity("Write a Python function that must sort at least 3 lists, step by step") > complexity(
        "Hi"
    )
    r0, r0b, r1 = (score(POOL, s, ctx) for s in ("random_s0", "random_s0", "random_s1"))
    assert np.array_equal(r0, r0b) and not np.array_equal(r0, r1)


def test_weighted_combinations_and_errors():
    assert parse_strategy("rating:0.5,length:1.5") == {"rating": 0.5, "length": 1.5}
    assert parse_strategy("mix") == {"rating": 1.0, "long_is_more": 1.0, "ifd": 1.0}
    combo = score(POOL, "rating:1,length:1", Context())
    assert np.allclose(combo, (percentile(score(POOL, "rating")) + percentile(score(POOL, "length"))) / 2)
    with pytest.raises(DataError, match="unknown strategy 'best'.*length, rating"):
        parse_strategy("best")
    with pytest.raises(DataError, match="weight 'lots' of 'rating' is not a number"):
        parse_strategy("rating:lots")
    with pytest.raises(DataError, match="must be a positive number"):
        parse_strategy("rating:-1")
    with pytest.raises(DataError, match="needs a 'score' on every row; 1 rows have none"):
        score([*POOL, {"id": "x", "instruction": "q", "input": "", "output": "a"}], "rating", Context())
    with pytest.raises(DataError, match="N=5 is larger than the pool"):
        top_n(POOL, score(POOL, "rating"), 5)


def test_near_duplicate_filter_keeps_the_picks_diverse():
    pool = rows_of(
        ("Write a poem about the sea at night.", "a", 5.0),
        ("Write a poem about the sea at night!", "b", 4.9),
        ("Explain photosynthesis.", "c", 4.0),
    )
    s = score(pool, "rating")
    assert top_n(pool, s, 2)[0] == [0, 1]
    idx, skipped = top_n(pool, s, 2, near_dup=0.5)
    assert idx == [0, 2] and skipped == [{"id": "r1", "near_duplicate_of": "r0"}]


def test_knee_uses_kneed():
    x = np.arange(1, 201)
    assert 10 <= find_knee(100.0 / x) <= 40
    assert find_knee(np.ones(50)) is None


def test_curriculum_thresholds_code_and_tertiles():
    pool = rows_of(
        ("a", "word " * 10, 5),
        ("b", "word " * 80, 5),
        ("c", "word " * 130, 5),
        ("d", "Use this:\n```python\nprint(1)\n```", 5),
        ("e", "So 3 + 4 = 7.", 5),
    )
    st = curriculum.split(pool, curriculum.parse_thresholds("50,120"))  # HW5's cut by value
    assert [r["instruction"] for r in st["easy"]] == ["a"]
    assert [r["instruction"] for r in st["medium"]] == ["b"]
    assert [r["instruction"] for r in st["hard"]] == ["c", "d", "e"]
    st2 = curriculum.split(pool, curriculum.parse_thresholds("12,100"))
    assert [[r["instruction"] for r in st2[s]] for s in curriculum.STAGES] == [["a"], ["b"], ["c", "d", "e"]]
    with pytest.raises(DataError, match="--thresholds 5,100 leave stage easy empty"):
        curriculum.split(pool, curriculum.parse_thresholds("5,100"))
    # the default: thirds by rank, code or math hardest, then answer words (2 / 2 / 1 of 5)
    default = curriculum.split(pool)
    names = [[r["instruction"] for r in default[s]] for s in curriculum.STAGES]
    assert names == [["a", "b"], ["c", "d"], ["e"]]
    assert curriculum.parse_thresholds(None) is None
    by = curriculum.split(pool, by_scores=np.arange(5.0))
    assert sum(len(v) for v in by.values()) == 5 and by["hard"][-1]["instruction"] == "e"
    with pytest.raises(ValueError, match="2 scores for 5 rows"):  # the pool's scores for a subset
        curriculum.split(pool, by_scores=np.arange(2.0))
    with pytest.raises(DataError, match="two increasing positive word counts"):
        curriculum.parse_thresholds("120,50")
    assert not curriculum.has_code_or_math("From the start, for example: it was fine.")


def test_curriculum_thresholds_that_empty_a_stage_propose_the_subsets_tertiles():
    # a bimodal subset like the real pool's top 100: short answers and long ones, nothing between
    pool = rows_of(*[(f"s{i}", "word " * (3 + i), 5) for i in range(10)])
    pool += rows_of(*[(f"l{i}", "word " * (200 + 5 * i), 5) for i in range(20)])
    with pytest.raises(DataError, match=r"leave stage medium empty \(easy 10, medium 0, hard 20 of 30") as e:
        curriculum.split(pool, (50, 120))
    prop = re.search(r"try --thresholds (\d+),(\d+)", str(e.value))
    st = curriculum.split(pool, curriculum.parse_thresholds(f"{prop[1]},{prop[2]}"))
    assert [len(st[s]) for s in curriculum.STAGES] == [10, 10, 10]
    assert all(curriculum.split(pool)[s] for s in curriculum.STAGES)  # the default never empties one
    # no cut by value can split rows that all have the same length: the message says to drop --thresholds
    same = rows_of(*[(f"x{i}", "word " * 9, 5) for i in range(6)])
    with pytest.raises(DataError, match="drop --thresholds") as e:
        curriculum.split(same, (50, 120))
    assert "try --thresholds" not in str(e.value)
    assert [len(v) for v in curriculum.split(same).values()] == [2, 2, 2]


def test_demo_pool_is_deterministic_and_covers_every_stage():
    a, b = demo_pool.build(), demo_pool.build()
    assert a == b and 200 <= len(a) <= 800
    assert not any(" at 0x" in r["output"] for r in a)  # no memory addresses: same rows in every process
    assert len({r["instruction"] for r in a}) == len(a)
    assert {r["score"] for r in a} <= {3.0, 3.5, 4.0, 4.5, 5.0} and len({r["score"] for r in a}) >= 3
    st = curriculum.split(a, curriculum.HW5_THRESHOLDS)
    assert all(len(v) >= 20 for v in st.values())
    assert any("```" in r["output"] or ">>>" in r["output"] for r in a)


def test_length_bucketed_batches_respect_the_budget():
    lengths = [5, 100, 7, 98, 6, 99]
    plan = batches(lengths, 200)
    assert sorted(i for b in plan for i in b) == list(range(6))
    assert all(len(b) * max(lengths[i] for i in b) <= 200 for b in plan)
    assert plan[0] == [0, 4, 2]  # short sequences together, not padded to 100


def test_ifd_on_the_tiny_model_is_cached(tiny_model, out_dir):
    pool = rows_of(
        ("Name a colour.", "Blue.", 5.0),
        ("Translate 'cat' to French.", "Chat.", 5.0),
        ("Explain rain.", "Water vapour condenses into droplets that fall when heavy.", 4.5),
    )
    cache = out_dir / "cache" / "ifd"
    ifd, stats = compute_ifd(pool, tiny_model, cache, batch_tokens=512, max_tokens=64, progress=False)
    assert stats["scored"] == 3 and stats["cache_hits"] == 0 and stats["tokens_per_s"] > 0
    assert ifd.shape == (3,) and np.all(np.isfinite(ifd)) and np.all(ifd > 0)
    again, stats2 = compute_ifd(pool, tiny_model, cache, batch_tokens=512, max_tokens=64, progress=False)
    assert stats2["cache_hits"] == 3 and stats2["scored"] == 0 and np.allclose(ifd, again)
    # the strategy on a prefiltered candidate set, recorded for the manifest
    ctx = Context(model=tiny_model, cache_dir=cache, ifd_candidates=2, ifd_max_tokens=64, progress=False)
    s = score(pool, "ifd", ctx)
    assert ctx.notes["ifd"]["prefiltered"] and ctx.notes["ifd"]["candidates"] == 2
    assert s[2] < min(s[0], s[1])  # the row outside the candidates (lowest hw5_default) ranks last
