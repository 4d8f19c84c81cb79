"""Choose on the dev set, score on the test set: the best run, epoch and decoding point of a study.

Every evaluated point of every tuned run - its final adapter or one epoch's checkpoint
(`<run>@epochN`), at each decoding point - that has a score on the dev set is a candidate. The study's
decision rule (tools/report/rule.py: templates/decision.yaml or the spec's `decision:`) picks: its
criteria in order, the first that separates the best point from the runner-up with the declared effect
decides; where none does, the choice says "no clear winner" and the declared tie-break picks. The test
set is never read here: it is scored for the chosen point afterwards (`make sweep` and `make demo` do
that), so its score is an honest estimate.

Which set is which: the role `tools.data` records in dataset_info.json (`dev` or `test`), else the
name (`*_dev` is a dev set). The report and the export use this same function on the same files,
so they cannot disagree about the choice.

Usage:
    python -m tools.report.choose --study demo [--model smollm2_135m] [--dev demo_dev]
        prints the chosen run name (e.g. smollm2_135m/demo/shuffled@epoch2) and writes
        reports/<study>/choice.json; exit 1 when no point has a dev score
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filelib import atomic_write_json, read_jsonl, run_main
from plugins.publishing import registry
from tools.core.args import command, opt
from tools.core.paths import DATA, Run, report_dir, runs_of_study
from tools.report.collect import EvalPoint, RunRecord, read_evals
from tools.report.rule import (
    Rule,
    eval_basis,
    eval_loss_at,
    judge_criterion,
    load_rule,
    per_prompt,
    rank_of,
    steps_at,
)

METRIC = "judge_mean"
FALLBACK = "rougeL"


def role_of(testset: str, dataset_dir: Path = DATA) -> str:
    """`dev` or `test`: what tools.data registered it as, else by name (`*_dev` is a dev set)."""
    try:
        entry = registry.load_info(dataset_dir).get(testset)
    except registry.RegistryError:
        entry = None
    if registry.is_ours(entry) and entry["smalldata"].get("role") in ("dev", "test"):
        return entry["smalldata"]["role"]
    return "dev" if testset.endswith("_dev") else "test"


def split_sets(records: list[RunRecord], dataset_dir: Path = DATA) -> tuple[str | None, list[str]]:
    """(the dev set most runs were evaluated on or None, the other sets = test sets)."""
    counts = Counter(e.testset for r in records for e in r.evals)
    devs = [t for t, _ in counts.most_common() if role_of(t, dataset_dir) == "dev"]
    return (devs[0] if devs else None), [t for t in counts if role_of(t, dataset_dir) != "dev"]


@dataclass
class Point:
    run: str  # the run name that addresses it: model/study/variant[@epochN]
    trained: str  # its training run
    epoch: int | None
    decoding: str
    score: float
    ci95: list[float] | None = None


@dataclass
class Choice:
    dev: str | None
    metric: str | None  # the criterion that decided, else the first with values (what `score` shows)
    best: Point | None = None
    candidates: list[Point] = field(default_factory=list)  # best first, by `metric`
    note: str = ""
    decided_by: dict | None = None  # the deciding criterion's outcome; None: no criterion separated
    tried: list[dict] = field(default_factory=list)  # every criterion tried, in the rule's order
    tie_break: str | None = None  # the tie-break that picked `best` when no criterion decided
    left_out: list[str] = field(default_factory=list)  # dev evaluations that could not be read, and why
    rule: str = ""  # the rule, as the report states it
    verdict: str = ""  # one sentence: what decided, by how much, or that nothing did

    @property
    def run(self) -> Run | None:
        return Run.parse(self.best.run) if self.best else None

    def as_dict(self) -> dict:
        return {**asdict(self), "chosen_on": self.dev}


def candidates(records: list[RunRecord], dev: str) -> tuple[list[Point], dict[str, EvalPoint]]:
    """Every point of every tuned run evaluated on the dev set, and its evaluation by label."""
    out, evals = [], {}
    for r in records:
        if r.is_base:
            continue
        for e in r.evals:
            if e.testset != dev:
                continue
            name = r.run.at_epoch(e.epoch).name
            ci = (e.scores or {}).get("ci95")
            out.append(Point(name, r.run.name, e.epoch, e.decoding, float("nan"), ci))
            evals[f"{name} ({e.decoding})"] = e
    return out, evals


def choose_on_dev(
    records: list[RunRecord], dev: str | None = None, dataset_dir: Path = DATA, rule: Rule | None = None
) -> Choice:
    """The point the study's decision rule picks on the dev set (tools.report.rule); Choice.best is None
    when nothing was evaluated there. The test set is never read."""
    dev = dev or split_sets(records, dataset_dir)[0]
    if dev is None:
        return Choice(
            None, None, note="no dev set evaluated: nothing to choose on (the test set is not used)"
        )
    study = next((r.run.study for r in records if not r.is_base), None)
    rule = rule or load_rule(study)
    points, evals = candidates(records, dev)
    unreadable = ("broken JSON", "ignored", "not a finite number")
    bad = {
        (r.run.name, p.split(": ", 1)[0]): p
        for r in records
        for p in r.problems
        if f"/{dev}/" in p.split(": ", 1)[0] + "/" and any(u in p for u in unreadable)
    }
    left_out = [f"{run}: {p}" for (run, _), p in bad.items()]
    # a point whose dev evaluation cannot be read takes no part, not even in the tie-break
    where = {(r, w.split("/", 1)[0], w.split("/")[-1]) for r, w in bad}
    points = [
        p for p in points
        if (p.trained, "eval" if p.epoch is None else f"eval@epoch{p.epoch}", p.decoding) not in where
    ]  # fmt: skip
    if not points:
        return Choice(dev, None, note=f"no tuned run has a score on the dev set {dev}", rule=rule.describe())
    label = lambda p: f"{p.run} ({p.decoding})"  # noqa: E731

    def value_of(p: Point, metric: str) -> float | None:
        e = evals[label(p)]
        if metric == METRIC:
            v = (e.scores or {}).get("mean")
        elif metric == "eval_loss":
            v = eval_loss_at(Run.parse(p.run))
        elif metric == "ref_loss":
            items = per_prompt(Run.parse(p.run), dev, p.decoding, metric, item_scores)
            v = sum(items.values()) / len(items) if items else None
        else:
            v = (e.metrics or {}).get(metric)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    def items_of(p: Point, metric: str) -> dict[str, float]:
        return per_prompt(Run.parse(p.run), dev, p.decoding, metric, item_scores)

    def basis_of(p: Point) -> dict:
        return eval_basis(Run.parse(p.run))

    tried = [
        judge_criterion(
            c, points, value_of, items_of, rule.min_paired, lambda p: p.trained,
            basis_of if c.metric == "eval_loss" else None,
        )
        for c in rule.criteria
    ]  # fmt: skip
    deciding = next((o for o in tried if o.decided), None)
    shown = deciding or next((o for o in tried if o.values), None)
    if shown is None:
        return Choice(
            dev,
            None,
            note=f"no point on {dev} has a value for any criterion of the rule",
            rule=rule.describe(),
        )
    for p in points:
        p.score = shown.values.get(label(p), float("nan"))
    ranked = sorted(
        points, key=lambda p: list(shown.values).index(label(p)) if label(p) in shown.values else 10**6
    )
    choice = Choice(dev, shown.metric, None, ranked, rule=rule.describe(), tried=[asdict(o) for o in tried])
    choice.left_out = left_out
    if deciding is not None:
        choice.best = next(p for p in ranked if label(p) == deciding.best)
        choice.decided_by = asdict(deciding)
        before = [o.sentence() for o in tried[: tried.index(deciding)]]
        choice.verdict = f"{deciding.best} beats {deciding.runner_up} on {dev} {deciding.sentence()}" + (
            f" ({'; '.join(before)})" if before else ""
        )
    else:
        choice.best, choice.tie_break = tie_break(ranked, rule, shown)
        choice.verdict = (
            f"no clear winner on {dev}: "
            + "; ".join(o.sentence() for o in tried)
            + f"; the declared tie-break ({choice.tie_break}) picked {label(choice.best)}"
        )
    if left_out:
        choice.verdict += f" (left out, unreadable: {'; '.join(left_out)})"
    choice.note = choice.verdict
    return choice


def tie_break(ranked: list[Point], rule: Rule, shown) -> tuple[Point, str]:
    """The point the rule's tie-break keys pick among all candidates (no criterion separated them)."""

    def key(p: Point) -> tuple:
        out = []
        for t in rule.tie_break:
            if t == "fewest_steps":
                s = steps_at(Run.parse(p.run))
                out.append(s if s is not None else 10**9)
            elif t == "lowest_rank":
                r = rank_of(Run.parse(p.run))
                out.append(r if r is not None else 10**9)
            elif t == "first_criterion":
                out.append(ranked.index(p))
            else:
                out.append(p.run)
        return (*out, p.run, p.decoding)

    return min(ranked, key=key), ", then ".join(rule.tie_break)


