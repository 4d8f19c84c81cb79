"""Judge throughput: our client's concurrency against a local OpenAI-compatible stub with a fixed delay.

The stub (aiohttp, loopback) answers every chat completion after `delay` seconds with a realistic
judge answer, so what is measured is the client side: the semaphore, the `openai` async client and
the bookkeeping, not a model. Speed-up at concurrency C = throughput at C / throughput at 1 (target
>= 0.8 x C up to 16). Then 150 judgments are run once, and re-run from the cache: the re-run must
take under a second and make no call (the stub counts the requests it gets).
At 50 ms the C=16 level needs ~320 calls/s, i.e. the client's ~1-2 ms of CPU per call on a free
core; on a busy 2-core machine that, not the concurrency, is the limit: `--delay 0.2` (still far
below GPT-4o-mini's real latency of ~1 s) shows the scaling itself.

Usage:
    python -m tools.bench.judge [--quick] [--delay 0.05]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass

from aiohttp import web

from filelib import atomic_write_jsonl, run_main
from tools.core.args import command, opt
from tools.core.paths import ROOT
from tools.core.runinfo import command_of
from tools.judge import Endpoint, Task, run_tasks

ANSWER = "7 8\nAssistant 2's answer is relevant and accurate; Assistant 1 gives a little more detail."


class Stub:
    """An OpenAI-compatible /v1/chat/completions that sleeps `delay` s.

    It runs in a process of its own (`--serve-stub`), so its work does not share our interpreter
    lock and the numbers are the client's; `hits` asks it how many requests it has had.
    """

    def __init__(self, delay: float):
        self.delay, self._hits = delay, 0

    async def hits_handler(self, req: web.Request) -> web.Response:
        return web.json_response({"hits": self._hits})

    async def handle(self, req: web.Request) -> web.Response:
        self._hits += 1
        await req.read()
        await asyncio.sleep(self.delay)
        return web.json_response(
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": 0,
                "model": "stub",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 400, "completion_tokens": 40, "total_tokens": 440},
            }
        )

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_get("/hits", self.hits_handler)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, backlog=256)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    def serve(self) -> None:
        """In the child: start, print the port, serve until stdin closes."""
        loop = asyncio.new_event_loop()
        port = loop.run_until_complete(self._start())
        print(port, flush=True)
        threading.Thread(
            target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(loop.stop)), daemon=True
        ).start()
        loop.run_forever()

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            [*command_of(main), "--serve-stub", "--delay", str(self.delay)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"
        return self.url + "/v1"

    @property
    def hits(self) -> int:
        with urllib.request.urlopen(f"{self.url}/hits", timeout=5) as r:
            return json.loads(r.read())["hits"]

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()  # the child stops when its stdin closes
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def throughput(url: str, concurrency: int, n: int) -> float:
    """Judgments per second for n calls at this concurrency."""
    msgs = [{"role": "user", "content": "[Question]\nName a prime.\n\n[System]\nScore both."}]
    tasks = [Task(f"k{i}", msgs) for i in range(n)]
    ep = Endpoint(model="stub", base_url=url, concurrency=concurrency, max_retries=0, timeout=30)
    done = []
    stats = asyncio.run(run_tasks(tasks, ep, lambda t, text, u, e: done.append(e)))
    if len(done) != n or any(done):
        raise RuntimeError(f"stub calls failed: {[e for e in done if e][:3]}")
    return n / stats.seconds


@contextlib.contextmanager
def _out_root(path: str):
    old = os.environ.get("SMALLDATA_OUT")
    os.environ["SMALLDATA_OUT"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SMALLDATA_OUT", None)
        else:
            os.environ["SMALLDATA_OUT"] = old


def cached_rerun(url: str, stub: Stub, n: int = 150) -> list[str]:
    from tools.core.paths import Run
    from tools.judge import run_judge

    with tempfile.TemporaryDirectory(prefix="bench-judge-") as tmp, _out_root(tmp):
        run = Run("bench", "judge", "cache")
        rows = [
            {"id": f"q{i}", "instruction": f"Question {i}: explain.", "input": "",
             "answer": f"Answer {i}. " * 30, "reference": f"Reference {i}. " * 30}
            for i in range(n)
        ]  # fmt: skip
        atomic_write_jsonl(run.predictions("hw5_test", "greedy"), rows)
        kw = dict(
            base_url=url, model="stub", concurrency=16, max_retries=0, say=lambda *a: None, progress_bar=False
        )
        t0 = time.perf_counter()
        first = run_judge(run.name, "hw5_test", "greedy", **kw)["scores"]
        t_first = time.perf_counter() - t0
        hits = stub.hits
        t0 = time.perf_counter()
        again = run_judge(run.name, "hw5_test", "greedy", **kw)["scores"]
        t_again = time.perf_counter() - t0
        calls = stub.hits - hits
    ok = t_again < 1.0 and calls == 0 and again["n"] == first["n"] == n
    return [
        f"{n} judgments: first run {t_first:.2f} s ({first['calls_this_run']} calls at concurrency 16)",
        f"cached re-run: {t_again:.3f} s, {calls} calls, n={again['n']} "
        f"({'OK' if ok else 'FAIL'}: target < 1 s and 0 calls)",
    ]


def bench(quick: bool = False, delay: float = 0.05) -> list[str]:
    levels = [1, 2, 4] if quick else [1, 2, 4, 8, 16]
    lines = [
        f"stub delay {delay * 1000:.0f} ms per call; speed-up = throughput at C / at 1 (target >= 0.8 x C); "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (the client needs ~1-2 ms CPU per call)"
    ]
    stub = Stub(delay)
    with stub as url:
        throughput(url, 4, 8)  # warm-up: imports, first connections
        base = None
        for c in levels:
            n = max(32, 16 * c) if not quick else max(8, 4 * c)  # enough rounds to amortise connecting
            rate = throughput(url, c, n)
            base = base or rate
            sp = rate / base
            lines.append(
                f"C={c:>2}: {rate:6.1f} judgments/s, speed-up {sp:5.2f} x "
                f"({sp / c:.2f} of ideal; {'OK' if sp >= 0.8 * c else 'BELOW'} target)"
            )
        lines += cached_rerun(url, stub)
    return lines


@dataclass
class BenchArgs:
    quick: bool = opt(False, help="smaller sizes, for a first look")
    delay: float = opt(0.05, help="the stub endpoint's seconds per reply", nonneg=True)
    serve_stub: bool = opt(False, help="(internal) serve the stub endpoint")


@command(BenchArgs, __doc__)
def main(a: BenchArgs) -> int:
    if a.serve_stub:
        Stub(a.delay).serve()
        return 0
    for line in bench(a.quick, a.delay):
        print(line)
    return 0


if __name__ == "__main__":
    run_main(main)
