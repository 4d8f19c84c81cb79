"""The recovery study's report: before pruning, after pruning and after recovery, in one table.

Reads each run's `eval/recovery/evaluation_results.json` (tools.eval.recovery) and writes
`reports/recovery/`: `results.csv` (every column, one row per run and stage), `report.md` (the same
table, how much of the perplexity lost to pruning the recovery won back, and the FAQ of LLM-Pruner's
recovery script as advice). A value that could not be measured (a hub dataset offline) is shown as
`-` with the reason below the table, never as a number.

Usage:
    python -m tools.report.recovery [--study recovery] [--model smollm2_135m]
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass

from filelib import atomic_write_text, run_main
from tools.core.args import command, opt
from tools.core.paths import report_dir, runs_of_study

STAGES = ("unpruned", "pruned", "recovered")
# The fixed columns; one `ppl:<text>` per perplexity text and one `acc:<task>` per zero-shot task follow
# the parameters, in the order first seen, then the mean accuracy and the speed and memory columns.
HEAD = ("run", "stage", "params", "pruned_share")
# What a tokens/s figure rests on (tools.core.timing via tools.eval.recovery): in results.csv beside it, in
# report.md inside its cell.
SPEED_DETAIL = ("tokens_per_s_spread", "speed_noisy", "speed_repeats", "speed_threads")
TAIL = ("acc_mean", "tokens_per_s", *SPEED_DETAIL, "latency_s", "peak_mem_mb", "mem_basis", "device")
FAQ = (
    (
        "out of memory",
        "a smaller micro-batch (per_device_train_batch_size), a shorter cutoff_len or a lower lora_rank",
    ),
    ("too slow", "a larger micro-batch, group_by_length, or a smaller validation split (val_size)"),
    ("loss flat", "a higher learning_rate, a higher lora_rank or more num_train_epochs"),
)


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def rows_of(results: dict) -> tuple[list[dict], list[str]]:
    """(table rows, notes) for one run's evaluation_results.json."""
    stages = results.get("stages") or {}
    base = (stages.get("unpruned") or {}).get("params")
    rows, notes = [], []
    for name in [s for s in STAGES if s in stages] + [s for s in stages if s not in STAGES]:
        st = stages[name]
        row = {"run": results["run"], "stage": name, "params": st["params"]}
        row["pruned_share"] = round(1 - st["params"] / base, 4) if base else None
        for text, value in (st.get("perplexity") or {}).items():
            row[f"ppl:{text}"] = _num(value)
            if _num(value) is None and name == "pruned":
                notes.append(f"ppl {text}: {value}")
        accs = []
        for task, m in (st.get("zero_shot") or {}).items():
            row[f"acc:{task}"] = m.get("acc")
            accs += [m["acc"]] if _num(m.get("acc")) is not None else []
            if "skipped" in m and name == "pruned":
                notes.append(f"zero-shot {task}: {m['skipped']}")
        row["acc_mean"] = round(sum(accs) / len(accs), 4) if accs else None
        sp = st.get("speed") or {}
        row.update(tokens_per_s=sp.get("tokens_per_s"), tokens_per_s_spread=sp.get("tokens_per_s_spread"))
        row.update(
            speed_noisy=sp.get("noisy"), speed_repeats=sp.get("repeats"), speed_threads=sp.get("threads")
        )
        row["latency_s"] = sp.get("latency_s")
        row.update(
            peak_mem_mb=st.get("peak_mem_mb"), mem_basis=st.get("peak_mem_basis"), device=st.get("device")
        )
        rows.append(row)
    return rows, notes


def columns(rows: list[dict]) -> list[str]:
    middle = [k for r in rows for k in r if k.startswith(("ppl:", "acc:"))]
    middle = sorted(dict.fromkeys(middle), key=lambda k: (not k.startswith("ppl:"), middle.index(k)))
    return [*HEAD, *middle, *TAIL]


def recovered_share(rows: list[dict], text: str) -> float | None:
    """How much of the perplexity pruning added the recovery took back (1 = all of it)."""
    by = {r["stage"]: r.get(f"ppl:{text}") for r in rows}
    u, p, r = by.get("unpruned"), by.get("pruned"), by.get("recovered")
    if None in (u, p, r) or p <= u:  # pruning did not hurt this text: nothing to recover
        return None
    return round((p - r) / (p - u), 3)


def timed(sp: dict) -> bool:
    """Whether a stage's speed rests on several timed passes (a spread), as tools.eval.recovery times it."""
    n = sp.get("repeats")
    return _num(sp.get("tokens_per_s_spread")) is not None and isinstance(n, int) and n >= 2


def speed_cell(sp: dict) -> str:
    """tokens/s as `median ± spread` over the timed passes, `(noisy)` when the spread exceeds
    timing.NOISY_SHARE of the median; "not estimable" where no spread was measured (one timing on a shared
    machine is mostly its neighbours' load, never shown as a figure)."""
    from tools.core.timing import cell

    n = sp.get("repeats") if timed(sp) else 0
    return cell(_num(sp.get("tokens_per_s")), _num(sp.get("tokens_per_s_spread")), n=n)


