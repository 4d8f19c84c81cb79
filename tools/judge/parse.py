"""Scores out of a judge's text. Nothing unparseable ever becomes a 0: it is `None` with a reason.

Pairwise (HW5): the first non-empty line should hold two numbers from 1 to 10 ("7 8", "7, 8",
"Scores: 7 8", "7/10 8/10", "**7 8**"). Judges sometimes put the scores on labelled lines
("Assistant 1: 7" ... "Assistant 2: 8"); that shape is accepted too. Anything else is unparsed.
Single (MT-Bench): the last "[[N]]" in the text, else a "Rating: N" line.
Official (HW5's evaluate.py, `parse_official`): its rule exactly, quirks and all; what it counts that
the robust parser would not is flagged in `Parsed.quirk`, so the user sees it beside the number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LO, HI = 1.0, 10.0
_NUM = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(?:\s*/\s*10(?![\d.]))?")
_LABELLED = re.compile(r"assistant\s*([12])[^\n\d]{0,40}?(\d+(?:\.\d+)?)(?:\s*/\s*10)?", re.I)
_NAME = re.compile(r"assistant\s*[12]\b", re.I)
_BRACKETS = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_RATING = re.compile(r"rating\s*[:=]?\s*\[?\s*(\d+(?:\.\d+)?)", re.I)


@dataclass(frozen=True)
class Parsed:
    scores: tuple[float, ...] | None  # (Assistant 1, Assistant 2) or (rating,)
    reason: str = ""
    quirk: str | None = None  # official parse only: why this counted score is suspect

    @property
    def ok(self) -> bool:
        return self.scores is not None


def _in_range(xs: list[float]) -> bool:
    return all(LO <= x <= HI for x in xs)


def parse_pair(text: str | None) -> Parsed:
    if not text or not text.strip():
        return Parsed(None, "empty answer")
    first = next(line for line in text.splitlines() if line.strip())
    # "Assistant 1" / "Assistant 2" are names, not scores.
    nums = [float(m.group(1)) for m in _NUM.finditer(_NAME.sub(" ", first))]
    if len(nums) == 2:
        return (
            Parsed(tuple(nums)) if _in_range(nums) else Parsed(None, f"out of range on first line: {first!r}")
        )
    labelled: dict[str, float] = {}
    for m in _LABELLED.finditer(text):
        labelled.setdefault(m.group(1), float(m.group(2)))
    if set(labelled) == {"1", "2"}:
        pair = [labelled["1"], labelled["2"]]
        return Parsed(tuple(pair)) if _in_range(pair) else Parsed(None, "labelled scores out of range")
    if len(nums) > 2:
        return Parsed(None, f"{len(nums)} numbers on the first line: {first[:80]!r}")
    return Parsed(None, f"{len(nums)} number(s) on the first line: {first[:80]!r}")


def parse_single(text: str | None) -> Parsed:
    if not text or not text.strip():
        return Parsed(None, "empty answer")
    found = _BRACKETS.findall(text) or _RATING.findall(text)
    if not found:
        return Parsed(None, "no [[rating]] in the answer")
    x = float(found[-1])
    return Parsed((x,)) if LO <= x <= HI else Parsed(None, f"rating {found[-1]} out of range")


_OFFICIAL_NUM = re.compile(r"\d+\.?\d*")  # evaluate.py's pattern, verbatim


def parse_official(text: str | None) -> Parsed:
    """HW5's rule: strip, first line, `re.findall(r'\\d+\\.?\\d*')`; >= 2 numbers -> (first, second)."""
    content = (text or "").strip()
    first_line = content.split("\n")[0].strip()
    found = _OFFICIAL_NUM.findall(first_line)
    if len(found) < 2:
        return Parsed(None, f"{len(found)} number(s) on the first line: {first_line[:80]!r}")
    pair = (float(found[0]), float(found[1]))
    quirk = None
    if _NAME.search(first_line):
        quirk = "assistant name read as a score"
    elif not _in_range(list(pair)):
        quirk = "score out of 1-10"
    elif len(found) > 2:
        quirk = f"{len(found)} numbers on the first line"
    return Parsed(pair, quirk=quirk)


def parse(kind: str, text: str | None, parser: str = "robust") -> Parsed:
    if kind == "pairwise":
        return parse_official(text) if parser == "official" else parse_pair(text)
    return parse_single(text)


def answer_score(kind: str, order: str, p: Parsed) -> tuple[float | None, float | None]:
    """(score of the reference, score of the answer) for a judgment in the given order."""
    if not p.ok:
        return None, None
    if kind == "single":
        return None, p.scores[0]
    s1, s2 = p.scores
    return (s1, s2) if order == "ab" else (s2, s1)
