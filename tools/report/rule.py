"""The decision rule, as data: which dev criterion decides, in what order, with what effect, and the
tie-break when none can tell the best point from the runner-up.

A rule (templates/decision.yaml, or a study spec's own `decision:`) lists criteria in order. For each,
the best point by that criterion is compared with the runner-up (the best point of another arm, i.e.
another training run; the second-best point where the study has one run):
- `effect: interval`: the paired 95 % bootstrap interval of the per-prompt difference must leave 0 on
  the favourable side, on at least `min_paired` prompts both points answered;
- `effect: {min_diff: X}`: the difference of the two points' values must be at least X.
The first criterion that separates them decides, and the choice says which, with its difference and
interval. Where none does, the choice is "no clear winner" and the declared tie-break (`fewest_steps`,
`lowest_rank`, `name`, or `first_criterion`: the best point by the first criterion that has values)
picks what gets exported, and says so.

Metrics: `judge_mean` (per prompt: the judge's score of the answer), `rougeL` and `ref_loss` (per prompt:
ROUGE-L against the reference; the mean token NLL of the reference answer, ln of metrics' per-item
perplexity), `eval_loss` (LLaMA-Factory's dev loss at that checkpoint: one number, so only `min_diff`).
Two points' `eval_loss` are compared only where the trainer computed them over the same dev rows
(`eval_basis`: LLaMA-Factory's `max_samples` cuts the eval set as well as the training sets, so an arm
trained on the first 4 rows of each set was evaluated on the first 4 dev rows only); otherwise the
criterion says "not comparable" and does not decide. `ref_loss` has no such trap: every point's
reference NLL is computed on every dev prompt, and compared prompt by prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import yaml

from filelib import read_json_object, read_jsonl
from tools.core.paths import TEMPLATES, Run

DEFAULT_RULE = TEMPLATES / "decision.yaml"
METRICS = {"judge_mean": "max", "rougeL": "max", "ref_loss": "min", "eval_loss": "min"}
PER_PROMPT = {"judge_mean", "rougeL", "ref_loss"}
TIE_BREAKS = ("fewest_steps", "lowest_rank", "name", "first_criterion")
MIN_PAIRED = 5


class RuleError(ValueError):
    """A decision rule that cannot be applied as written."""


@dataclass(frozen=True)
class Criterion:
    metric: str
    interval: bool = True  # effect: the paired interval leaves 0
    min_diff: float | None = None  # effect: at least this difference

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    def effect(self) -> str:
        return (
            "paired 95% interval excluding 0"
            if self.interval
            else f"a difference of at least {self.min_diff:g}"
        )


@dataclass
class Rule:
    criteria: list[Criterion]
    tie_break: list[str]
    min_paired: int = MIN_PAIRED
    source: str = ""

    def describe(self) -> str:
        crit = "; then ".join(f"{c.metric} ({c.effect()})" for c in self.criteria)
        return f"{crit}; where none separates: {', '.join(self.tie_break)}"


def parse_rule(spec: object, where: str) -> Rule:
    """A rule from its YAML form; every problem reported at once (RuleError)."""
    problems: list[str] = []
    if not isinstance(spec, dict):
        raise RuleError(f"{where}: a decision rule is a mapping with `criteria` and `tie_break`")
    extra = set(spec) - {"criteria", "tie_break", "min_paired", "why"}
    if extra:
        problems.append(f"unknown key(s) {sorted(extra)}")
    criteria = []
    for i, c in enumerate(spec.get("criteria") or []):
        at = f"criteria[{i}]"
        if not isinstance(c, dict) or c.get("metric") not in METRICS:
            problems.append(f"{at}: metric must be one of {', '.join(METRICS)}")
            continue
        effect = c.get("effect", "interval")
        if effect == "interval":
            if c["metric"] not in PER_PROMPT:
                problems.append(f"{at}: {c['metric']} is one number per point: use effect: {{min_diff: X}}")
            criteria.append(Criterion(c["metric"]))
        elif isinstance(effect, dict) and set(effect) == {"min_diff"}:
            m = effect["min_diff"]
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m <= 0:
                problems.append(f"{at}: min_diff must be a positive number, got {m!r}")
            else:
                criteria.append(Criterion(c["metric"], interval=False, min_diff=float(m)))
        else:
            problems.append(f"{at}: effect must be `interval` or {{min_diff: X}}, got {effect!r}")
    if not spec.get("criteria"):
        problems.append("criteria: at least one")
    ties = spec.get("tie_break") or ["fewest_steps", "name"]
    bad = [t for t in ties if t not in TIE_BREAKS]
    if bad or not isinstance(ties, list):
        problems.append(f"tie_break: {bad or ties} not among {', '.join(TIE_BREAKS)}")
    min_paired = spec.get("min_paired", MIN_PAIRED)
    if isinstance(min_paired, bool) or not isinstance(min_paired, int) or min_paired < 2:
        problems.append(f"min_paired must be an integer >= 2, got {min_paired!r}")
    if problems:
        raise RuleError(f"{where}: " + "; ".join(problems))
    return Rule(criteria, list(ties), min_paired, where)


def load_rule(study: str | None = None) -> Rule:
    """The study spec's `decision:` when it has one, else templates/decision.yaml."""
    if study:
        path = TEMPLATES / "studies" / f"{study}.yaml"
        try:
            spec = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            spec = {}
        if isinstance(spec, dict) and "decision" in spec:
            return parse_rule(spec["decision"], f"{path}: decision")
    return parse_rule(yaml.safe_load(DEFAULT_RULE.read_text()), str(DEFAULT_RULE))


