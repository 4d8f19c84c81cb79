"""Append-only JSONL: each record flushed line by line, a torn last line (a killed writer) skipped on read."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one record and flush it, so a killed process loses at most the line in flight."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path, skip_torn: bool = True) -> Iterator[dict]:
    """Yield records; a torn last line (no newline, bad JSON) from a killed writer is skipped."""
    path = Path(path)
    if not path.exists():
        return
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a JSONL file")
    with open(path, "rb") as f:
        lines = f.readlines()
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM: read as utf-8-sig
        lines[0] = lines[0][3:]
    for i, raw in enumerate(lines):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if skip_torn and i == len(lines) - 1 and not raw.endswith(b"\n"):
                return  # a writer killed inside a multi-byte character
            raise ValueError(
                f"{path}: line {i + 1}: byte 0x{raw[e.start]:02x} at column {e.start + 1} is not UTF-8"
            ) from None
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            if skip_torn and i == len(lines) - 1 and not line.endswith("\n"):
                return
            raise ValueError(f"{path}: line {i + 1}: broken JSON ({e.msg})") from e
