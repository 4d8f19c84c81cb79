"""The offline judges: G-Eval scoring on a local model (every item scored) and --serve-local."""

from __future__ import annotations

import pytest

from filelib import atomic_write_jsonl, read_jsonl
from tools.core.paths import Run
from tools.judge import cli as judge
from tools.judge.offline import OfflineJudge
from tools.judge.protocol import load_protocol

pytestmark = pytest.mark.slow


def write_predictions(run: Run, n: int, reference: bool):
    rows = [
        {
            "id": f"q{i}",
            "instruction": f"What is {i} plus {i}?",
            "input": "",
            "answer": f"{i} plus {i} is {2 * i}." if i % 2 else "I like trains.",
            "reference": f"{i} + {i} = {2 * i}." if reference else None,
        }
        for i in range(n)
    ]
    atomic_write_jsonl(run.predictions("demo_eval", "greedy"), rows)


def test_distribution_is_a_proper_expectation(tiny_model):
    j = OfflineJudge(tiny_model)
    msgs = load_protocol("single").messages("What is 2+2?", "4", None, "single")
    dist, mass, n = j.distribution(msgs, "Rating: [[")
    assert len(dist) == 10 and sum(dist) == pytest.approx(1.0) and 0 < mass <= 1 and n > 50
    assert 1.0 <= j.expected(dist) <= 10.0


@pytest.mark.parametrize("reference,protocol", [(True, "hw5_pairwise"), (False, "single")])
def test_offline_judge_scores_every_item(out_dir, tiny_model, monkeypatch, reference, protocol, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # no key: the offline judge is chosen by itself
    run = Run("tiny", "judge", f"offline_{protocol}")
    write_predictions(run, 4, reference)
    args = ["--run", run.name, "--testset", "demo_eval", "--offline-model", str(tiny_model)]
    assert judge.main(args + (["--swap"] if reference else [])) == 0
    assert "NOT comparable" in capsys.readouterr().out
    scores = __import__("json").loads(run.scores("demo_eval", "greedy").read_text())
    rows = list(read_jsonl(run.judgments("demo_eval", "greedy")))
    assert (
        scores["protocol"] == protocol
        and scores["n"] == 4
        and scores["n_unparsed"] == scores["n_failed"] == 0
    )
    assert scores["offline"] is True and scores["comparable_with_gpt4o_mini"] is False
    assert scores["judge_model"] == "offline:tiny-smollm2" and "NOT comparable" in scores["note"]
    assert all(r["parsed"] and 1 <= r["score_answer"] <= 10 and "G-Eval" in r["raw"] for r in rows)
    assert len(rows) == (8 if reference else 4)
    if reference:
        assert scores["swap"]["position_bias"]["n"] == 4
    # a re-run is all cache
    assert judge.main(args + (["--swap"] if reference else [])) == 0
    again = __import__("json").loads(run.scores("demo_eval", "greedy").read_text())
    assert again["calls_this_run"] == 0 and again["mean"] == scores["mean"]


def test_serve_local_starts_and_stops_llamafactory_api(out_dir, tiny_model, monkeypatch, tmp_path):
    import urllib.request

    import yaml

    from tools.judge import serve as judge_serve
    from tools.judge.protocol import JUDGE_TEMPLATES

    urls = []
    real = judge_serve.serve_local

    def recording(*a, **kw):  # the real server; we only note its address to check it is gone after
        cm = real(*a, **kw)
        url = cm.__enter__()
        urls.append(url)
        try:
            yield url
        finally:
            cm.__exit__(None, None, None)

    monkeypatch.setattr(judge_serve, "serve_local", __import__("contextlib").contextmanager(recording))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    run = Run("tiny", "judge", "served")
    write_predictions(run, 2, True)
    short = yaml.safe_load((JUDGE_TEMPLATES / "hw5_pairwise.yaml").read_text()) | {"max_tokens": 16}
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(short))  # the tiny model's gibberish, kept short
    res = judge.run_judge(
        protocol=str(tmp_path / "short.yaml"),
        run=run.name,
        testset="demo_eval",
        decoding="greedy",
        serve_local=tiny_model,
        serve_template="smollm2",
        say=lambda *a: None,
        max_retries=0,
        timeout=120,
    )
    s = res["scores"]
    assert s["judge_model"] == "local:tiny-smollm2" and s["offline"] is True and s["calls_this_run"] == 2
    # the tiny model cannot follow the prompt: its answers are recorded unparsed with their raw text, not as 0
    assert s["n_unparsed"] + s["n"] == 2 and s["n_failed"] == 0
    rows = list(read_jsonl(run.judgments("demo_eval", "greedy")))
    assert all(r["raw"] for r in rows) and all(r["score_answer"] is None for r in rows if not r["parsed"])
    assert len(urls) == 1
    with pytest.raises(OSError):  # stopped: nothing listens there any more
        urllib.request.urlopen(f"{urls[0]}/models", timeout=2)