def dev_records(study: str, model: str | None = None) -> list[RunRecord]:
    """The study's runs with their evaluation points only (no events: choosing needs none)."""
    records = []
    for run in runs_of_study(study, model):
        rec = RunRecord(run)
        rec.evals = read_evals(run, rec.problems)
        records.append(rec)
    return records


# ------------------------------------------------------------------ per-prompt scores (paired tests)
def item_scores(run: Run, testset: str, decoding: str, metric: str = METRIC) -> dict[str, float]:
    """{prompt id: score} at one point: the judge's score of the answer (judge.jsonl, HW5's main order),
    or the fallback metric per item (metrics_items.jsonl); {} when the file is missing."""
    d = run.eval_dir(testset, decoding)
    if metric == METRIC:
        path = d / "judge.jsonl"
        if not path.exists():
            return {}
        rows = [r for r in read_jsonl(path) if isinstance(r, dict)]
        main = "single" if rows and rows[0].get("protocol") == "single" else "ab"
        try:  # scores.json names the order its mean is over (HW5's: the answer as Assistant 2)
            main = json.loads((d / "scores.json").read_text()).get("order") or main
        except (OSError, ValueError, AttributeError):
            pass
        if not any(r.get("order") == main for r in rows):
            orders = Counter(r.get("order") for r in rows)
            main = orders.most_common(1)[0][0] if orders else main
        return {
            str(r["id"]): float(r["score_answer"])
            for r in rows
            if r.get("order") == main and r.get("parsed") and r.get("score_answer") is not None
        }
    path = d / "metrics_items.jsonl"
    if not path.exists():
        return {}
    return {str(r["id"]): float(r[metric]) for r in read_jsonl(path) if r.get(metric) is not None}


