"""One page per study, from the runs' own files, and TensorBoard's HParams view of them.

Reads every run of the study (plus the base model run `<model>/base/base` where it exists): its
TensorBoard events (train/loss, eval/loss, learning rate, grad norm), run.json, and each
evaluation point's metrics.json and scores.json (the final adapter's and each epoch's). With a dev
set, the best run, epoch and decoding are chosen there (tools.report.choose) and the page leads with
that decision: dev and test side by side, paired intervals, the data study's random floor. Writes
`reports/<study>/`:

    report.md, index.html    decision, table, warnings (leakage too), plots, data
    runs.csv, evals.csv      the table for pandas; every run x epoch x set x decoding point
    choice.json              the point chosen on dev (what the demo exports)
    plots/*.png              the figures (index.html embeds them, report.md links them)
    tb/                      HParams summaries: tensorboard --logdir reports/<study>/tb

A run still going, a truncated event file or a run without scores is named in the report, which
still renders. Every file is written atomically; tb/ and plots/ are replaced as a whole.

Usage:
    python -m tools.report --study rank [--model smollm2_135m] [--testset demo_eval] [--decoding greedy]
                           [--no-base] [--workers N] [--no-cache]
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from filelib import atomic_dir, atomic_write_json, atomic_write_text, run_main
from tools.core.args import checked, command, opt
from tools.core.paths import TEMPLATES, report_dir, runs_of_study, study_dir
from tools.report.advice import Advice, intervals_overlap, run_advice
from tools.report.choose import Choice, choose_on_dev, split_sets
from tools.report.collect import RunRecord, collect
from tools.report.data import data_section, leakage_lines
from tools.report.decision import decide, random_floor
from tools.report.hparams import write_hparams
from tools.report.plots import axis_png, curves_png, decoding_png, epochs_png
from tools.report.render import b64, display, render
from tools.report.table import (
    Verdict,
    build_table,
    curve_warnings,
    judge_of,
    pick_point,
    study_axis,
    study_warnings,
    verdict,
)


@dataclass
class Report:
    out: Path
    table: pd.DataFrame
    verdict: Verdict
    warnings: list[str]
    records: list[RunRecord]
    advice: list[Advice] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    choice: Choice | None = None  # the best run, epoch and decoding point, chosen on the dev set
    floor: dict | None = None  # the data study's strategies against the random arms


def study_question(study: str) -> str | None:
    """The question the study spec asks (templates/studies/<study>.yaml), shown under the title."""
    from tools.core.profiles import load_yaml

    spec = TEMPLATES / "studies" / f"{study}.yaml"
    try:
        q = (load_yaml(spec) or {}).get("question")
    except (ValueError, AttributeError):
        return None
    return str(q) if q else None


def evals_frame(records: list[RunRecord]) -> pd.DataFrame:
    """Every evaluation point of every run, long form: the decoding grid for pandas users."""
    rows = []
    for r in records:
        for e in r.evals:
            m = e.metrics or {}
            rows.append(
                {
                    "run": r.run.name,
                    "label": r.label,
                    "testset": e.testset,
                    "epoch": e.epoch,
                    "decoding": e.decoding,
                    **judge_of(e),
                    **{k: m.get(k) for k in ("rougeL", "answer_words_mean", "truncated_share", "n")},
                }
            )
    return pd.DataFrame(rows)


def study_advice(records: list[RunRecord], table: pd.DataFrame, testset, decoding) -> list[Advice]:
    """Every rule for every run (metrics at the shown point, against its model's base run), then the study's."""
    base = {r.run.model: r.eval_point(testset, decoding) for r in records if r.is_base}
    out: list[Advice] = []
    for r in records:
        e = r.eval_point(testset, decoding)
        b = base.get(r.run.model)
        out += run_advice(r, e.metrics if e else None, None if r.is_base or b is None else b.metrics)
    arms = table[~table["is_base"]] if not table.empty else table
    overlap = intervals_overlap(
        [
            (row["label"], row["judge_mean"], row["judge_ci_lo"], row["judge_ci_hi"])
            for _, row in arms.iterrows()
        ]
        if "judge_mean" in arms
        else []
    )
    return out + ([overlap] if overlap else [])


@dataclass
class ReportArgs:
    """Every option of a report, each default, help and rule once (tools.core.args)."""

    study: str = opt(help="the study to report (templates/studies/<study>.yaml)", required=True)
    model: str | None = opt(None, help="only this model's runs (default: every model)")
    testset: str | None = opt(None, help="evaluation set for the table (default: the commonest)")
    decoding: str | None = opt(None, help="decoding point for the table (default: greedy)")
    with_base: bool = opt(True, help="leave the base model run out", flag="--no-base")
    workers: int | None = opt(None, help="processes reading events (default: per core)", min=1)
    data_dir: Path | None = None  # the data sets' folder for the data section (not an option)
    cache: bool = opt(True, help="re-read every event file (ignore cache/report_events)")

    def check(self) -> list[str]:
        problems = []  # names are folder names: `../x` would read or write outside saves/ and reports/
        for flag, value, check in (
            ("--study", self.study, report_dir),
            ("--model", self.model, lambda m: study_dir(m, "x")),
        ):
            try:
                check(value) if value else None
            except ValueError as e:
                problems.append(f"{flag} {value!r}: {e}")
        return problems


def build_report(study: ReportArgs | str | None = None, *more, **options) -> Report:
    """Read the study's runs and write reports/<study>/; returns what was written and how long each part took.

    `study` is a ReportArgs, or its fields in order (`build_report("rank", with_base=False)`)."""
    a = checked(study if isinstance(study, ReportArgs) else ReportArgs(study, *more, **options))
    study, model, testset, decoding, data_dir = a.study, a.model, a.testset, a.decoding, a.data_dir
    t0, c0 = time.perf_counter(), time.process_time()
    runs = runs_of_study(study, model, with_base=a.with_base)
    if not runs:
        where = f"saves/{model or '*'}/lora/{study}/"
        raise SystemExit(f"study {study!r}: no run folders under {where} (nothing to report)")
    records = collect(runs, a.workers, a.cache)
    t_read, c_read = time.perf_counter(), time.process_time()

    dev, _ = split_sets(records)
    choice = choose_on_dev(records, dev)  # on the dev set only: the test set never takes part in a choice
    testset, decoding = pick_point(records, testset, decoding, exclude=(dev,) if dev else ())
    axis = study_axis(records)
    dev_points: dict = {}
    for p in choice.candidates:  # sorted best first: each arm's own best point on dev
        dev_points.setdefault(p.trained, p)
    table = build_table(records, testset, decoding, axis, dev, dev_points)
    order = {run: i for i, run in enumerate(table["run"])}
    records.sort(key=lambda r: order.get(r.run.name, len(order)))  # the table's order in every figure
    v = verdict(table)
    decision = None
    if choice.best is not None:
        chosen = next(r for r in records if r.run.name == choice.best.trained)
        base = next((r for r in records if r.is_base and r.run.model == chosen.run.model), None)
        decision = decide(records, choice, testset, (base.run, choice.best.decoding) if base else None)
        v = Verdict(choice.metric, chosen.label, clear=decision.clear, text=" ".join(decision.lines))
        table["best"] = (table["label"] == v.best) & ~table["is_base"]
    floor = random_floor(records, [t for t in (testset, dev) if t], decoding or "greedy")
    warns = study_warnings(table, axis, v)
    trained_on = sorted({d for r in records for d in str(r.hparams.get("dataset") or "").split(",") if d})
    warns += leakage_lines(data_dir, trained_on or None)
    advice = study_advice(records, table, testset, decoding)
    sci = [c for c in table.columns if any(c in (r.info.get("scientific") or []) for r in records)]

    plots = []
    for name, title, png in (
        ("loss.png", "Loss per run (train solid, eval dashed)", curves_png(records, "loss", "loss", True)),
        ("learning_rate.png", "Learning rate", curves_png(records, "learning_rate", "learning rate")),
        ("grad_norm.png", "Gradient norm", curves_png(records, "grad_norm", "grad norm")),
        (
            "by_axis.png",
            f"Judge score and ROUGE-L against {axis.key or 'variant'} ({testset}/{decoding})",
            axis_png(table, axis),
        ),
        ("decoding.png", f"Decoding grid ({testset})", decoding_png(records, testset)),
        ("epochs.png", f"Score per epoch on the dev set ({dev})", epochs_png(records, dev) if dev else None),
    ):
        if png:
            plots.append({"title": title, "file": name, "png": png, "b64": b64(png)})
    data = data_section(data_dir)
    data_plots = []
    for p in data["plots"]:
        png = p.read_bytes()
        data_plots.append({"name": p.name, "file": f"data_{p.name}", "png": png, "b64": b64(png)})
    data = {**data, "plots": data_plots}
    t_plots = time.perf_counter()

    out = report_dir(study)
    columns, rows = display(table, sci, dev, testset)
    notes = []
    for r in records:
        warn = (
            [f"failed (returncode {r.info.get('returncode')})"] if r.status == "failed" else []
        ) + curve_warnings(r.curves)
        if warn or r.problems:
            notes.append({"label": r.label, "warnings": warn, "missing": r.problems})
    points = Counter((e.testset, e.decoding) for r in records for e in r.evals)
    context = {
        "study": study,
        "model": model,
        "question": study_question(study),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "n_runs": len(records),
        "testset": testset,
        "decoding": decoding,
        "axis_key": axis.key,
        "axis_also": axis.also,
        "verdict": v.text,
        "verdict_clear": v.clear,
        "dev": dev,
        "chosen": choice.best.run if choice.best else None,
        "chosen_decoding": choice.best.decoding if choice.best else None,
        "floor": floor["text"] if floor else None,
        "study_warnings": warns,
        "advice": [a.as_dict() for a in advice],
        "columns": columns,
        "rows": rows,
        "run_notes": notes,
        "plots": plots,
        "points": [{"testset": t, "decoding": d, "runs": n} for (t, d), n in sorted(points.items())],
        "data": data,
        "tb_dir": str(out / "tb"),
    }
    md, html = render(context)
    with atomic_dir(out / "plots") as tmp:
        for p in plots + data_plots:
            (tmp / p["file"]).write_bytes(p["png"])
    atomic_write_text(out / "runs.csv", table.to_csv(index=False))
    atomic_write_json(out / "choice.json", {**choice.as_dict(), "floor": floor})
    atomic_write_text(out / "evals.csv", evals_frame(records).to_csv(index=False))
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "index.html", html)
    write_hparams(out / "tb", table, sci)
    t_end, c_end = time.perf_counter(), time.process_time()
    timings = {
        "read": t_read - t0,
        "analyse_plot": t_plots - t_read,
        "write": t_end - t_plots,
        "total": t_end - t0,
    }
    # CPU seconds of this process (reading in worker processes is not in `cpu_read`): on a shared
    # machine they say what the report costs where wall time says how busy the machine was
    timings.update(cpu_read=c_read - c0, cpu_rest=c_end - c_read)
    return Report(out, table, v, warns, records, advice=advice, timings=timings, choice=choice, floor=floor)


@command(ReportArgs, __doc__)
def main(a: ReportArgs) -> int:
    rep = build_report(a)
    print(f"report: {rep.out / 'index.html'} ({len(rep.records)} runs, {rep.timings['total']:.1f} s)")
    print(f"        {rep.verdict.text}")
    if rep.floor:
        print(f"        {rep.floor['text']}")
    for w in rep.warnings:
        print(f"  warning: {w}")
    print(f"        tensorboard --logdir {rep.out / 'tb'}")
    return 0


if __name__ == "__main__":
    run_main(main)
