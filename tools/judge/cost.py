"""Tokens and dollars: the one price table (templates/judge/prices.yaml) and the dry-run estimate.

Token counts come from tiktoken's o200k_base (GPT-4o's encoding) when its file is available
locally; without network access it is not, and the estimate falls back to words x 4/3, which is
within ~15 % for English prose. Actual usage always comes from the API's own `usage` field.
"""

from __future__ import annotations

import functools
import math

from tools.core.profiles import load_yaml
from tools.judge.protocol import JUDGE_TEMPLATES

PRICES_FILE = JUDGE_TEMPLATES / "prices.yaml"
OPENAI_HOSTS = ("api.openai.com",)


@functools.cache
def prices() -> dict[str, dict[str, float]]:
    return load_yaml(PRICES_FILE) or {}


def price_of(model: str) -> dict[str, float] | None:
    return prices().get(model)


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int, billed: bool = True) -> float | None:
    """Dollars for this usage; 0 for an unbilled (local/offline) judge; None for an unknown price."""
    if not billed:
        return 0.0
    p = price_of(model)
    if p is None:
        return None
    return (prompt_tokens * p["input"] + completion_tokens * p["output"]) / 1e6


@functools.cache
def _encoder():
    try:
        import tiktoken

        return tiktoken.get_encoding("o200k_base")
    except Exception:  # no network and no cached encoding file: use the words estimate
        return None


def count_tokens(text: str) -> int:
    enc = _encoder()
    if enc is not None:
        return len(enc.encode(text))
    return math.ceil(len(text.split()) * 4 / 3) + 1


def tokenizer_name() -> str:
    return "tiktoken o200k_base" if _encoder() is not None else "words x 4/3 (tiktoken file not available)"


def messages_tokens(messages: list[dict]) -> int:
    # ~4 tokens of chat framing per message, as OpenAI's cookbook counts them.
    return sum(count_tokens(m["content"]) + 4 for m in messages) + 3
