"""From run records to the study's table, its verdict and the warnings a careful reader wants.

Numbers come straight from the files: final loss is the last `train/loss` logged, best loss its
minimum, the judge score is `scores.json`'s mean with its `ci95`. The best arm is the highest
judge mean; it is called a clear winner only when its 95 % interval does not overlap the
runner-up's. The study's axis is the scientific hyperparameter (run.json `scientific`) that varies
across arms; where it is numeric, a best value on the edge of the grid is flagged.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tools.report import trend
from tools.report.collect import RunRecord, zeroshot_accs
from tools.report.events import Curves

PREFERRED_TESTSETS = ("hw5_test", "demo_eval")


def _finite(xs: list[float]) -> list[float]:
    return [x for x in xs if x is not None and math.isfinite(x)]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def summarize(curves: Curves) -> dict:
    """Final and best train/eval loss (and where), last step, largest grad norm: numbers for the table."""
    out: dict = {}
    steps, loss = curves.steps("loss"), curves.values("loss")
    out["steps"] = steps[-1] if steps else None
    out["final_loss"] = loss[-1] if loss else None
    ok = [(v, s) for s, v in zip(steps, loss, strict=True) if math.isfinite(v)]
    out["best_loss"], out["best_loss_step"] = min(ok) if ok else (None, None)
    esteps, eloss = curves.steps("eval_loss"), curves.values("eval_loss")
    out["final_eval_loss"] = eloss[-1] if eloss else None
    eok = [(v, s) for s, v in zip(esteps, eloss, strict=True) if math.isfinite(v)]
    out["best_eval_loss"], out["best_eval_step"] = min(eok) if eok else (None, None)
    g = _finite(curves.values("grad_norm"))
    out["max_grad_norm"] = max(g) if g else None
    return out


def curve_warnings(curves: Curves) -> list[str]:
    """Diverged (NaN, loss going up), still improving at the last step, eval loss rising (overfitting):
    read once by tools.report.trend, the same reading the advice uses."""
    warn = []
    for name in ("loss", "grad_norm", "eval_loss"):
        bad = [
            s for s, v in zip(curves.steps(name), curves.values(name), strict=True) if not math.isfinite(v)
        ]
        if bad:
            warn.append(f"diverged: {name} is NaN/inf from step {bad[0]} ({len(bad)} points)")
    t = trend.read(
        curves.steps("loss"), curves.values("loss"), curves.steps("eval_loss"), curves.values("eval_loss")
    )
    if t.train == "rising":
        warn.append(f"diverged: train loss went up from {t.first:.4g} to {t.last:.4g}")
    if t.improving:
        warn.append(
            f"still improving at its last step: train loss {t.first:.4g} -> {t.last:.4g}, lowest in the last "
            "fifth of its steps (more steps may help)"
        )
    if t.overfit:
        s_min, e_min, s_end, e_end = t.overfit
        warn.append(
            f"overfitting: eval loss rose from {e_min:.4g} (step {s_min}) to {e_end:.4g} "
            f"(step {s_end}) while train loss fell from {t.train_at[0]:.4g} to {t.train_at[1]:.4g}"
        )
    return warn


def pick_point(
    records: list[RunRecord],
    testset: str | None = None,
    decoding: str | None = None,
    exclude: tuple[str, ...] = (),
) -> tuple[str | None, str | None]:
    """The evaluation point the table shows: the test set most runs have (HW5's first; never a set in
    `exclude`, the dev set), then greedy."""
    if testset is None:
        counts = Counter(e.testset for r in records for e in r.evals if e.testset not in exclude)
        if counts:
            top = max(counts.values())
            tied = [t for t, c in counts.items() if c == top]
            testset = next((t for t in PREFERRED_TESTSETS if t in tied), sorted(tied)[0])
    if decoding is None and testset is not None:
        counts = Counter(e.decoding for r in records for e in r.evals if e.testset == testset)
        if "greedy" in counts:
            decoding = "greedy"
        elif counts:
            decoding = sorted(counts, key=lambda d: (-counts[d], d))[0]
    return testset, decoding


@dataclass
class Axis:
    key: str | None  # None: the arms differ by variant name only
    numeric: bool
    values: dict[str, object] = field(default_factory=dict)  # label -> value
    also: list[str] = field(default_factory=list)  # other scientific keys that vary with it


def study_axis(records: list[RunRecord]) -> Axis:
    arms = [r for r in records if not r.is_base]
    keys: list[str] = []
    for r in arms:
        for k in r.info.get("scientific") or list(r.hparams):
            if k not in keys:
                keys.append(k)
    varying = [k for k in keys if len({repr(r.hparams.get(k)) for r in arms}) > 1]
    if not varying:
        return Axis(None, False, {r.label: r.label for r in arms})
    key = varying[0]
    values = {r.label: r.hparams.get(key) for r in arms}
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values())
    return Axis(key, numeric, values, varying[1:])


def judge_of(e) -> dict:
    s = (e.scores if e else None) or {}
    ci = s.get("ci95") or [None, None]
    return {
        "judge_mean": s.get("mean"),
        "judge_ci_lo": ci[0] if len(ci) == 2 else None,
        "judge_ci_hi": ci[1] if len(ci) == 2 else None,
        "judge_n": s.get("n"),
        "judge_unparsed": s.get("n_unparsed"),
        "judge_failed": s.get("n_failed"),
        "judge_model": s.get("judge_model"),
        "judge_offline": s.get("offline"),
        "judge_comparable": s.get("comparable_with_gpt4o_mini"),
        # which protocol and which reference answers the number is on (tools/judge: scores.json)
        "judge_protocol": s.get("protocol"),
        "judge_refs": _refs_label(s.get("references")),
        **_length_controlled(s.get("length_controlled")),
    }


def _refs_label(prov) -> str | None:
    if not isinstance(prov, dict) or not prov.get("path"):
        return None
    return f"{Path(str(prov['path'])).name} {str(prov.get('sha256') or '')[:8]}".strip()


def _length_controlled(lc) -> dict:
    lc = lc if isinstance(lc, dict) else {}
    ci = lc.get("lc_ci95") or [None, None]
    return {"judge_lc": lc.get("lc"), "judge_lc_lo": ci[0], "judge_lc_hi": ci[1]}


def metrics_of(e) -> dict:
    m = (e.metrics if e else None) or {}
    return {
        "answer_words": m.get("answer_words_mean"),
        "answer_tokens": m.get("answer_tokens_mean"),
        "rougeL": m.get("rougeL"),
        "truncated_share": m.get("truncated_share"),
        "ppl_general": m.get("ppl_heldout"),  # perplexity on held-out general text: the forgetting guard
        **zeroshot_of(m),
    }


def zeroshot_of(m: dict) -> dict:
    """`zs_<task>` accuracy columns and their mean (`zeroshot_acc`): the forgetting guard's second measure."""
    accs = zeroshot_accs(m)
    return {
        **{f"zs_{t}": a for t, a in accs.items()},
        "zeroshot_acc": sum(accs.values()) / len(accs) if accs else None,
        "zeroshot_tasks": ",".join(sorted(accs)) or None,
    }


