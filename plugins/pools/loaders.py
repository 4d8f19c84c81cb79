"""Load an instruction pool or a prompt file, whatever its shape, into one normalised table.

Every row becomes `{id, instruction, input, output, score?}` (strings; `score` a float where the
file has one). Shapes, detected from the first record or forced with `shape=`:

    alpaca    {instruction, input?, output}                       (Stanford Alpaca, our own files)
    sharegpt  {id?, conversations: [{from, value}], score?}       (FastChat: HW5, Long-Is-More)
    openai    {messages: [{role, content}]}
    prompt    prompt-only evaluation files: `instruction`/`Instruction`/`prompt`/`text`/`question`,
              MT-Bench's `turns` (the first), or a conversation with a user turn and no answer;
              `output` is "" unless a reference is there (`output`, `reference`, `answer`,
              `response`), the input is `input` or Dolly's `context`. A training pool must have one.

A conversation of several exchanges (ShareGPT, OpenAI messages, LIMA's list of strings) is kept whole:
its row has `turns` (every user and assistant turn, `{from: human|gpt, value}`, in order) and `system`
where it has one; `instruction`/`output` are its first exchange (what single-turn strategies would see,
so they refuse such rows with a count: plugins.publishing.pipeline) and `Table.multi_turn` counts them.
`to_records` writes a set holding any of them in LLaMA-Factory's sharegpt form, which trains on every turn.

Also read: Self-Instruct rows whose input/output pairs sit in `instances: [{input, output}]`
(one row per instance), conversations given as plain strings (["question", "answer", ...], as
LIMA writes them), ids under `id`, `idx`, `question_id`, `example_id` or `uid`, a UTF-8 BOM, and
`{"data": [...]}`. Refused with the line or row named: bytes that are not UTF-8, UTF-16 files,
any other JSON object in place of the list of rows.

HW5's prompts embed the Alpaca preamble ("Below is an instruction ... ### Instruction: ...
### Input: ..."); it is parsed into instruction and input so lengths, scores and chat templates
see the real instruction. Bad input raises `DataError` naming the file, the row and the field.
Duplicates (same instruction and input) are dropped and reported in `Table.duplicates`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugins.pools import conversation
from plugins.pools.conversation import (  # noqa: F401 - to_alpaca re-exported
    ASSISTANT_ROLES,
    SYSTEM_ROLES,
    USER_ROLES,
    _role,
    _str,
    _text,
    _turns,
    to_alpaca,
)
from plugins.pools.readfile import DataError, read_records  # noqa: F401 - re-exported: loaders' public names

log = logging.getLogger("plugins.data")

SHAPES = ("alpaca", "sharegpt", "openai", "prompt")
PROMPT_KEYS = ("instruction", "Instruction", "prompt", "text", "question", "query", "turns")
INPUT_KEYS = ("input", "context")  # Dolly names the input `context`
REFERENCE_KEYS = ("output", "reference", "answer", "response")
ID_KEYS = ("id", "idx", "question_id", "example_id", "uid")

_INSTRUCTION = "### Instruction:"
_INPUT = "### Input:"
_RESPONSE = "### Response:"


@dataclass
class Table:
    path: Path
    shape: str
    rows: list[dict]
    duplicates: list[dict] = field(default_factory=list)  # {id, row, duplicate_of}

    @property
    def multi_turn(self) -> int:
        """Rows that are conversations of several exchanges (kept whole in `turns`)."""
        return sum(1 for r in self.rows if r.get("turns"))


# ------------------------------------------------------------------------------------------- shapes
def detect_shape(rec: Any, path: Path | str = "<rows>", row: int = 0) -> str:
    if not isinstance(rec, dict):
        raise DataError(f"{path}: row {row}: expected an object, found {type(rec).__name__}")
    if "conversations" in rec or "messages" in rec:
        key = "conversations" if "conversations" in rec else "messages"
        turns = _turns(rec[key])
        if isinstance(turns, list) and not any(_role(t) in ASSISTANT_ROLES for t in turns):
            return "prompt"
        return "sharegpt" if key == "conversations" else "openai"
    if "instruction" in rec and "output" in rec:
        return "alpaca"
    if any(k in rec for k in PROMPT_KEYS):
        return "prompt"
    raise DataError(
        f"{path}: row {row}: unknown shape; keys found: {sorted(rec)}; expected Alpaca "
        "(instruction, input, output), ShareGPT (conversations), OpenAI (messages) or a prompt "
        f"({', '.join(PROMPT_KEYS)}); force one with shape=/--shape"
    )


def expand_instances(records: list, path: Path) -> list:
    """Self-Instruct rows `{instruction, instances: [{input, output}, ...]}` -> one Alpaca record per
    instance (ids `<id>` for one instance, `<id>-<k>` for several); other records pass unchanged."""
    if not any(isinstance(r, dict) and "instances" in r for r in records[:1] + records[-1:]):
        return records
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "instances" not in rec:
            out.append(rec)
            continue
        inst = rec["instances"]
        if not isinstance(inst, list) or not inst:
            raise DataError(
                f"{path}: row {i}: field 'instances' must be a non-empty list of {{input, output}}"
            )
        rid = next((rec[k] for k in ID_KEYS if rec.get(k) not in (None, "")), None)
        base = {k: v for k, v in rec.items() if k not in ("instances", *ID_KEYS)}
        for k, x in enumerate(inst):
            if not isinstance(x, dict):
                raise DataError(
                    f"{path}: row {i}: field 'instances[{k}]' must be an object with input/output"
                )
            for f in ("input", "output"):
                if x.get(f) is not None and not isinstance(x[f], str):
                    raise DataError(
                        f"{path}: row {i}: field 'instances[{k}].{f}' must be a string, found {type(x[f]).__name__}"
                    )
            row = {**base, "input": x.get("input") or "", "output": x.get("output") or ""}
            stem = str(rid) if rid is not None else f"{path.stem}-{i:05d}"
            row["id"] = stem if len(inst) == 1 else f"{stem}-{k}"
            out.append(row)
    return out


def split_preamble(text: str) -> tuple[str, str]:
    """HW5/Alpaca prompt text -> (instruction, input); text without the markers is the instruction."""
    i = text.find(_INSTRUCTION)
    if i < 0:
        return text.strip(), ""
    body = text[i + len(_INSTRUCTION) :]
    r = body.rfind(_RESPONSE)
    if r >= 0:
        body = body[:r]
    instruction, _, inp = body.partition(_INPUT)
    return instruction.strip(), inp.strip()


def _conversation(rec: dict, key: str, path: Path, row: int, need_answer: bool) -> tuple[str, str]:
    turns = _turns(rec.get(key))
    if not isinstance(turns, list):
        raise DataError(f"{path}: row {row}: field '{key}' must be a list of turns")
    question = answer = None
    for j, t in enumerate(turns):
        role = _role(t)
        if not role:
            raise DataError(f"{path}: row {row}: field '{key}[{j}]' has no 'from'/'role'")
        if role in SYSTEM_ROLES:
            continue
        if question is None and role in USER_ROLES:
            question = _str(_text(t), path, row, f"{key}[{j}].value", True)
        elif question is not None and role in ASSISTANT_ROLES:
            answer = _str(_text(t), path, row, f"{key}[{j}].value", need_answer)
            break
    if question is None:
        raise DataError(f"{path}: row {row}: field '{key}' has no user/human turn")
    if answer is None and need_answer:
        raise DataError(
            f"{path}: row {row}: field '{key}' has no answer (gpt/assistant turn): a prompt-only "
            "file cannot be a training pool"
        )
    return question, answer or ""


def normalise(rec: Any, shape: str, path: Path, row: int, require_answer: bool = False) -> dict:
    """One record in `shape` -> {id, instruction, input, output, score?}; with `require_answer`
    (a training pool) an empty or missing answer is an error, else it becomes ""."""
    if not isinstance(rec, dict):
        raise DataError(f"{path}: row {row}: expected an object, found {type(rec).__name__}")
    whole, system = [], ""
    if shape == "alpaca":
        if "instruction" not in rec:
            raise DataError(f"{path}: row {row}: field 'instruction' is missing (keys found: {sorted(rec)})")
        instruction = _str(rec.get("instruction"), path, row, "instruction", True)
        inp = _str(rec.get("input"), path, row, "input", False)
        output = _str(rec.get("output"), path, row, "output", require_answer)
    elif shape in ("sharegpt", "openai"):
        key = "conversations" if shape == "sharegpt" else "messages"
        if key not in rec:
            raise DataError(f"{path}: row {row}: field '{key}' is missing (keys found: {sorted(rec)})")
        instruction, output = _conversation(rec, key, path, row, need_answer=require_answer)
        inp = ""
        whole, system = conversation.whole(rec, key, path, row)
    elif shape == "prompt":
        key = "conversations" if "conversations" in rec else "messages" if "messages" in rec else None
        if key:
            instruction, output = _conversation(rec, key, path, row, need_answer=require_answer)
        else:
            name = next((k for k in PROMPT_KEYS if k in rec), None)
            if name is None:
                raise DataError(
                    f"{path}: row {row}: no prompt field ({', '.join(PROMPT_KEYS)}); keys: {sorted(rec)}"
                )
            value = rec[name]
            if name == "turns":  # MT-Bench: a list of user turns; the first is the prompt
                if not isinstance(value, list) or not value:
                    raise DataError(f"{path}: row {row}: field 'turns' must be a non-empty list of strings")
                value, name = value[0], "turns[0]"
            instruction = _str(value, path, row, name, True)
            ref = next((k for k in REFERENCE_KEYS if rec.get(k) is not None), None)
            if ref is None and require_answer:
                raise DataError(
                    f"{path}: row {row}: no answer field ({', '.join(REFERENCE_KEYS)}): a prompt-only "
                    "file cannot be a training pool (register it with --eval instead)"
                )
            output = _str(rec[ref], path, row, ref, require_answer) if ref else ""
        in_key = next((k for k in INPUT_KEYS if rec.get(k) is not None), "input")
        inp = _str(rec.get(in_key), path, row, in_key, False)
    else:
        raise DataError(f"unknown shape {shape!r}: use one of {', '.join(SHAPES)}")
    if _INSTRUCTION in instruction:
        instruction, embedded = split_preamble(instruction)
        inp = inp or embedded
        if not instruction:
            raise DataError(f"{path}: row {row}: field 'instruction' is empty after the Alpaca preamble")
    rid = next((rec[k] for k in ID_KEYS if rec.get(k) is not None), None)
    if rid is not None and not isinstance(rid, str | int) or isinstance(rid, bool):
        name = next(k for k in ID_KEYS if rec.get(k) is not None)
        raise DataError(f"{path}: row {row}: field '{name}' must be a string or an integer, found {rid!r}")
    out = {
        "id": str(rid) if rid is not None and str(rid) != "" else f"{path.stem}-{row:05d}",
        "instruction": instruction.strip(),
        "input": inp.strip(),
        "output": output,
    }
    if whole:
        out["turns"] = whole
        if system:
            out["system"] = system
    score = rec.get("score")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise DataError(f"{path}: row {row}: field 'score' must be a number, found {score!r}")
        out["score"] = float(score)
    return out


def _fast_sharegpt(records: list, path: Path, require_answer: bool) -> list[dict] | None:
    """The common case (HW5's 52k rows): [human, gpt] turns, string values, float scores. Any row
    outside it sends the whole file through `normalise`, which validates and names the problem.
    About 4x faster than the general path, so selection stays near the cost of parsing JSON."""
    rows = []
    append = rows.append
    stem = path.stem
    try:
        for i, rec in enumerate(records):
            conv = rec["conversations"]
            h, g = conv
            if h["from"] != "human" or g["from"] != "gpt":
                return None
            q, a = h["value"], g["value"]
            if type(q) is not str or type(a) is not str or (require_answer and (not a or a.isspace())):
                return None
            q, inp = split_preamble(q) if _INSTRUCTION in q else (q.strip(), "")
            if not q:
                return None
            rid = rec.get("id")
            row = {
                "id": rid if type(rid) is str and rid else f"{stem}-{i:05d}",
                "instruction": q,
                "input": inp,
            }
            row["output"] = a
            sc = rec.get("score")
            if sc is not None:
                if type(sc) is not float and type(sc) is not int:
                    return None
                row["score"] = float(sc)
            append(row)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return rows


def normalise_records(
    records: list, path: Path | str, shape: str | None = None, require_answer: bool = False
) -> Table:
    path = Path(path)
    if not records:
        raise DataError(f"{path}: empty pool (no rows)")
    if shape is not None and shape not in SHAPES:
        raise DataError(f"unknown shape {shape!r}: use one of {', '.join(SHAPES)}")
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a list of rows, found {type(records).__name__}")
    records = expand_instances(records, path)
    shape = shape or detect_shape(records[0], path, 0)
    rows = _fast_sharegpt(records, path, require_answer) if shape == "sharegpt" else None
    if rows is None:
        rows = [normalise(rec, shape, path, i, require_answer) for i, rec in enumerate(records)]
    rows, dups = drop_duplicates(rows)
    return Table(path, shape, rows, dups)


def drop_duplicates(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Keep the first of rows with the same instruction and input; report the others. A different
    row reusing an id is renamed `<id>#<row>`, never merged."""
    seen: dict[tuple[str, str], str] = {}
    ids: set[str] = set()
    kept, dups = [], []
    for i, r in enumerate(rows):
        key = (r["instruction"], r["input"])
        first = seen.get(key)
        if first is None:
            seen[key] = r["id"]
            if r["id"] in ids:
                r["id"] = f"{r['id']}#{i}"
            ids.add(r["id"])
            kept.append(r)
        else:
            dups.append({"id": r["id"], "row": i, "duplicate_of": first})
    return kept, dups


def load_table(path: str | Path, shape: str | None = None, require_answer: bool = False) -> Table:
    """`require_answer=True` for training pools: an empty answer is then an error naming the row."""
    path = Path(path)
    with no_gc():
        return normalise_records(read_records(path), path, shape, require_answer)


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic GC while building many small objects that form no cycles: on a 52k-row
    pool its repeated full passes cost a third of the time of loading."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def load_rows(path: str | Path, shape: str | None = None, require_answer: bool = False) -> list[dict]:
    """Any supported file -> normalised rows {id, instruction, input, output, score?}.

    Evaluation sets may have empty answers (`output` ""); pass `require_answer=True` for a pool.
    Duplicates (same instruction and input) are dropped and logged; use `load_table` to get them.
    """
    t = load_table(path, shape, require_answer)
    if t.multi_turn:
        log.warning("%s: %d rows are conversations of several exchanges (kept whole)", path, t.multi_turn)
    if t.duplicates:
        log.warning("%s: dropped %d duplicate rows (same instruction and input)", path, len(t.duplicates))
    return t.rows


def merge_tables(tables: list[Table]) -> tuple[list[dict], list[dict]]:
    """Several pools into one: duplicates across files are dropped (first kept) and reported."""
    rows = [r for t in tables for r in t.rows]
    rows, dups = drop_duplicates(rows)
    return rows, [d for t in tables for d in t.duplicates] + dups