def record_choice(
    study: str, model: str | None = None, dev: str | None = None, dataset_dir: Path = DATA
) -> Choice:
    """The choice on the dev set, written to reports/<study>/choice.json (what the report and export read)."""
    choice = choose_on_dev(dev_records(study, model), dev, dataset_dir)
    atomic_write_json(report_dir(study) / "choice.json", choice.as_dict())
    return choice


@dataclass
class ChooseArgs:
    study: str = opt(help="the study whose runs are compared on dev", required=True)
    model: str | None = opt(None, help="only this model's runs (default: every model)")
    dev: str | None = opt(None, help="the dev set (default: the one most runs were evaluated on)")
    dataset_dir: Path = opt(DATA, help="the folder holding dataset_info.json")


@command(ChooseArgs, __doc__)
def main(a: ChooseArgs) -> int:
    try:
        if a.dev is not None and registry.owner(a.dev, registry.load_info(a.dataset_dir).get(a.dev)) is None:
            raise ValueError(f"--dev {a.dev}: not a data set registered by this project in {a.dataset_dir}")
        choice = record_choice(a.study, a.model, a.dev, a.dataset_dir)
    except (ValueError, registry.RegistryError) as e:  # a bad study or model name, an unknown dev set
        print(f"choose: error: {e}", file=sys.stderr)
        return 2
    if choice.best is None:
        print(f"choose: {choice.note}", file=sys.stderr)
        return 1
    print(choice.best.run)
    b = choice.best
    print(f"choose: {b.run} at {b.decoding}: {b.score:.4g}; {choice.note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