def learning_of(info: dict, logged: int) -> dict:
    """The first and last logged train loss and whether the run learned (run.json, written by
    tools.train.trainstats from the run's trainer_log.jsonl); None where the run has not said, or where
    one loss was logged (`logged`: the losses in its events), which says nothing of learning."""
    first, last, learned = info.get("first_loss"), info.get("final_loss"), info.get("learned")
    ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (first, last))
    single = logged < 2 and first == last
    return {
        "first_loss": first if ok else None,
        "last_loss": last if ok else None,
        "learned": learned if ok and isinstance(learned, bool) and not single else None,
    }


@dataclass
class Verdict:
    metric: str | None  # judge_mean | rougeL | None
    best: str | None = None
    runner_up: str | None = None
    clear: bool = False
    text: str = "no evaluation yet: no arm has judge scores or metrics"


def verdict(table: pd.DataFrame) -> Verdict:
    """The best arm by judge mean (or ROUGE-L without a judge); clear only if the 95 % intervals are apart."""
    arms = table[~table["is_base"]]
    for metric in ("judge_mean", "rougeL"):
        scored = arms[arms[metric].notna()].sort_values(metric, ascending=False)
        if scored.empty:
            continue
        kinds = _judge_kinds(scored) if metric == "judge_mean" else set()
        if len(kinds) > 1:  # never rank numbers of different protocols or judges against each other
            return Verdict(
                metric,
                text="no verdict: the judge scores come from different judges or protocols ("
                + ", ".join(f"{p} by {m}" for m, p in sorted(kinds, key=str))
                + "); judge every arm alike",
            )
        best = scored.iloc[0]
        v = Verdict(metric, best["label"])
        what = "judge score" if metric == "judge_mean" else "ROUGE-L (no judge scores, no interval)"
        if len(scored) == 1:
            v.text = f"only one arm evaluated: {best['label']} ({what} {best[metric]:.3g})"
            return v
        second = scored.iloc[1]
        v.runner_up = second["label"]
        if metric == "judge_mean" and pd.notna(best["judge_ci_lo"]) and pd.notna(second["judge_ci_hi"]):
            v.clear = bool(best["judge_ci_lo"] > second["judge_ci_hi"])
            iv = (
                f"{best['label']} {best[metric]:.3g} [{best['judge_ci_lo']:.3g}, {best['judge_ci_hi']:.3g}] "
                f"vs {second['label']} {second[metric]:.3g} "
                f"[{second['judge_ci_lo']:.3g}, {second['judge_ci_hi']:.3g}]"
            )
            v.text = (
                f"best arm: {best['label']} ({iv}; the 95 % intervals do not overlap)"
                if v.clear
                else f"no clear winner: the best arm's 95 % interval overlaps the runner-up's ({iv})"
            )
        else:
            v.text = (
                f"best by {what}: {best['label']} {best[metric]:.3g} vs {second['label']} "
                f"{second[metric]:.3g} (no interval: not a verdict)"
            )
        return v
    return Verdict(None)


