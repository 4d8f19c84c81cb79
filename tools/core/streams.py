"""This process's stdout/stderr pointed at a log for a block: what runs in it (and any child it starts)
writes to the file descriptors, not only to sys.stdout, so the redirect happens at the descriptors."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def streams_to(log: Path | str, fds: tuple[int, ...] = (1, 2)) -> Iterator[None]:
    """Descriptors `fds` (1 stdout, 2 stderr) append to `log` inside the block, and are restored after it
    whatever the block raises."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(n) for n in fds]
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for n in fds:
            os.dup2(fd, n)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for n, s in zip(fds, saved, strict=True):
            os.dup2(s, n)
        for f in (fd, *saved):
            os.close(f)
