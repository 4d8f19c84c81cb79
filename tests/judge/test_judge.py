"""The judge's fast parts: score parsing on real output shapes, statistics, cost, cache, CLI input checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from filelib import atomic_write_jsonl, read_jsonl
from tools.core.paths import Run
from tools.judge import cli as judge
from tools.judge.cache import JudgeCache
from tools.judge.cost import cost_usd, price_of
from tools.judge.parse import answer_score, parse_pair, parse_single
from tools.judge.protocol import load_protocol
from tools.judge.stats import bootstrap_ci, paired_difference, summary

OUTPUTS = Path(__file__).parent / "outputs"


def _cases(name):
    return [(r["text"], r["expected"]) for r in read_jsonl(OUTPUTS / name)]


def write_predictions(run: Run, n: int = 3, reference: bool = True, testset="demo_eval", decoding="greedy"):
    rows = [
        {
            "id": f"q{i}",
            "instruction": f"Explain item {i}.",
            "input": "",
            "answer": f"Item {i} is explained here.",
            "reference": f"Reference for item {i}." if reference else None,
            "decoding": decoding,
        }
        for i in range(n)
    ]
    return atomic_write_jsonl(run.predictions(testset, decoding), rows)


@pytest.mark.parametrize("text,expected", _cases("pairwise.jsonl"))
def test_parse_pairwise_shapes(text, expected):
    p = parse_pair(text)
    if expected is None:
        assert p.scores is None and p.reason  # recorded unparsed with a reason, never a 0
    else:
        assert p.scores == tuple(float(x) for x in expected)


@pytest.mark.parametrize("text,expected", _cases("single.jsonl"))
def test_parse_single_shapes(text, expected):
    p = parse_single(text)
    assert (p.scores is None) if expected is None else p.scores == (float(expected[0]),)


def test_order_maps_scores_to_the_answer():
    p = parse_pair("3 9\n...")
    assert answer_score("pairwise", "ab", p) == (3.0, 9.0)  # answer is Assistant 2
    assert answer_score("pairwise", "ba", p) == (9.0, 3.0)  # answer is Assistant 1
    assert answer_score("pairwise", "ab", parse_pair("none")) == (None, None)


def test_protocols_are_data():
    hw5 = load_protocol("hw5_pairwise")
    msgs = hw5.messages("Q?", "ANSWER", "REF", "ab")
    user = msgs[1]["content"]
    assert user.index("REF") < user.index("ANSWER") and "two values" in user
    swapped = hw5.messages("Q?", "ANSWER", "REF", "ba")[1]["content"]
    assert swapped.index("ANSWER") < swapped.index("REF")
    single = load_protocol("single")
    assert "[[rating]]" in single.messages("Q?", "A {braces} ok", None, "single")[1]["content"]
    assert hw5.orders(swap=True) == ["ab", "ba"] and single.orders(swap=True) == ["single"]


def test_bootstrap_and_paired_difference():
    s = summary([4, 5, 6, 5, 4, 6])
    assert s["ci95"][0] < s["mean"] < s["ci95"][1] and s["n"] == 6
    assert bootstrap_ci([]) is None
    a = {f"q{i}": float(i % 7) for i in range(150)}
    shifted = {k: v + 1.0 for k, v in a.items()}
    d = paired_difference(a, shifted)
    assert d["significant"] and d["diff"] == pytest.approx(1.0) and d["n_paired"] == 150
    # a 0.1 gain that is really noise: half the prompts +2, half -1.8
    noisy = {k: v + (2.0 if i % 2 else -1.8) for i, (k, v) in enumerate(a.items())}
    d = paired_difference(a, noisy)
    assert d["diff"] == pytest.approx(0.1) and not d["significant"] and d["ci95"][0] < 0 < d["ci95"][1]


def test_price_table_is_the_one_place():
    assert price_of("gpt-4o-mini") == {"input": 0.15, "output": 0.60}
    assert cost_usd("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert cost_usd("gpt-4o-mini", 10, 10, billed=False) == 0.0
    assert cost_usd("no-such-model", 10, 10) is None


def test_cache_cuts_a_torn_line_and_never_doubles(tmp_path):
    path = tmp_path / "c.jsonl"
    c = JudgeCache(path)
    c.add({"key": "a", "v": 1})
    c.add({"key": "a", "v": 2})  # a second answer for the same key is not counted
    with open(path, "a") as f:
        f.write('{"key": "b", "v"')  # a writer killed mid-line
    c2 = JudgeCache(path)
    assert set(c2.rows) == {"a"} and c2.get("a")["v"] == 1
    c2.add({"key": "b", "v": 3})
    assert [r["key"] for r in read_jsonl(path)] == ["a", "b"]


def test_dry_run_counts_calls_tokens_cost_and_spends_nothing(out_dir, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    run = Run("tiny", "t", "dry")
    write_predictions(run, n=5)
    rc = judge.main(
        ["--run", run.name, "--testset", "demo_eval", "--decoding", "greedy", "--dry-run", "--swap"]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "10 to make" in out and "gpt-4o-mini" in out and "$0.00" in out
    assert not run.judgments("demo_eval", "greedy").exists() and not (out_dir / "cache").exists()


def test_cost_limit_refuses_before_any_call(out_dir, monkeypatch, capsys):
    # refused from the estimate alone: no cache file (nothing was judged) and no result written
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    run = Run("tiny", "t", "cost")
    write_predictions(run, n=5)
    args = ["--run", run.name, "--testset", "demo_eval", "--max-cost", "0.000001"]
    assert judge.main(args) == 2
    assert "above the limit" in capsys.readouterr().err
    assert not run.scores("demo_eval", "greedy").exists() and not (out_dir / "cache").exists()


def test_unknown_price_on_openai_is_refused_not_free(out_dir, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    run = Run("tiny", "t", "price")
    write_predictions(run, n=2)
    assert judge.main(["--run", run.name, "--testset", "demo_eval", "--model", "gpt-9-ultra"]) == 2
    assert "no price for gpt-9-ultra" in capsys.readouterr().err
    assert not run.scores("demo_eval", "greedy").exists()


def test_bad_input_names_file_row_field(out_dir, capsys):
    run = Run("tiny", "t", "bad")
    path = run.predictions("demo_eval", "greedy")
    atomic_write_jsonl(
        path, [{"id": "a", "instruction": "x", "answer": "y"}, {"id": "b", "instruction": "x"}]
    )
    assert judge.main(["--run", run.name, "--testset", "demo_eval", "--offline"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "row 2" in err and "'answer'" in err
    write_predictions(run, n=2, reference=False)
    assert judge.main(["--run", run.name, "--testset", "demo_eval", "--protocol", "hw5_pairwise"]) == 2
    err = capsys.readouterr().err
    assert "row 1" in err and "'reference'" in err and "--protocol single" in err
    assert not run.judgments("demo_eval", "greedy").exists()


def test_compare_reports_paired_difference(out_dir, capsys):
    def judged(variant, bump):
        run = Run("tiny", "t", variant)
        rows = [
            {
                "key": f"{variant}{i}",
                "id": f"q{i}",
                "protocol": "hw5_pairwise",
                "judge_model": "gpt-4o-mini",
                "order": "ab",
                "score_answer": 5.0 + (i % 3) + bump,
                "parsed": True,
            }
            for i in range(40)
        ]
        atomic_write_jsonl(run.judgments("demo_eval", "greedy"), rows)
        return run

    a, b = judged("a", 0.0), judged("b", 0.5)
    d = judge.compare_runs(b.name, a.name, "demo_eval", "greedy")
    assert d["diff"] == pytest.approx(0.5) and d["significant"] and d["n_paired"] == 40
    assert "+0.500" in capsys.readouterr().out
    json.dumps(d)
