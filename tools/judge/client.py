"""Many chat completions at once through the `openai` client's async API, at bounded concurrency.

Retries are the client's own: `max_retries` with exponential backoff, honouring `Retry-After`
on 429, and retrying 5xx, time-outs and dropped connections; `timeout` bounds each attempt.
What it lacks and we add: a semaphore so at most `concurrency` calls are in flight, a count of
HTTP attempts (retries included) through an httpx event hook, and turning a call that still
fails, or a response that is not a chat completion, into an error string (the key redacted),
so every task ends with text or an error and the caller records it either way. `stop()`, asked
before each call, ends the spending early (the judge's cost limit on the spend the replies report):
the tasks not yet started end with its reason as their error, uncalled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import openai

SEED = 42


@dataclass(frozen=True)
class Task:
    key: str
    messages: list[dict]


@dataclass
class Endpoint:
    model: str
    base_url: str | None = None
    api_key: str | None = None  # from the environment only; never written anywhere
    timeout: float = 60.0
    max_retries: int = 5
    concurrency: int = 8
    max_tokens: int = 512
    seed: int | None = SEED  # None: no seed in the request (HW5's official call sends none)
    temperature: float = 0.0


@dataclass
class CallStats:
    calls: int = 0
    attempts: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: dict = field(default_factory=dict)


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "[redacted]") if secret else text


def make_client(ep: Endpoint, stats: CallStats) -> openai.AsyncOpenAI:
    async def count_attempt(request):
        stats.attempts += 1

    http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [count_attempt]})
    return openai.AsyncOpenAI(
        api_key=ep.api_key or "EMPTY",  # local OpenAI-compatible servers want some key
        base_url=ep.base_url,
        timeout=ep.timeout,
        max_retries=ep.max_retries,
        http_client=http,
    )


async def _one(client, ep: Endpoint, task: Task, sem: asyncio.Semaphore, stats: CallStats, stop=None):
    async with sem:
        why = stop() if stop is not None else None
        if why:
            stats.errors["NotCalled"] = stats.errors.get("NotCalled", 0) + 1
            return None, None, f"NotCalled: {why}"
        stats.calls += 1
        try:
            extra = {} if ep.seed is None else {"seed": ep.seed}
            resp = await client.chat.completions.create(
                model=ep.model,
                messages=task.messages,
                temperature=ep.temperature,
                max_tokens=ep.max_tokens,
                **extra,
            )
            text = resp.choices[0].message.content
            if text is None:
                raise ValueError("the completion has no text")
            u = resp.usage
            usage = {
                "prompt_tokens": int(getattr(u, "prompt_tokens", 0) or 0),
                "completion_tokens": int(getattr(u, "completion_tokens", 0) or 0),
            }
            return text, usage, None
        except Exception as e:  # after the client's own retries: record it, never lose the task
            stats.failed += 1
            name = type(e).__name__
            if isinstance(e, AttributeError | IndexError | TypeError):
                name = "MalformedResponse"
            stats.errors[name] = stats.errors.get(name, 0) + 1
            return None, None, _redact(f"{name}: {e}", ep.api_key)[:500]


async def run_tasks(
    tasks: list[Task],
    ep: Endpoint,
    on_done: Callable[[Task, str | None, dict | None, str | None], None],
    stats: CallStats | None = None,
    stop: Callable[[], str | None] | None = None,
) -> CallStats:
    """Call the endpoint for every task; `on_done(task, text, usage, error)` as each one ends.
    `stop()` gives a reason to make no further call (or None to go on)."""
    stats = stats or CallStats()
    if not tasks:
        return stats
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sem = asyncio.Semaphore(max(1, ep.concurrency))
    client = make_client(ep, stats)
    async with client:

        async def run(task: Task):
            text, usage, error = await _one(client, ep, task, sem, stats, stop)
            on_done(task, text, usage, error)

        await asyncio.gather(*(run(t) for t in tasks))
    stats.seconds = loop.time() - t0
    return stats


def call_all(tasks, ep, on_done, stats=None, stop=None) -> CallStats:
    return asyncio.run(run_tasks(tasks, ep, on_done, stats, stop))
