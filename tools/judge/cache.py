"""The judgment cache: append-only JSONL, one line per finished judgment, keyed by its inputs.

Key = sha256(judge model, protocol name and version, order, question, reference, answer), so a
re-run of the same judgments makes no call, and an answer judged once is never judged (or paid
for) again, whichever run it came from. Only finished judgments (scored or unparsed) are cached;
failed calls are not, so the next run retries them. A killed writer can leave a torn last line:
it is cut off before the next append, so the file stays valid JSONL and nothing is counted twice.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from filelib import append_jsonl, read_jsonl, sha256_text
from tools.core.paths import cache_dir
from tools.judge.parse import HI, LO


def judgment_key(
    judge_model: str,
    protocol: str,
    version: int,
    order: str,
    question: str,
    reference: str | None,
    answer: str,
) -> str:
    return sha256_text(judge_model, protocol, str(version), order, question, reference or "", answer)


def cache_path(judge_model: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", judge_model).strip("_") or "judge"
    return cache_dir() / "judge" / f"{slug}.jsonl"


def _cut_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = f.seek(0) or f.read()
        f.truncate(data.rfind(b"\n") + 1)


def check_row(row: object, path: Path, line: int) -> dict:
    """A cached judgment as written by this tool; anything else is a damaged cache, refused by line
    (a score outside 1-10 must never be averaged in, unless the official parser counted and flagged it)."""
    where = f"{path}: line {line}"
    if not isinstance(row, dict):
        raise ValueError(f"{where}: not a judgment (a JSON {type(row).__name__}, not an object)")
    if not isinstance(row.get("key"), str) or not row["key"]:
        raise ValueError(f"{where}: not a judgment (field 'key' missing or not a string)")
    for f in ("score_answer", "score_reference"):
        x = row.get(f)
        if x is None:
            continue
        if isinstance(x, bool) or not isinstance(x, int | float) or x != x:
            raise ValueError(f"{where}: field {f!r} = {x!r} is not a number: the cache is damaged")
        # HW5's official parser counts an out-of-range number on purpose and flags it (`quirk`)
        if not LO <= x <= HI and not (isinstance(row.get("quirk"), str) and row["quirk"]):
            raise ValueError(
                f"{where}: field {f!r} = {x!r} is outside the protocol's range {LO:g}-{HI:g}: the cache is "
                "damaged; delete that line (it will be judged again) or the file"
            )
    if not isinstance(row.get("usage", {}), dict):
        raise ValueError(f"{where}: field 'usage' must be an object")
    return row


class JudgeCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        _cut_torn_tail(self.path)
        self.rows: dict[str, dict] = {}
        for n, row in enumerate(read_jsonl(self.path), 1):
            row = check_row(row, self.path, n)
            self.rows.setdefault(row["key"], row)  # first answer wins: a duplicate never counts twice

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def add(self, row: dict) -> None:
        if row["key"] in self.rows:
            return
        append_jsonl(self.path, row)
        self.rows[row["key"]] = row
