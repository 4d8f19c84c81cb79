"""The one top-level error boundary of every command: `run_main(main)` in each `__main__` block.

- Ctrl-C (KeyboardInterrupt) ends with one line on stderr and exit status 130. The `finally` blocks
  and context managers on the way out have run by then: atomic writes removed their temporary files,
  `.partial` files a command documents as resumable are left for the next run.
- An OS error about a file (permission denied, not a directory, is a directory, no such file, disk
  full, read-only file system, name too long...) ends with one line naming the path and the error,
  `error: <path>: permission denied`, and exit status 2: bad input or a bad place, not a bug; so does
  an output that would replace what the command did not make (filelib.ownership).
- Output piped into a reader that stopped (`... | head`): no message, exit status 141 (128 + SIGPIPE),
  as a shell tool ends.
- Anything else is left alone: a real bug still shows its traceback, and `SystemExit` (argparse's
  refusals, a command's own exit status) passes through unchanged.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from filelib.collector import tune as tune_collector
from filelib.ownership import OwnershipError

# the errors that say something about a path or the disk, not about the program
FILE_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENOTEMPTY,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.ENAMETOOLONG,
    errno.ELOOP,
    errno.EFBIG,
}
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command ended by Ctrl-C
BAD_PLACE = 2
PIPE_CLOSED = 141  # 128 + SIGPIPE


def describe(e: OSError) -> str:
    """`<path>: permission denied` (both paths of a rename or a copy), or the reason alone."""
    reason = (e.strerror or type(e).__name__).lower()
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def run_main(main: Callable[..., int | None], *args) -> NoReturn:
    """`sys.exit(main(*args))` behind the boundary (see the module's docstring), with the collector set for
    a process that imports LLaMA-Factory's stack (filelib.collector)."""
    tune_collector()
    try:
        code = main(*args)
    except KeyboardInterrupt:
        _say("interrupted (Ctrl-C)")
        sys.exit(INTERRUPTED)
    except OwnershipError as e:  # an output that would replace what the command did not make
        _say(str(e))
        sys.exit(BAD_PLACE)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        sys.exit(PIPE_CLOSED)
    except OSError as e:
        if e.errno not in FILE_ERRNOS:
            raise
        _say(describe(e))
        sys.exit(BAD_PLACE)
    sys.exit(code)


def _say(text: str) -> None:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):  # stdout closed or its pipe gone: the line on stderr still matters
        pass
    print(f"error: {text}", file=sys.stderr, flush=True)
