"""Conversations of several exchanges, kept whole (issue 32): read from ShareGPT, OpenAI messages or LIMA's
list of strings into a row's `turns`, and written in LLaMA-Factory's sharegpt form, which trains on every
turn. A single-turn set is still written as Alpaca (`to_records`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugins.pools.readfile import DataError

USER_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant", "chatgpt", "bard", "model"}
SYSTEM_ROLES = {"system"}


def _turns(turns: Any) -> Any:
    """Turns given as plain strings ["question", "answer", ...] alternate user and assistant."""
    if isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns):
        return [{"from": "human" if j % 2 == 0 else "gpt", "value": t} for j, t in enumerate(turns)]
    return turns


def _role(turn: Any) -> str:
    if not isinstance(turn, dict):
        return ""
    r = turn.get("from", turn.get("role", ""))
    return r.lower() if isinstance(r, str) else ""


def _text(turn: dict) -> Any:
    return turn.get("value", turn.get("content"))


def _str(val: Any, path: Path, row: int, name: str, required: bool) -> str:
    if val is None:
        if required:
            raise DataError(f"{path}: row {row}: field '{name}' is missing")
        return ""
    if not isinstance(val, str):
        raise DataError(f"{path}: row {row}: field '{name}' must be a string, found {type(val).__name__}")
    if required and not val.strip():
        raise DataError(f"{path}: row {row}: field '{name}' is empty")
    return val


def whole(rec: dict, key: str, path: Path, row: int) -> tuple[list[dict], str]:
    """(every user/assistant turn as {from, value}, the system text) of a conversation of several
    exchanges; ([], "") for one question and its answer. Turns must alternate user, assistant (a DataError
    names the first that does not); a last question left unanswered is dropped."""
    turns = _turns(rec.get(key))
    system = " ".join(str(_text(t) or "") for t in turns if _role(t) in SYSTEM_ROLES).strip()
    said = [t for t in turns if _role(t) not in SYSTEM_ROLES]
    if len(said) <= 2:
        return [], ""
    out = []
    for j, t in enumerate(said):
        want = USER_ROLES if j % 2 == 0 else ASSISTANT_ROLES
        if _role(t) not in want:
            raise DataError(
                f"{path}: row {row}: field '{key}': turn {j + 1} is {_role(t)!r}, expected "
                f"{'a user' if j % 2 == 0 else 'an assistant'} turn (a conversation alternates them)"
            )
        value = _str(_text(t), path, row, f"{key}[{j}].value", True)
        out.append({"from": "human" if j % 2 == 0 else "gpt", "value": value})
    if len(out) % 2:
        out.pop()  # a last question without its answer: nothing to train on (LLaMA-Factory drops such rows)
    return (out, system) if len(out) > 2 else ([], "")


def to_sharegpt(row: dict) -> dict:
    """A normalised row as LLaMA-Factory's sharegpt record (every turn; one exchange for a single-turn row,
    its input joined to the instruction as LLaMA-Factory's alpaca reader joins them)."""
    turns = row.get("turns") or [
        {"from": "human", "value": "\n".join(x for x in (row["instruction"], row["input"]) if x)},
        {"from": "gpt", "value": row["output"]},
    ]
    out: dict = {"id": row["id"], "conversations": [dict(t) for t in turns]}
    if row.get("system"):
        out["system"] = row["system"]
    if row.get("score") is not None:
        out["score"] = row["score"]
    return out


def to_records(rows: list[dict]) -> tuple[list[dict], str]:
    """(records, formatting) for one published file: sharegpt when any row is a conversation of several
    exchanges (so none is cut to its first), else alpaca."""
    if any(r.get("turns") for r in rows):
        return [to_sharegpt(r) for r in rows], "sharegpt"
    return [to_alpaca(r) for r in rows], "alpaca"


def to_alpaca(row: dict) -> dict:
    """A normalised row as LLaMA-Factory's Alpaca record (id and score kept as extra columns)."""
    out = {"id": row["id"], "instruction": row["instruction"], "input": row["input"], "output": row["output"]}
    if row.get("score") is not None:
        out["score"] = row["score"]
    return out