# ------------------------------------------------------------------------------- values per point
def per_prompt(run: Run, testset: str, decoding: str, metric: str, judge_items) -> dict[str, float]:
    """{prompt id: value} at one point; {} when the point has none."""
    if metric == "judge_mean":
        return judge_items(run, testset, decoding)
    path = run.eval_dir(testset, decoding) / "metrics_items.jsonl"
    key = "ppl_reference" if metric == "ref_loss" else metric
    out = {}
    for r in read_jsonl(path) if path.exists() else ():
        v = r.get(key) if isinstance(r, dict) else None
        if isinstance(v, (int, float)) and math.isfinite(v) and (metric != "ref_loss" or v > 0):
            out[str(r.get("id"))] = math.log(v) if metric == "ref_loss" else float(v)
    return out


def eval_loss_at(run: Run) -> float | None:
    """LLaMA-Factory's dev loss for a point: the last eval_loss logged up to its checkpoint."""
    state = read_json_object(run.adapter_dir / "trainer_state.json", {})
    if not state.get("log_history"):
        state = read_json_object(run.trained.output_dir / "trainer_state.json", {})
    losses = [
        h["eval_loss"] for h in state.get("log_history") or [] if isinstance(h.get("eval_loss"), (int, float))
    ]
    return float(losses[-1]) if losses else None


EVAL_BASIS = ("eval_dataset", "max_samples", "val_size", "cutoff_len", "template")


def eval_basis(run: Run) -> dict:
    """What the trainer's eval_loss of a run was computed over: the dev set and what cut or shaped it."""
    cfg = read_json_object(run.trained.run_json, {}).get("resolved_config") or {}
    return {k: cfg.get(k) for k in EVAL_BASIS}


def _global_step(run: Run) -> int | None:
    state = read_json_object(run.adapter_dir / "trainer_state.json", {})
    if not state:
        state = read_json_object(run.trained.output_dir / "trainer_state.json", {})
    steps = state.get("global_step")
    return int(steps) if isinstance(steps, int) and not isinstance(steps, bool) else None


