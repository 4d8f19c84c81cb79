"""A search's trials as a report (tools.flows.tune): the objective taken from the study's decision rule,
the dev value of each trial's epochs, and reports/<study>/tune.md, tune.html, tune_trials.csv and a slice
plot (tune_slice.png), with Optuna's parameter importances where two or more complete trials vary.

The objective is the rule's first criterion on dev. Per epoch, during training, only LLaMA-Factory's dev
`eval_loss` is known without generating answers; a rule whose first criterion needs answers (judge_mean,
ref_loss, rougeL) is searched on eval_loss, and says so (`Objective.note`): the rule itself then decides
between the best trial's epochs when the sweep's evaluation scores it (`tune --evaluate`).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from filelib import atomic_write_text, read_json_object
from tools.core.paths import Run
from tools.report.rule import METRICS, eval_loss_at, load_rule, steps_at

PER_EPOCH = {"eval_loss"}  # what a trial's epoch gives without generating: LLaMA-Factory's dev loss


@dataclass(frozen=True)
class Objective:
    metric: str  # what each epoch is scored by
    direction: str  # "minimize" / "maximize"
    min_diff: float | None  # the rule's effect for it, when it states one
    note: str  # where it comes from

    def better(self, a: float, b: float) -> bool:
        return a < b if self.direction == "minimize" else a > b


def objective_of(study: str, metric: str | None = None) -> Objective:
    """The study's decision rule's first criterion, when it can be measured per epoch; else eval_loss."""
    rule = load_rule(study)
    first = rule.criteria[0] if rule.criteria else None
    if metric:  # the spec's `search: objective:` names it
        c = next((c for c in rule.criteria if c.metric == metric), None)
        note = f"search.objective {metric} (rule: {rule.describe()})"
    elif first is not None and first.metric in PER_EPOCH:
        metric, c, note = first.metric, first, f"the rule's first criterion ({first.metric})"
    else:
        metric, c = "eval_loss", next((c for c in rule.criteria if c.metric == "eval_loss"), None)
        what = first.metric if first else "none"
        note = (
            f"the rule's first criterion is {what}, which needs generated answers; searched on LLaMA-Factory's"
            " dev eval_loss per epoch (the rule decides between the best trial's epochs at evaluation)"
        )
    if metric not in PER_EPOCH:
        raise ValueError(f"objective {metric!r}: per epoch only {sorted(PER_EPOCH)} is measured")
    direction = "minimize" if METRICS[metric] == "min" else "maximize"
    return Objective(metric, direction, c.min_diff if c is not None else None, note)


def epoch_values(run: Run, metric: str = "eval_loss") -> dict[int, float]:
    """{epoch: dev value} for each epoch checkpoint the run has kept so far."""
    out = {}
    for point in run.trained.epochs():
        v = eval_loss_at(point) if metric == "eval_loss" else None
        if v is not None and math.isfinite(v):
            out[point.epoch] = float(v)
    return out


def epoch_steps(run: Run) -> dict[int, int]:
    """{epoch: the optimizer step its checkpoint was saved at}."""
    return {p.epoch: s for p in run.trained.epochs() if (s := steps_at(p)) is not None}


def planned_steps(run: Run) -> int:
    """The optimizer steps the run was set to take (the Trainer's max_steps in its newest state); 0 unknown."""
    for p in (*reversed(run.trained.epochs()), run.trained):
        m = read_json_object(p.adapter_dir / "trainer_state.json", {}).get("max_steps")
        if isinstance(m, int) and m > 0:
            return m
    return 0


# ---------------------------------------------------------------------------------------- the report
def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def _slice_plot(rows: list[dict], params: list[str], path: Path, metric: str) -> Path | None:
    """One panel per parameter: each trial's objective (complete) or last dev value (pruned) against it."""
    pts = [r for r in rows if r.get("value") is not None or r.get("epochs")]
    if not pts or not params:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(params), figsize=(4 * len(params), 3.2), squeeze=False)
    for ax, p in zip(axes[0], params, strict=True):
        for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
            xs, ys = [], []
            for r in pts:
                y = r["value"] if r.get("value") is not None else list(r["epochs"].values())[-1]
                if r["state"] == state and p in r["params"]:
                    xs.append(r["params"][p])
                    ys.append(y)
            if xs:
                ax.scatter(xs, ys, marker=marker, label=state.lower())
        if all(isinstance(r["params"].get(p), float) for r in pts if p in r["params"]):
            if all(r["params"][p] > 0 for r in pts if p in r["params"]):
                ax.set_xscale("log")
        ax.set_xlabel(p)
        ax.set_ylabel(f"dev {metric}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_tune_report(out: Path, summary: dict, rows: list[dict], importances: dict | None) -> list[Path]:
    """tune.md, tune.html, tune_trials.csv and tune_slice.png under out (reports/<study>/)."""
    params = sorted({p for r in rows for p in r["params"]})
    max_epoch = max((e for r in rows for e in r["epochs"]), default=0)
    head = ["trial", "run", *params, *[f"ep{e}" for e in range(1, max_epoch + 1)], "value", "state"]
    head += ["epoch reached", "steps", "steps planned"]
    table = []
    for r in rows:
        cells = [r["number"], r["variant"], *[r["params"].get(p) for p in params]]
        cells += [r["epochs"].get(e) for e in range(1, max_epoch + 1)]
        cells += [r.get("value"), r["state"].lower(), r.get("epoch_reached"), r.get("steps_run")]
        table.append([*cells, r.get("steps_planned")])
    csv = "\n".join(",".join(_fmt(c) for c in line) for line in [head, *table])
    atomic_write_text(out / "tune_trials.csv", csv + "\n")
    plot = _slice_plot(rows, params, out / "tune_slice.png", summary["metric"])
    md = [f"# Search: study `{summary['study']}` x `{summary['model']}`", ""]
    md += [f"- objective: dev {summary['metric']} ({summary['direction']}); {summary['objective_note']}"]
    md += [f"- sampler: {summary['sampler']}; pruner: {summary['pruner']}; storage: {summary['storage']}"]
    md += [f"- trials: {summary['counts']}"]
    if summary.get("best"):
        b = summary["best"]
        md.append(
            f"- best trial: #{b['number']} `{b['run']}` at epoch {b['epoch']}: dev {summary['metric']}"
            f" {b['value']:.4f} (params {b['params']})"
        )
        if b.get("runner_up_diff") is not None:
            md.append(f"  runner-up by {b['runner_up_diff']:.4f}; the rule asks {b.get('rule_effect')}")
    s = summary["steps"]
    md.append(
        f"- steps: {s['run']} run of {s['planned']} planned; pruning saved {s['saved']}"
        f" ({s['saved_share']:.0%}; a lower bound: the epoch in progress at the stop counts as spent)"
    )
    if importances:
        md.append(
            "- parameter importances (Optuna, fANOVA): "
            + ", ".join(f"{k} {v:.2f}" for k, v in importances.items())
        )
    md += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(_fmt(c) for c in line) + " |" for line in table]
    if plot:
        md += ["", f"![slice plot]({plot.name})"]
    atomic_write_text(out / "tune.md", "\n".join(md) + "\n")
    body = "".join(f"<li>{html.escape(x[2:])}</li>" for x in md if x.startswith("- "))
    rows_html = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in line) + "</tr>" for line in table
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>tune {html.escape(summary['study'])}</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
        f"<h1>{html.escape(md[0][2:])}</h1><ul>{body}</ul><table><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in head)
        + f"</tr>{rows_html}</table>"
        + (f"<p><img src='{plot.name}' alt='slice plot'></p>" if plot else "")
        + "</body></html>\n"
    )
    atomic_write_text(out / "tune.html", page)
    return [out / "tune.md", out / "tune.html", out / "tune_trials.csv", *([plot] if plot else [])]
