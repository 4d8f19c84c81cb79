"""Writes that never leave a half-written file where a finished one is expected.

A file is written to a temporary name in the same folder, flushed to disk and renamed into place; a
folder is built under a temporary `.partial` name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` in one rename. A symlink is written through: its target is replaced and the
    link stays (a registry file kept elsewhere and linked in stays linked)."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
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


def check_place(path: str | Path) -> None:
    """Raise now the error that writing the file `path` (atomic_write_text: its folders made as needed)
    would meet for its place: its folder is a file, a folder above it is a file, or a folder stands where
    the file goes; the same error, naming the same path. Nothing is read or written, so a command can
    refuse a bad output place before it spends anything (permissions and space are met when it writes)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if path.parent.exists() and not path.parent.is_dir():  # mkdir(exist_ok=True) on a file
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path.parent))
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent))
            return


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


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


@contextlib.contextmanager
def build_lock(final: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on building into `final`'s folder, so that two processes that find it missing
    at once (two test workers, two `make` targets) build one after the other: the second re-checks and
    finds it built, rather than replacing a folder the first is already reading. The lock is the folder's
    own (flock on the directory), so nothing is left beside `final`; builds into one folder take turns."""
    parent = Path(final).parent
    parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock
