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
TAIL = ("acc_mean", "tokens_per_s", "latency_s", "peak_mem_mb", "mem_basis", "device")
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
        row.update(tokens_per_s=sp.get("tokens_per_s"), latency_s=sp.get("latency_s"))
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
    md += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
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
