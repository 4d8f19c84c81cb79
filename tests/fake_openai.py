"""A fake OpenAI-compatible chat endpoint for tests: `POST /v1/chat/completions` served by a real HTTP
server (aiohttp) on a loopback port, answering each request with a scripted reply function and
recording every request body. With an upstream URL a reply can forward the request to a real server
(`llamafactory-cli api` on the tiny model) and rewrite or fault its answer.

The `chat_server` fixture (exposed by the conftest.py of tests/core, tests/judge and tests/refine)
is a factory: `srv = chat_server(reply, upstream=None)`; `srv.url` is the client's base URL, `srv.bodies`
the request bodies so far; every server it started stops when the test ends.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest


def completion(body: dict, text: str) -> dict:
    """An OpenAI chat completion answering `text` to the request `body`, sized like the first line of a
    real GPT-4o-mini judge answer: 300 prompt tokens, cut at 5 completion tokens."""
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 300, "completion_tokens": 5, "total_tokens": 305},
    }


@dataclass
class Call:
    """One request, as a reply function sees it."""

    body: dict  # the JSON body
    request: object  # the aiohttp request (its transport, to drop the connection)
    server: ChatServer

    @property
    def prompt(self) -> str:
        """The last message's text: where the tests plant their tags."""
        return self.body["messages"][-1]["content"]

    async def forward(self) -> dict:
        """The upstream server's own completion for this body (usage, ids, finish reason all real)."""
        return await self.server.forward(self.body)


@dataclass
class ChatServer:
    """`POST /v1/chat/completions` on 127.0.0.1, on its own event-loop thread.

    `reply(call)` (plain or async) answers each request: a str is sent as a completion's text
    (`completion`), a dict as the JSON body, an aiohttp response as it is. Each request's body is
    appended to `bodies`, in arrival order, before its reply runs. `stopping` is set when the server
    stops: a reply that waits (a hang, a held request) should give up then."""

    reply: Callable
    upstream: str | None = None  # a `.../v1` URL that `call.forward()` asks
    bodies: list[dict] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def start(self) -> ChatServer:
        from aiohttp import web

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def handle(req):
            body = await req.json()
            self.bodies.append(body)
            out = self.reply(Call(body, req, self))
            if inspect.isawaitable(out):
                out = await out
            if isinstance(out, web.StreamResponse):
                return out
            return web.json_response(completion(body, out) if isinstance(out, str) else out)

        async def start():
            import aiohttp

            self.session = aiohttp.ClientSession() if self.upstream else None
            app = web.Application()
            # any prefix: a judge on another path of the same host (`.../second/v1`) reaches it too
            app.router.add_post("/{prefix:.+}/chat/completions", handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def forward(self, body: dict) -> dict:
        if self.session is None:
            raise RuntimeError("this ChatServer has no upstream to forward to")
        async with self.session.post(f"{self.upstream}/chat/completions", json=body) as r:
            return await r.json()

    def stop(self) -> None:
        self.stopping.set()

        async def stop():
            if self.session is not None:
                await self.session.close()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture()
def chat_server():
    """Factory: `chat_server(reply, upstream=None)` starts a ChatServer and returns it, started."""
    started: list[ChatServer] = []

    def start(reply: Callable, upstream: str | None = None) -> ChatServer:
        started.append(ChatServer(reply, upstream).start())
        return started[-1]

    yield start
    for srv in reversed(started):
        srv.stop()
