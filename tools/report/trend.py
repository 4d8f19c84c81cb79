"""One reading of a run's loss curves, shared by the report's warnings and its advice, so the two can
never say opposite things about the same run (a loss that went up is never also "flat, raise the
learning rate"; a run that overfits is never also "still improving, more steps may help").

- the train trend from the mean of the first and the last fifth of the finite logged losses:
  `rising` (up by RISE or more: diverging), `falling` (down by FLAT or more), else `flat`;
- overfitting: the eval loss ended OVERFIT above its minimum while the train loss kept falling;
- still improving: falling, not overfitting, and the last fifth IMPROVING below the fifth before it,
  with the lowest loss in the last fifth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_STEPS = 5  # fewer logged steps than this say nothing about a trend
FLAT = 0.03  # train loss fell less than this share from its first to its last fifth = flat
RISE = 0.05  # train loss this share above its start = diverged
IMPROVING = 0.02  # last fifth this much below the fifth before = still improving
OVERFIT = 0.02  # eval loss this much above its minimum while train loss falls = overfitting


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


@dataclass(frozen=True)
class Trend:
    train: str  # rising | flat | falling | unknown (too few finite points)
    first: float | None = None
    last: float | None = None
    n: int = 0
    improving: bool = False
    overfit: tuple[int, float, int, float] | None = None  # (best step, best eval, last step, last eval)
    train_at: tuple[float, float] | None = None  # train loss near the best and the last eval step


def read(steps: list[int], loss: list[float], eval_steps: list[int], eval_loss: list[float]) -> Trend:
    fin = [(s, v) for s, v in zip(steps, loss, strict=True) if math.isfinite(v)]
    n = len(fin)
    if n < MIN_STEPS:
        return Trend("unknown", n=n)
    w = max(1, n // 5)
    first, last = _mean([v for _, v in fin[:w]]), _mean([v for _, v in fin[-w:]])
    drop = (first - last) / first if first > 0 else 0.0
    train = "rising" if drop <= -RISE else "falling" if drop >= FLAT else "flat"
    overfit, train_at = None, None
    eok = [(s, v) for s, v in zip(eval_steps, eval_loss, strict=True) if math.isfinite(v)]
    if len(eok) >= 2 and train == "falling":
        i = min(range(len(eok)), key=lambda k: eok[k][1])
        (s_min, e_min), (s_end, e_end) = eok[i], eok[-1]
        t_at = [v for s, v in fin if s <= s_min][-3:]
        t_end = [v for s, v in fin if s <= s_end][-3:]
        if i < len(eok) - 1 and e_min > 0 and e_end > e_min * (1 + OVERFIT) and t_at and t_end:
            if _mean(t_end) < _mean(t_at):
                overfit, train_at = (s_min, e_min, s_end, e_end), (_mean(t_at), _mean(t_end))
    improving = False
    if train == "falling" and overfit is None and n >= 6:
        prev = _mean([v for _, v in fin[-2 * w : -w]])
        improving = last < prev * (1 - IMPROVING) and min(v for _, v in fin) in [v for _, v in fin[-w:]]
    return Trend(train, first, last, n, improving, overfit, train_at)