def _judge_kinds(rows: pd.DataFrame) -> set:
    protocol = rows["judge_protocol"] if "judge_protocol" in rows else pd.Series([None] * len(rows))
    return {
        (m, p if isinstance(p, str) else None) for m, p in zip(rows["judge_model"], protocol, strict=True)
    }


def build_table(
    records: list[RunRecord],
    testset: str | None,
    decoding: str | None,
    axis: Axis,
    dev: str | None = None,
    dev_points: dict | None = None,
) -> pd.DataFrame:
    """One row per run: scientific hyperparameters, loss, judge, metrics, cost, status, warnings.

    With a dev set, each arm is shown at its own best point on dev (`dev_points`: run name -> Point of
    tools.report.choose, its epoch and decoding), and its test columns at that same point."""
    dev_points = dev_points or {}
    sci: list[str] = []
    for r in records:
        for k in r.info.get("scientific") or []:
            if k not in sci:
                sci.append(k)
    rows = []
    for r in records:
        pt = dev_points.get(r.run.name)
        e = r.eval_point(testset, pt.decoding, pt.epoch) if pt else r.eval_point(testset, decoding)
        row = {"run": r.run.name, "label": r.label, "model": r.run.model, "is_base": r.is_base}
        if dev:
            d = r.eval_point(dev, pt.decoding, pt.epoch) if pt else r.eval_point(dev, decoding)
            row["point"] = (
                (f"@epoch{pt.epoch} " if pt.epoch is not None else "") + pt.decoding if pt else decoding
            )
            row.update({f"dev_{k.removeprefix('judge_')}": v for k, v in judge_of(d).items()})
            row["dev_rougeL"] = ((d.metrics or {}) if d else {}).get("rougeL")
        row["status"] = r.status
        for k in sci:
            v = r.hparams.get(k)
            row[k] = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
        row.update(summarize(r.curves))
        row.update(judge_of(e))
        row.update(metrics_of(e))
        row["testset"], row["decoding"] = testset, decoding
        row["wall_s"] = r.info.get("wall_s")
        row["peak_rss_mb"] = r.info.get("peak_rss_mb")
        row["peak_gpu_mb"] = r.info.get("peak_gpu_mb")
        # preflight's memory bill (tools/train/memory.py), beside the measured peaks
        row["memory_estimate_mb"] = (r.info.get("memory_estimate") or {}).get("total_mb")
        # what a method costs (tools.train.trainstats, from LLaMA-Factory's log and trainer files)
        for k in ("trainable_params", "trainable_pct", "s_per_step"):
            row[k] = r.info.get(k)
        row.update(learning_of(r.info, len(r.curves.values("loss"))))
        warn = curve_warnings(r.curves)
        if row["learned"] is False:
            warn.append(
                f"did not learn: train loss {row['first_loss']:.4g} -> {row['last_loss']:.4g}, "
                "not below its first logged value"
            )
        if r.status == "failed":
            warn.insert(0, f"failed (returncode {r.info.get('returncode')})")
        row["warnings"] = "; ".join(warn)
        missing = list(r.problems)
        if testset and e is None:
            where = f"{pt.run.rsplit('/', 1)[1]}/{pt.decoding}" if pt else decoding
            missing.append(f"no evaluation at {testset}/{where}")
        row["missing"] = "; ".join(missing)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df

    def key(i: int) -> tuple:
        r = records[i]  # base rows last; numeric axes in order, others by name
        v = axis.values.get(r.label)
        return (
            r.is_base,
            not (axis.numeric and v is not None),
            v if axis.numeric and v is not None else 0,
            r.label,
        )

    base_ppl = {r.run.model: row["ppl_general"] for r, row in zip(records, rows, strict=True) if r.is_base}
    df["forgetting"] = [
        row["ppl_general"] / base_ppl[r.run.model] - 1
        if row["ppl_general"] and base_ppl.get(r.run.model) and not r.is_base
        else None
        for r, row in zip(records, rows, strict=True)
    ]
    # zero-shot accuracy against the base model's, on the same tasks only (points, + = better)
    base_zs = {r.run.model: row for r, row in zip(records, rows, strict=True) if r.is_base}
    df["zeroshot_change"] = [
        row["zeroshot_acc"] - base_zs[r.run.model]["zeroshot_acc"]
        if row["zeroshot_acc"] is not None
        and r.run.model in base_zs
        and base_zs[r.run.model]["zeroshot_acc"] is not None
        and base_zs[r.run.model]["zeroshot_tasks"] == row["zeroshot_tasks"]
        and not r.is_base
        else None
        for r, row in zip(records, rows, strict=True)
    ]
    df = df.iloc[sorted(range(len(records)), key=key)]
    df = df.reset_index(drop=True)
    v = verdict(df)
    df.insert(2, "best", (df["label"] == v.best) & ~df["is_base"] if v.best else False)
    return df