def latency_cell(sp: dict) -> str:
    """Seconds per answer: the median pass's time per prompt, from the same passes as tokens/s (noisy
    when that is); "not estimable" as tokens/s is."""
    from tools.core.timing import NOT_ESTIMABLE

    lat = _num(sp.get("latency_s"))
    if lat is None:
        return "-"
    if not timed(sp):
        return NOT_ESTIMABLE
    return f"{lat:.3g} (median of {sp['repeats']}){' (noisy)' if sp.get('noisy') else ''}"


def speed_of(row: dict) -> dict:
    """A report row's speed columns as tools.eval.recovery's `speed` dict."""
    return {
        "tokens_per_s": row.get("tokens_per_s"),
        "tokens_per_s_spread": row.get("tokens_per_s_spread"),
        "noisy": row.get("speed_noisy"),
        "repeats": row.get("speed_repeats"),
        "latency_s": row.get("latency_s"),
    }


def speed_notes(rows: list[dict]) -> list[str]:
    """What the speed columns rest on, which stages' speeds are noisy, and which are not estimable."""
    from tools.core.timing import NOISY_SHARE

    ok = [r for r in rows if timed(speed_of(r))]
    notes = []
    if ok:
        reps = ", ".join(sorted({str(r["speed_repeats"]) for r in ok}))
        threads = ", ".join(sorted({str(r.get("speed_threads") or "all") for r in ok}))
        notes.append(
            f"tokens/s: the median ± spread (interquartile range; the whole range below 4) of {reps} "
            f"timed passes after a warm-up, {threads} thread(s) (tools.core.timing); latency_s: the median "
            f"pass's seconds per answer. `(noisy)`: a spread above {100 * NOISY_SHARE:.0f}% of its median; "
            "compare speeds only where neither is noisy."
        )
    noisy = [f"{r['run']} {r['stage']}" for r in ok if r.get("speed_noisy")]
    if noisy:
        notes.append(f"noisy speed (the machine's load, not the model): {', '.join(noisy)}.")
    lone = [f"{r['run']} {r['stage']}" for r in rows if r.get("tokens_per_s") is not None and r not in ok]
    if lone:
        notes.append(
            f"speed not estimable (one timing, no spread): {', '.join(lone)}; re-run tools.eval.recovery "
            "to time it over several passes."
        )
    return notes


def _md_cell(row: dict, col: str) -> str:
    if col == "tokens_per_s":
        return speed_cell(speed_of(row))
    if col == "latency_s":
        return latency_cell(speed_of(row))
    return _cell(row.get(col))


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:,.2f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def build_recovery_report(study: str = "recovery", model: str | None = None) -> dict:
    rows, notes, missing = [], [], []
    for run in runs_of_study(study, model):
        path = run.output_dir / "eval" / "recovery" / "evaluation_results.json"
        if not path.exists():
            missing.append(run.name)
            continue
        r, n = rows_of(json.loads(path.read_text()))
        rows += r
        notes += n
    if not rows:
        raise FileNotFoundError(
            f"no run of study {study!r} has evaluation_results.json (tools.eval.recovery --run)"
        )
    cols = columns(rows)
    out = report_dir(study)
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    md = [f"# Recovery of pruned models (study `{study}`)", ""]
    md += [
        "Before pruning, after pruning and after LoRA recovery (tools.eval.recovery; one process per stage).",
        "",
    ]
    shown = [c for c in cols if c not in SPEED_DETAIL]  # in the tokens/s cell
    md += ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    md += ["| " + " | ".join(_md_cell(r, c) for c in shown) + " |" for r in rows]
    texts = [c.removeprefix("ppl:") for c in cols if c.startswith("ppl:")]
    md += [""]
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == run]
        for text in texts:
            share = recovered_share(mine, text)
            if share is not None:
                md.append(
                    f"- {run}: recovery took back {100 * share:.0f}% of the perplexity pruning added on {text}."
                )
    md += [f"- {n}" for n in speed_notes(rows)]
    md += [f"- not measured: {n}" for n in dict.fromkeys(notes)]
    md += [f"- not evaluated yet: {m} (python -m tools.eval.recovery --run {m})" for m in missing]
    md += ["", "## What to try", ""] + [f"- {sym}: {fix}." for sym, fix in FAQ]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    return {"dir": out, "rows": rows, "columns": cols}


@dataclass
class RecoveryReportArgs:
    study: str = opt("recovery", help="the recovery study")
    model: str | None = opt(None, help="only this model's runs (default: every model)")


@command(RecoveryReportArgs, __doc__)
def main(a: RecoveryReportArgs) -> int:
    try:
        done = build_recovery_report(a.study, a.model)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((done["dir"] / "report.md").read_text())
    return 0


if __name__ == "__main__":
    run_main(main)
