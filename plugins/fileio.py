"""Small, safe file helpers shared by every step: atomic writes, append-only JSONL, hashes.

Results are written to a temporary file in the same folder and renamed into place, so a crash
never leaves a half-written file where a finished one is expected. JSONL appends are flushed
line by line and a torn last line (a killed writer) is skipped on read, so appends resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


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


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it into place only when complete."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()
