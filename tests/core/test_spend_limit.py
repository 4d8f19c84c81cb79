"""The judge's cost limit holds on what the replies report, not only on the estimate (issue 29): once the
spend is above --max-cost, no further call is made, and the run says why (exit 1, nothing cached for
the uncalled judgments)."""

from __future__ import annotations

import json

from tests.fake_openai import completion
from tools.core.paths import Run
from tools.judge.cli import main

RUN = "m/s/v"


def greedy(call) -> dict:
    """A reply for `chat_server` that reports ten million prompt tokens (about $1.50 at gpt-4o-mini's price)."""
    out = completion(call.body, "7 8")
    out["choices"][0]["finish_reason"] = "stop"
    out["usage"] = {"prompt_tokens": 10_000_000, "completion_tokens": 2, "total_tokens": 10_000_002}
    return out


def test_a_reply_over_the_limit_stops_further_calls(out_dir, monkeypatch, capsys, chat_server):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    p = Run.parse(RUN).predictions("t", "greedy")
    p.parent.mkdir(parents=True)
    rows = [
        {
            "id": f"q{i}",
            "instruction": f"Explain {i}.",
            "input": "",
            "answer": f"A {i}.",
            "reference": f"R {i}.",
        }
        for i in range(4)
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    srv = chat_server(greedy)
    args = ["--run", RUN, "--testset", "t", "--base-url", srv.url, "--model", "gpt-4o-mini"]
    rc = main([*args, "--concurrency", "1", "--max-retries", "0", "--max-cost", "1"])
    err = capsys.readouterr().err
    hits = len(srv.bodies)
    assert hits == 1, f"{hits} calls made after the spend passed the limit"
    assert rc == 1, err
    assert "3 not called" in err and "above the limit --max-cost $1.00" in err, err
    scores = json.loads(Run.parse(RUN).scores("t", "greedy").read_text())
    assert scores["n_failed"] == 3 and scores["cost_usd"] > 1.0
