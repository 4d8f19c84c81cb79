"""Progress of a long data step, on a terminal and in a log alike.

On a terminal: tqdm's bar. Anywhere else (a log file, `make data > data.log`, CI): a line on stderr when the
step starts, every `every` seconds while it runs and when it ends, with the count, the rate and the time left,
so a log shows how far a 10-minute IFD pass got.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """`update(n)` as work is done, `close()` at the end (or use it as a context manager)."""

    def __init__(
        self, total: int, desc: str, unit: str = "rows", every: float = 30.0, stream=None, enabled=True
    ):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.stream = stream if stream is not None else sys.stderr
        self.done, self.t0 = 0, time.perf_counter()
        self.enabled = enabled and total > 0
        self.bar = None
        self._last = self.t0
        if not self.enabled:
            return
        if _is_tty(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream)
        else:
            self._line(f"{desc}: {total} {unit} to do")

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            self._line(self.status(now))

    def status(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100 * self.done / self.total
        eta = f", about {left:.0f} s left" if self.done < self.total and rate > 0 else ""
        return f"{self.desc}: {self.done}/{self.total} {self.unit} ({pct:.0f}%) in {elapsed:.0f} s, {rate:.2f} {self.unit}/s{eta}"

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        else:
            self._line(self.status() + " - done")
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
