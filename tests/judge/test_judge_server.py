"""The judge against a real OpenAI-compatible server (`llamafactory-cli api` on the tiny model),
with faults injected by a small aiohttp proxy in front of it.

The proxy reads a "[case:<name>#<n>]" tag from the question and acts per (case, attempt):
429 with Retry-After, 500 once or always, a hang past the client's time-out, a dropped
connection, a body that is not JSON, a garbled answer, or plain pass-through. The tiny random
model answers gibberish, so for the paths that should end scored the proxy rewrites the model's
text into a realistic judge answer ("7 <score>\\n...") - the server and the HTTP round trip are real,
only the words are ours. The unmodified pass-through shows the unparsed path.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from filelib import atomic_write_jsonl, read_jsonl
from tools.core.paths import ROOT, Run
from tools.judge.cache import cache_path, endpoint_label
from tools.judge.cli import run_judge
from tools.judge.protocol import JUDGE_TEMPLATES

pytestmark = pytest.mark.slow

SECRET = "sk-test-THIS-KEY-MUST-NEVER-BE-WRITTEN-0123456789"
TIMEOUT = 5.0  # the client's per-attempt time-out (generous: the server queues requests on a busy CPU)
HANG_S = 7.0  # the hang lasts longer
TAG = re.compile(r"\[case:(\w+)#(\d+)\]")


class Faults:
    """The proxy's script: a reply for `chat_server` in front of the real server, per (case, attempt)
    as the module docstring says. `attempts` counts each (case, n) as it arrives; "slow" cases wait
    for `release`; `url` is the proxy's once `start` has run."""

    def __init__(self):
        self.attempts: collections.Counter = collections.Counter()
        self.release = threading.Event()  # "slow" cases wait for it
        self.url = ""

    def start(self, chat_server, upstream: str) -> Faults:
        self.server = chat_server(self, upstream=upstream)
        self.url = self.server.url
        return self

    async def __call__(self, call) -> dict | web.StreamResponse:
        case, n = TAG.search(call.prompt).groups()
        self.attempts[case, n] += 1
        first = self.attempts[case, n] == 1
        stopping = call.server.stopping
        if case == "r429" and first:
            return web.json_response(
                {"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": "1"}
            )
        if (case == "r500" and first) or case == "fail500":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if case == "hang" and first:
            t_end = time.time() + HANG_S
            while time.time() < t_end and not stopping.is_set():
                await asyncio.sleep(0.05)
            return web.json_response({"error": {"message": "too late"}}, status=504)
        if case == "drop" and first:
            call.request.transport.close()
            return web.Response()
        if case == "badjson":
            return web.Response(text='{"id": "x", "choices": [', content_type="application/json")
        if case == "slow":
            while not (self.release.is_set() or stopping.is_set()):
                await asyncio.sleep(0.05)
        if stopping.is_set():
            return web.json_response({"error": {"message": "proxy stopping"}}, status=503)
        body = await call.forward()
        if case != "plain":  # see the module docstring: realistic words for the scored paths
            body["choices"][0]["message"]["content"] = (
                f"7 {int(n) % 10 + 1}\nAssistant 2 answered the question; Assistant 1 was more detailed."
                if case != "garbled"
                else "Asistant #1 ::: g00d ;; Asistant #2 ::: ok\x00"
            )
        return body


@pytest.fixture(scope="module")
def server(tiny_api):
    return tiny_api


@pytest.fixture()
def proxy(server, chat_server) -> Faults:
    return Faults().start(chat_server, server)


@pytest.fixture()
def short_protocol(tmp_path) -> str:
    # HW5's prompt with few answer tokens, so the tiny model's gibberish is quick to generate
    d = yaml.safe_load((JUDGE_TEMPLATES / "hw5_pairwise.yaml").read_text())
    d.update(name="hw5_pairwise_short", max_tokens=12)
    path = tmp_path / "hw5_pairwise_short.yaml"
    path.write_text(yaml.safe_dump(d))
    return str(path)


def write_cases(run: Run, cases: dict[str, int]) -> list[str]:
    rows, n = [], 0
    for case, k in cases.items():
        for _ in range(k):
            rows.append(
                {
                    "id": f"{case}-{n}",
                    "instruction": f"[case:{case}#{n}] Name a prime number.",
                    "input": "",
                    "answer": f"{n % 7 + 2} is prime.",
                    "reference": "7 is a prime number.",
                }
            )
            n += 1
    atomic_write_jsonl(run.predictions("demo_eval", "greedy"), rows)
    return [r["id"] for r in rows]


CASES = {
    "ok": 3,
    "r429": 2,
    "r500": 2,
    "hang": 1,
    "drop": 2,
    "garbled": 2,
    "plain": 2,
    "fail500": 1,
    "badjson": 1,
}
SCORED = {"ok", "r429", "r500", "hang", "drop"}
UNPARSED = {"garbled", "plain"}
FAILED = {"fail500", "badjson"}


