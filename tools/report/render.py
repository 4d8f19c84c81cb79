"""report.md and index.html from the table, the verdict and the figures (Jinja templates in templates/report/)."""

from __future__ import annotations

import base64
import math

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from tools.core.paths import TEMPLATES

TEMPLATE_DIR = TEMPLATES / "report"


def _num(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}"
    return str(v)


def _pair(a, b) -> str:
    return "–" if _num(a) == "–" and _num(b) == "–" else f"{_num(a)} / {_num(b)}"


def judge_cell(row) -> str:
    if pd.isna(row.get("judge_mean")):
        return "–"
    s = f"{row['judge_mean']:.3g}"
    if pd.notna(row.get("judge_ci_lo")) and pd.notna(row.get("judge_ci_hi")):
        s += f" [{row['judge_ci_lo']:.3g}, {row['judge_ci_hi']:.3g}]"
    off = row.get("judge_offline")
    if off is not None and pd.notna(off) and bool(off):
        s += " offline"
    elif pd.notna(row.get("judge_comparable")) and not row.get("judge_comparable"):
        s += " (not GPT-4o-mini)"
    if isinstance(row.get("judge_protocol"), str):
        s += f" {row['judge_protocol']}"
    if pd.notna(row.get("judge_lc")) and pd.notna(row.get("judge_lc_lo")):
        s += f"; length-controlled {row['judge_lc']:.3g} [{row['judge_lc_lo']:.3g}, {row['judge_lc_hi']:.3g}]"
    if isinstance(row.get("judge_refs"), str):
        s += f"; refs {row['judge_refs']}"
    return s


def forgetting_cell(row) -> str:
    """Perplexity on held-out general text, and its change against the base model (+ = forgetting)."""
    ppl, rel = row.get("ppl_general"), row.get("forgetting")
    if ppl is None or pd.isna(ppl):
        return "–"
    return f"{ppl:.4g}" + ("" if rel is None or pd.isna(rel) else f" ({100 * rel:+.0f} %)")


def zeroshot_cell(row) -> str:
    """Mean zero-shot accuracy over the tasks scored, and its change against the base model in points."""
    acc, change = row.get("zeroshot_acc"), row.get("zeroshot_change")
    if acc is None or pd.isna(acc):
        return "–"
    return f"{acc:.3f}" + ("" if change is None or pd.isna(change) else f" ({change:+.3f})")


def params_cell(row) -> str:
    """Trainable parameters and their share of the model: '36,992 (1.15 %)'."""
    n, pct = row.get("trainable_params"), row.get("trainable_pct")
    if n is None or pd.isna(n):
        return "–"
    return f"{int(n):,}" + ("" if pct is None or pd.isna(pct) else f" ({float(pct):.3g} %)")


def learned_cell(row) -> str:
    """'10.78 → 9.12' (first → last logged train loss), flagged '(did not learn)' when the loss did not
    fall (run.json's `learned`), '(not estimable)' where that cannot be said (one logged loss); '–' where
    run.json says nothing."""
    first, last, learned = row.get("first_loss"), row.get("last_loss"), row.get("learned")
    if first is None or last is None or pd.isna(first) or pd.isna(last):
        return "–"
    known = learned is not None and not pd.isna(learned)
    flag = " (did not learn)" if known and not learned else "" if known else " (not estimable)"
    return f"{_num(float(first))} → {_num(float(last))}{flag}"


def short_warnings(text: str) -> str:
    """'diverged, still improving' from the full warnings (the page lists them in full below)."""
    kinds = []
    for w in filter(None, text.split("; ")):
        kind = w.split(":")[0].split(" (")[0]
        if kind not in kinds:
            kinds.append(kind)
    return ", ".join(kinds)