def steps_at(run: Run) -> int | None:
    """The optimizer steps that made a point, its chain's included: a curriculum stage continues its
    parent's finished adapter (run.json `parent`), so stage 3 at its step 2 rests on every step of stages
    1 and 2 as well. None when a step count along the chain is unknown."""
    steps, seen = _global_step(run), {run.trained.name}
    parent = read_json_object(run.trained.run_json, {}).get("parent")
    while steps is not None and isinstance(parent, str) and parent:
        try:
            up = Run(run.model, run.study, parent)
        except ValueError:
            return None
        if up.name in seen:  # a loop in hand-edited files: the count is unknown, not infinite
            return None
        seen.add(up.name)
        more = _global_step(up)
        steps = None if more is None else steps + more
        parent = read_json_object(up.run_json, {}).get("parent")
    return steps


def rank_of(run: Run) -> int | None:
    cfg = read_json_object(run.trained.run_json, {}).get("resolved_config") or {}
    r = cfg.get("lora_rank")
    return int(r) if isinstance(r, int) else None


@dataclass
class Outcome:
    """One criterion tried: did it separate the best point from the runner-up, and by how much."""

    metric: str
    best: str | None = None  # a point label: run@epoch (decoding)
    runner_up: str | None = None
    diff: float | None = None  # best - runner-up, in the metric's own sign
    ci95: list[float] | None = None
    n_paired: int | None = None
    decided: bool = False
    why: str = ""  # when it did not decide: not estimable, 0 inside, below min_diff
    values: dict[str, float] = field(default_factory=dict)

    def sentence(self) -> str:
        if self.diff is None:
            return f"{self.metric}: {self.why}"
        ci = f" [{self.ci95[0]:+.3g}, {self.ci95[1]:+.3g}]" if self.ci95 else ""
        n = f" on {self.n_paired} paired prompts" if self.n_paired else ""
        tail = "" if self.decided else f" ({self.why})"
        return f"{self.metric} {self.diff:+.3g}{ci}{n}{tail}"


def judge_criterion(
    c: Criterion, points: list, value_of, items_of, min_paired: int, arm_of, basis_of=None
) -> Outcome:
    """Apply one criterion to the candidate points (objects with .run, .trained, .decoding).
    `basis_of(point)`: what a one-number metric was computed over; two points whose bases differ are not
    compared (their difference would be one of rows, not of models)."""
    out = Outcome(c.metric)
    vals = [(p, v) for p in points if (v := value_of(p, c.metric)) is not None and math.isfinite(v)]
    if not vals:
        out.why = "no point has a value on the dev set"
        return out
    sign = 1.0 if c.direction == "max" else -1.0
    vals.sort(key=lambda pv: -sign * pv[1])
    best, best_v = vals[0]
    out.values = {f"{p.run} ({p.decoding})": v for p, v in vals}
    out.best = f"{best.run} ({best.decoding})"
    others = [pv for pv in vals[1:] if arm_of(pv[0]) != arm_of(best)] or vals[1:]
    if not others:
        out.why = "only one point: nothing to compare"
        return out
    second, second_v = others[0]
    out.runner_up = f"{second.run} ({second.decoding})"
    if c.interval:
        from tools.judge import paired_difference

        a, b = items_of(second, c.metric), items_of(best, c.metric)
        d = paired_difference(a, b)
        out.n_paired = d["n_paired"]
        if d["n_paired"] < min_paired or d["diff"] is None or d["ci95"] is None:
            out.why = f"not estimable ({d['n_paired']} paired prompts, fewer than {min_paired})"
            return out
        lo, hi = d["ci95"]
        if lo == hi:  # no spread to rest an interval on: a number here would look more certain than it is
            out.why = "not estimable (a degenerate interval: every paired difference is the same)"
            return out
        out.diff, out.ci95 = d["diff"], d["ci95"]
        out.decided = (lo > 0) if sign > 0 else (hi < 0)
        out.why = "" if out.decided else "0 inside the interval"
    else:
        if basis_of is not None and basis_of(best) != basis_of(second):
            a, b = basis_of(best), basis_of(second)
            differ = ", ".join(f"{k} {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b.get(k))
            out.why = f"not comparable: the two points were evaluated on different rows ({differ})"
            return out
        out.diff = best_v - second_v
        out.decided = abs(out.diff) >= c.min_diff
        out.why = "" if out.decided else f"below the declared {c.min_diff:g}"
    return out