def test_every_judgment_ends_scored_unparsed_or_failed(out_dir, proxy, short_protocol, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    run = Run("tiny", "judge", "faults")
    ids = write_cases(run, CASES)
    kw = dict(
        protocol=short_protocol,
        base_url=proxy.url,
        model="tiny-judge",
        concurrency=4,
        timeout=TIMEOUT,
        max_retries=2,
        say=lambda *a: None,
    )
    t0 = time.time()
    res = run_judge(run.name, "demo_eval", "greedy", **kw)
    took = time.time() - t0
    rows = list(read_jsonl(run.judgments("demo_eval", "greedy")))
    by_case = collections.defaultdict(list)
    for r in rows:
        by_case[r["id"].split("-")[0]].append(r)

    # none lost, none duplicated: one row per prediction, in prediction order
    assert [r["id"] for r in rows] == ids and len({r["key"] for r in rows}) == len(ids) == 16
    scored = [r for c in SCORED for r in by_case[c]]
    unparsed = [r for c in UNPARSED for r in by_case[c]]
    failed = [r for c in FAILED for r in by_case[c]]
    # 10 of 16 scored (3 clean, 2 after a 429, 2 after a 500, 1 after a hang, 2 after a drop),
    # 4 unparsed (2 garbled, 2 the tiny model's own words), 2 failed (500 every time, a broken body)
    assert len(scored) == 10 and all(r["parsed"] and r["score_answer"] is not None for r in scored)
    assert all(r["score_answer"] == int(r["id"].split("-")[1]) % 10 + 1 for r in scored)
    assert len(unparsed) == 4 and all(not r["parsed"] and r["error"] is None and r["raw"] for r in unparsed)
    assert all(r["score_answer"] is None for r in unparsed + failed)  # never a 0
    assert len(failed) == 2 and all(r["error"] and not r["parsed"] for r in failed)
    assert "InternalServerError" in by_case["fail500"][0]["error"]
    s = res["scores"]
    assert (s["n"], s["n_unparsed"], s["n_failed"], s["n_items"]) == (10, 4, 2, 16)
    assert s["offline"] is False and s["comparable_with_gpt4o_mini"] is False
    assert s["prompt_tokens"] > 0 and s["cost_usd"] == 0.0  # a local endpoint is not billed

    # the client's own retries did the work: one retry per transient fault, 3 tries for the hopeless 500
    a = proxy.attempts
    assert all(a[k] == 2 for k in a if k[0] in {"r429", "r500", "hang", "drop"}), dict(a)
    assert all(a[k] == 1 for k in a if k[0] in {"ok", "garbled", "plain", "badjson"}), dict(a)
    assert all(a[k] == 3 for k in a if k[0] == "fail500"), dict(a)
    assert s["attempts_this_run"] == sum(a.values()) and s["calls_this_run"] == 16
    assert took >= 1.0  # Retry-After: 1 was honoured

    # a re-run calls only for what failed; the cached rest is not asked again
    before = sum(a.values())
    res2 = run_judge(run.name, "demo_eval", "greedy", **kw)
    assert res2["scores"]["calls_this_run"] == 2
    assert {k[0] for k, v in a.items() if v} == set(CASES) and sum(a.values()) - before == 3 + 1
    assert len(list(read_jsonl(cache_path(endpoint_label("tiny-judge", proxy.url))))) == 14

    # the key lives in the environment only
    for f in Path(out_dir).rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text(errors="replace"), f


def test_killed_run_resumes_with_nothing_lost_or_doubled(out_dir, proxy, short_protocol):
    run = Run("tiny", "judge", "killed")
    ids = write_cases(run, {"ok": 4, "slow": 4})
    cmd = [
        sys.executable,
        "-m",
        "tools.judge",
        "--run",
        run.name,
        "--testset",
        "demo_eval",
        "--protocol",
        short_protocol,
        "--base-url",
        proxy.url,
        "--model",
        "tiny-judge",
        "--concurrency",
        "8",
    ]
    env = {**os.environ, "SMALLDATA_OUT": str(out_dir)}
    env.pop("OPENAI_API_KEY", None)
    cache = cache_path(endpoint_label("tiny-judge", proxy.url))
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while len(list(read_jsonl(cache))) < 4:  # the 4 quick ones landed; the slow 4 are in flight
            assert time.time() < deadline and child.poll() is None
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with open(cache, "a") as f:
        f.write('{"key": "torn')  # as if killed mid-write
    assert not run.judgments("demo_eval", "greedy").exists()  # results are written only when complete

    proxy.release.set()
    res = run_judge(
        run.name,
        "demo_eval",
        "greedy",
        protocol=short_protocol,
        base_url=proxy.url,
        model="tiny-judge",
        say=lambda *a: None,
    )
    rows = list(read_jsonl(run.judgments("demo_eval", "greedy")))
    assert [r["id"] for r in rows] == ids and all(r["parsed"] for r in rows)
    assert res["scores"]["calls_this_run"] == 4 and sum(r["cached"] for r in rows) == 4
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 8
