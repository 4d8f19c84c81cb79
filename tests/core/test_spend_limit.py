"""The judge's cost limit holds on what the replies report, not only on the estimate (issue 29): once the
spend is above --max-cost, no further call is made, and the run says why (exit 1, nothing cached for
the uncalled judgments)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tools.core.paths import Run
from tools.judge.cli import main

RUN = "m/s/v"


class Greedy(BaseHTTPRequestHandler):
    """A chat endpoint whose every reply reports ten million prompt tokens (about $1.50 at gpt-4o-mini's price)."""

    hits = 0

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).hits += 1
        body = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o-mini",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "7 8"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 10_000_000, "completion_tokens": 2, "total_tokens": 10_000_002},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_a_reply_over_the_limit_stops_further_calls(out_dir, monkeypatch, capsys):
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
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Greedy)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        args = ["--run", RUN, "--testset", "t", "--base-url", url, "--model", "gpt-4o-mini"]
        rc = main([*args, "--concurrency", "1", "--max-retries", "0", "--max-cost", "1"])
    finally:
        srv.shutdown()
    err = capsys.readouterr().err
    assert Greedy.hits == 1, f"{Greedy.hits} calls made after the spend passed the limit"
    assert rc == 1, err
    assert "3 not called" in err and "above the limit --max-cost $1.00" in err, err
    scores = json.loads(Run.parse(RUN).scores("t", "greedy").read_text())
    assert scores["n_failed"] == 3 and scores["cost_usd"] > 1.0
