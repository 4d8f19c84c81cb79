"""Word counts (selection by length) on mixed ASCII and non-ASCII texts, with a NUL inside a text: the
vectorised count equals a byte-level reference (bytes <= 32 are whitespace)."""

from __future__ import annotations

import re

from plugins.selection import word_counts


def reference(text: str) -> int:
    return len(re.findall(rb"[^\x00-\x20]+", text.encode("utf-8", "surrogatepass")))


def test_word_counts_match_the_reference_on_mixed_texts():
    texts = ["a b  c", "naïve café au lait", "", " \n\t ", "x\x00y z", "日本語 の テキスト", "end."] * 3
    assert list(word_counts(texts)) == [reference(t) for t in texts]
    no_nul = [t for t in texts if "\x00" not in t]
    assert list(word_counts(no_nul)) == [reference(t) for t in no_nul]
    assert list(word_counts(["only ascii here", "two words"])) == [3, 2]