def _judge_or_rouge(row, prefix: str) -> str:
    """The dev cell: judge mean [interval], or ROUGE-L where the dev set was not judged."""
    if pd.notna(row.get(f"{prefix}mean")):
        return judge_cell(
            {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}
            | {
                "judge_mean": row.get(f"{prefix}mean"),
                "judge_ci_lo": row.get(f"{prefix}ci_lo"),
                "judge_ci_hi": row.get(f"{prefix}ci_hi"),
                "judge_offline": row.get(f"{prefix}offline"),
                "judge_comparable": row.get(f"{prefix}comparable"),
            }
        )
    rouge = row.get(f"{prefix}rougeL")
    return "–" if rouge is None or pd.isna(rouge) else f"ROUGE-L {rouge:.3g}"


def display(table: pd.DataFrame, sci: list[str], dev: str | None = None, testset: str | None = None):
    """Column headers and rows of formatted cells for both templates: the decision first (the point
    each arm is shown at, chosen on dev; its dev and test scores), then the rest. Counts, wall time and
    memory are in runs.csv only, so a laptop-width page shows the scores without scrolling sideways."""
    lead = ["run"]
    if dev:
        lead += ["point (chosen on dev)", f"dev {dev}"]
    lead += [f"test {testset}" if dev and testset else "judge"]
    cols = [*lead, "status", *sci, "steps", "loss final / best"]
    learning = "first_loss" in table and table["first_loss"].notna().any()
    cols += ["learned (train loss first → last)"] if learning else []
    cols += ["eval loss final / best"]
    general = "ppl_general" in table and table["ppl_general"].notna().any()
    cols += ["general ppl (vs base)"] if general else []
    zeroshot = "zeroshot_acc" in table and table["zeroshot_acc"].notna().any()
    cols += ["zero-shot acc (vs base)"] if zeroshot else []
    cost = "trainable_params" in table and table["trainable_params"].notna().any()
    mem = "memory_estimate_mb" in table and table["memory_estimate_mb"].notna().any()
    cols += ["answer words", "ROUGE-L", "truncated"]
    cols += ["trainable params", "s / step"] if cost else []
    cols += ["peak MB (RAM / GPU)", "billed MB"] if mem else []
    cols += ["warnings"]
    rows = []
    for _, r in table.iterrows():
        mark = "★ " if r.get("best") else ""
        trunc = r.get("truncated_share")
        cells = [mark + str(r["label"])]
        if dev:
            cells += [str(r.get("point") or "–"), _judge_or_rouge(r, "dev_")]
        cells += [judge_cell(r), str(r["status"])]
        cells += [_num(r.get(k)) for k in sci]
        cells += [
            _num(r.get("steps")),
            _pair(r.get("final_loss"), r.get("best_loss")),
            *([learned_cell(r)] if learning else []),
            _pair(r.get("final_eval_loss"), r.get("best_eval_loss")),
            *([forgetting_cell(r)] if general else []),
            *([zeroshot_cell(r)] if zeroshot else []),
            _num(r.get("answer_words"), 3),
            _num(r.get("rougeL"), 3),
            "–" if pd.isna(trunc) else f"{100 * float(trunc):.0f} %",
            *([params_cell(r), _num(r.get("s_per_step"), 3)] if cost else []),
            *(
                [_pair(r.get("peak_rss_mb"), r.get("peak_gpu_mb")), _num(r.get("memory_estimate_mb"), 3)]
                if mem
                else []
            ),
            short_warnings(r.get("warnings") or ""),
        ]
        rows.append(
            {"cells": cells, "best": bool(r.get("best")), "is_base": bool(r["is_base"]), "run": r["run"]}
        )
    return cols, rows


def md_table(columns: list[str], rows: list[dict]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, columns)) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(map(esc, r["cells"])) + " |" for r in rows]
    return "\n".join(lines)


def b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def render(context: dict) -> tuple[str, str]:
    """(report.md, index.html) from one context; missing context keys are an error, not a blank."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(["html", "html.j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    ctx = dict(context)
    ctx["md_table"] = md_table(ctx["columns"], ctx["rows"])
    md = env.get_template("report.md.j2").render(**ctx)
    html = env.get_template("index.html.j2").render(**ctx)
    return md, html
