"""How many threads OMP_NUM_THREADS asks for, read as libgomp reads it: the first entry of a list."""

from __future__ import annotations


def omp_threads(value: str | None) -> int | None:
    """The thread count in an OMP_NUM_THREADS value ("4", " 2,1" -> 2), or None where it names none
    (unset, empty, "0" or a word: libgomp ignores those too)."""
    first = (value or "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None
