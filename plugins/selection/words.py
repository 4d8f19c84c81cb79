"""Words per text, vectorised over the UTF-8 bytes of all texts at once (selection by length)."""

from __future__ import annotations

from itertools import compress

import numpy as np


def word_counts(texts: list[str]) -> np.ndarray:
    """Whitespace-separated words per text, vectorised over the UTF-8 bytes of all texts at once
    (`len(s.split())` per row costs ~2x `json.load` of the pool). ASCII controls and space count
    as whitespace. ASCII texts are joined and encoded as one block (a copy; `str.isascii` is
    O(1)); the others are joined and encoded apart (one non-ASCII character makes a joined string
    2-4 bytes a character: the ASCII majority stays out of it). The trailing "" in the joins puts
    the last separator in without another 46 MB copy."""
    n = len(texts)
    is_ascii = np.fromiter(map(str.isascii, texts), dtype=bool, count=n)
    if is_ascii.all():
        return _count_blob("\x00".join([*texts, ""]).encode("ascii"), map(len, texts), n)
    out = np.zeros(n, dtype=np.int64)
    ascii_idx = np.flatnonzero(is_ascii)
    if len(ascii_idx):
        part = list(compress(texts, is_ascii))
        out[ascii_idx] = _count_blob("\x00".join([*part, ""]).encode("ascii"), map(len, part), len(part))
    other = np.flatnonzero(~is_ascii)
    rest = list(compress(texts, ~is_ascii))
    # the non-ASCII texts joined and encoded at once (a few MB), their bounds read from the NULs between them
    blob = "\x00".join([*rest, ""]).encode("utf-8", "surrogatepass")
    nuls = np.flatnonzero(np.frombuffer(blob, dtype=np.uint8) == 0)
    if len(nuls) == len(rest):  # no text holds a NUL of its own
        lengths = np.diff(nuls, prepend=-1) - 1
    else:
        lengths = [len(t.encode("utf-8", "surrogatepass")) for t in rest]
    out[other] = _count_blob(blob, lengths, len(rest))
    return out


def _count_blob(blob: bytes, lengths, n: int) -> np.ndarray:
    """Words per segment of `blob`: segments of the given byte lengths, each followed by a NUL."""
    buf = np.frombuffer(blob, dtype=np.uint8)
    ws = buf <= 32  # the NUL separators count as whitespace, so no word spans two texts
    starts = np.empty(len(buf), dtype=np.bool_)
    starts[0] = not ws[0]
    np.greater(ws[:-1], ws[1:], out=starts[1:])  # whitespace then not: a word starts (no temporaries)
    bounds = np.zeros(n + 1, dtype=np.int64)
    sizes = lengths if isinstance(lengths, np.ndarray) else np.fromiter(lengths, dtype=np.int64, count=n)
    np.cumsum(sizes + 1, out=bounds[1:])
    return np.diff(np.searchsorted(np.flatnonzero(starts), bounds))