def study_warnings(table: pd.DataFrame, axis: Axis, v: Verdict) -> list[str]:
    """Warnings about the study as a whole: edge of the grid, failed runs, judges that do not compare."""
    warn = []
    arms = table[~table["is_base"]] if not table.empty else table
    if v.best and axis.numeric and axis.key:
        values = sorted({float(x) for x in axis.values.values() if x is not None})
        best_value = axis.values.get(v.best)
        if len(values) >= 3 and best_value is not None and float(best_value) in (values[0], values[-1]):
            side = "lowest" if float(best_value) == values[0] else "highest"
            warn.append(
                f"best value on the edge of the grid: {v.best} ({axis.key}={best_value}) is the {side} value "
                f"tried ({values[0]:g}..{values[-1]:g}); extend the grid past it"
                + ("" if v.clear else " (and it is not a clear winner)")
            )
    for _, row in arms.iterrows():
        if row["warnings"]:
            for w in row["warnings"].split("; "):
                if w.startswith(("failed", "diverged", "overfitting", "did not learn")):
                    warn.append(f"{row['label']}: {w}")
    judges = {
        (r["judge_model"], bool(r["judge_offline"]), r.get("judge_protocol"))
        for _, r in table.iterrows()
        if pd.notna(r["judge_mean"])
    }
    if len(judges) > 1:
        warn.append(
            "judge scores come from different judges or protocols and do not compare: "
            + ", ".join(
                f"{m}{' (offline)' if off else ''}{f' {p}' if isinstance(p, str) else ''}"
                for m, off, p in sorted(judges, key=str)
            )
        )
    if any(off for _, off, _ in judges):
        warn.append("offline judge: scores are not comparable with GPT-4o-mini's (scores.json says offline)")
    unparsed = arms[pd.to_numeric(arms["judge_unparsed"], errors="coerce").fillna(0) > 0]
    for _, row in unparsed.iterrows():
        warn.append(
            f"{row['label']}: {int(row['judge_unparsed'])} judgments unparsed (of n={row['judge_n']})"
        )
    return warn
