"""The report's lead: what was chosen on the dev set, what it scores on the test set, how sure we are,
and - in the data study - which selection strategies beat the random floor.

Arms are compared on the same prompts: the per-prompt difference of two points, resampled (a paired
bootstrap, tools.judge's `paired_difference`), so the prompt-to-prompt spread that both share does
not hide a real gap or invent one. A difference is called real only when its 95 % interval leaves 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tools.judge import bootstrap_ci, paired_difference
from tools.report.choose import FALLBACK, METRIC, Choice, Point, item_scores
from tools.report.collect import RunRecord

RANDOM_PREFIX = "random"  # the data study's random arms: random_s0, random_s1, ...


def _fmt_ci(ci) -> str:
    return f"[{ci[0]:+.3g}, {ci[1]:+.3g}]" if ci else "[no interval]"


def paired(a: dict[str, float], b: dict[str, float]) -> dict | None:
    """b - a on the prompts both have, with its paired bootstrap interval; None when none is shared."""
    d = paired_difference(a, b)
    return d if d["diff"] is not None else None


@dataclass
class Decision:
    lines: list[str] = field(default_factory=list)  # the verdict, sentence by sentence
    clear: bool = False  # the chosen point beats the runner-up on dev beyond noise
    chosen: Point | None = None
    test_scores: dict | None = None  # scores.json of the chosen point on the test set, when scored
    floor: dict | None = None


def _label(p: Point) -> str:
    return f"{p.run} ({p.decoding})"


def decide(
    records: list[RunRecord], choice: Choice, test: str | None, base_point: tuple | None = None
) -> Decision:
    dec = _decide(records, choice, test, base_point)
    dec.lines = [line[:1].upper() + line[1:] for line in dec.lines]
    return dec


def _decide(
    records: list[RunRecord], choice: Choice, test: str | None, base_point: tuple | None = None
) -> Decision:
    """Sentences for the page: chosen on dev (vs the best point of the runner-up arm, paired), then the
    test score of the chosen point (and chosen - base on test, paired) when the test set was scored."""
    dec = Decision(chosen=choice.best)
    if choice.best is None:
        dec.lines.append(choice.note)
        return dec
    b = choice.best
    b_run = _run(b)
    if choice.decided_by:
        d = choice.decided_by
        dec.clear = True
        what = "judge mean" if d["metric"] == METRIC else d["metric"]
        ci = f" [{b.ci95[0]:.3g}, {b.ci95[1]:.3g}]" if b.ci95 and d["metric"] == METRIC else ""
        dec.lines.append(f"chosen on {choice.dev} by {what}: {_label(b)} {b.score:.3g}{ci}.")
        dec.lines.append(f"decided by {d['metric']}: {choice.verdict}.")
    else:
        tried = ", ".join(t["metric"] for t in choice.tried)
        dec.lines.append(
            f"no clear winner on {choice.dev}: no criterion ({tried}) separates the best point from the "
            f"runner-up; chosen by the declared tie-break ({choice.tie_break}), not by a score."
        )
        dec.lines.append(f"{choice.verdict}.")
    dec.lines.append(f"decision rule: {choice.rule}.")
    if test:
        rec = next((r for r in records if r.run.name == b.trained), None)
        e = rec.eval_point(test, b.decoding, b.epoch) if rec else None
        s = (e.scores or {}) if e else {}
        mean = s.get("mean")
        if isinstance(mean, (int, float)) and not isinstance(mean, bool) and math.isfinite(mean):
            dec.test_scores = s
            tci = s.get("ci95") or []
            shown = f" [{tci[0]:.3g}, {tci[1]:.3g}]" if len(tci) == 2 else ""
            dec.lines.append(
                f"on the test set {test}, scored once for the chosen point: {s['mean']:.3g}{shown}."
            )
            if base_point:
                base_run, base_dec = base_point
                d = paired(item_scores(base_run, test, base_dec), item_scores(b_run, test, b.decoding))
                if d:
                    dec.lines.append(
                        f"chosen - base model on {test}: {d['diff']:+.3g} {_fmt_ci(d['ci95'])} "
                        f"on {d['n_paired']} paired prompts."
                    )
        elif (
            e is not None
            and (e.scores is None and (e.testset, e.decoding))
            and rec
            and any("scores.json" in p for p in rec.problems)
        ):
            dec.lines.append(
                f"the test score of the chosen point on {test} could not be read (see the run's problems): "
                "not shown."
            )
        else:
            dec.lines.append(
                f"the test set {test} is not scored for the chosen point yet "
                f"(python -m tools.eval.generate --run {b.run} --testset {test}, then metrics and the judge)."
            )
    return dec


def _run(p: Point):
    from tools.core.paths import Run

    return Run.parse(p.run)


# ------------------------------------------------------------------------------ the random floor
def random_floor(records: list[RunRecord], testsets: list[str], decoding: str = "greedy") -> dict | None:
    """Each strategy against the random arms, per prompt, on the first set where every arm has per-prompt
    scores (each arm at its standard point: final adapter, else last epoch). None without random arms."""
    arms = [r for r in records if not r.is_base]
    rand = [r for r in arms if r.run.variant.startswith(RANDOM_PREFIX)]
    strategies = [r for r in arms if not r.run.variant.startswith(RANDOM_PREFIX)]
    if not rand or not strategies:
        return None
    for testset in testsets:
        for metric in (METRIC, FALLBACK):
            items = {}
            for r in arms:
                e = r.eval_point(testset, decoding)
                items[r.label] = item_scores(r.run.at_epoch(e.epoch), testset, decoding, metric) if e else {}
            if all(items.values()):
                return _floor(rand, strategies, items, testset, decoding, metric)
    return {
        "text": "Random floor: no set on which every arm has per-prompt scores (judge.jsonl or "
        "metrics_items.jsonl at the same decoding point); evaluate every arm on one set first",
        "beats": [],
    }


def _floor(rand, strategies, items, testset, decoding, metric) -> dict:
    ids = sorted(set.intersection(*(set(items[r.label]) for r in rand)))
    floor = {i: float(np.mean([items[r.label][i] for r in rand])) for i in ids}
    seed_means = {r.label: float(np.mean(list(items[r.label].values()))) for r in rand}
    spread = float(np.std(list(seed_means.values()), ddof=1)) if len(seed_means) > 1 else 0.0
    fci = bootstrap_ci(floor.values())
    rows = []
    for s in strategies:
        d = paired(floor, items[s.label])
        if d:
            rows.append(
                {
                    "arm": s.label,
                    "diff": d["diff"],
                    "ci95": d["ci95"],
                    "n": d["n_paired"],
                    "beats": bool(d["significant"] and d["diff"] > 0),
                    "below": bool(d["significant"] and d["diff"] < 0),
                }
            )
    rows.sort(key=lambda x: -x["diff"])
    what = "judge score" if metric == METRIC else FALLBACK
    shown = f"[{fci[0]:.3g}, {fci[1]:.3g}]" if fci else ""
    head = (
        f"Random floor on {testset} ({decoding}, {what}): {np.mean(list(floor.values())):.3g} "
        f"{shown} over {len(rand)} seed(s) "
        f"({', '.join(f'{k} {v:.3g}' for k, v in seed_means.items())}; spread across seeds {spread:.3g})."
    )
    winners = [x for x in rows if x["beats"]]
    if winners:
        body = (
            "Beat random: "
            + "; ".join(f"{x['arm']} {x['diff']:+.3g} {_fmt_ci(x['ci95'])}" for x in winners)
            + " (paired over prompts)."
        )
    elif rows:
        top = rows[0]
        body = (
            f"No strategy beats random: the best, {top['arm']}, is {top['diff']:+.3g} {_fmt_ci(top['ci95'])} "
            f"on {top['n']} paired prompts (0 inside)."
            if not top["beats"]
            else ""
        )
    else:
        body = "No strategy shares prompts with the random arms."
    below = [x["arm"] for x in rows if x["below"]]
    tail = f" Below random: {', '.join(below)}." if below else ""
    return {
        "text": f"{head} {body}{tail}",
        "set": testset,
        "metric": metric,
        "floor_mean": float(np.mean(list(floor.values()))),
        "floor_ci95": fci,
        "seed_means": seed_means,
        "seed_spread": spread,
        "arms": rows,
        "beats": [x["arm"] for x in winners],
    }
