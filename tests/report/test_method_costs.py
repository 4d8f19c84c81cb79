"""The method study's report: one row per method with its trainable parameters and seconds per step."""

from __future__ import annotations

import pandas as pd

from filelib import atomic_write_json
from tools.core.paths import Run, report_dir
from tools.report.build import build_report
from tools.report.synthetic import metrics, scores, standard_series, write_run

COSTS = {  # variant: (trainable params, trainable %, s/step, judge mean)
    "lora": (1_000, 1.0, 0.5, 6.0),
    "vera": (40, 0.04, 0.6, 5.5),
    "full": (100_000, 100.0, 2.0, None),
}


def run_table(study: str) -> list[list[str]]:
    """report.md's run table (not the advice table, which starts with `run` too): header, then rows."""
    lines = (report_dir(study) / "report.md").read_text().splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith("| run |") and "| status |" in line]
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    table = [lines[start], *lines[start + 2 : end]]  # less the | --- | line
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in table]


def table_header(study: str) -> list[str]:
    return run_table(study)[0]


def table_rows(study: str) -> list[list[str]]:
    return run_table(study)[1:]


def test_trainable_params_and_seconds_per_step_are_columns(out_dir):
    for variant, (params, pct, sps, judge) in COSTS.items():
        run = Run("tiny", "method", variant)
        evals = (
            {("demo_eval", "greedy"): {"metrics": metrics(0.3), "scores": scores(judge)}} if judge else None
        )
        write_run(run, standard_series(20), {"peft_type": variant}, ["peft_type"], evals=evals)
        rec = {**pd.read_json(run.run_json, typ="series").to_dict()}
        rec.update(trainable_params=params, all_params=100_000, trainable_pct=pct, s_per_step=sps)
        atomic_write_json(run.run_json, rec)
    build_report("method", with_base=False, data_dir=out_dir / "nodata")
    csv = pd.read_csv(report_dir("method") / "runs.csv").set_index("label")
    for variant, (params, _, sps, _) in COSTS.items():
        assert csv.loc[variant, "trainable_params"] == params and csv.loc[variant, "s_per_step"] == sps
    md = (report_dir("method") / "report.md").read_text()
    assert "| trainable params | s / step |" in md
    assert "1,000 (1 %)" in md and "40 (0.04 %)" in md and "100,000 (100 %)" in md
    # each run's row holds its own cost under the two headers
    cols = table_header("method")
    cells = {r[0].lstrip("★ "): dict(zip(cols, r, strict=True)) for r in table_rows("method")}
    for variant, (params, pct, sps, _) in COSTS.items():
        assert cells[variant]["trainable params"] == f"{params:,} ({pct:g} %)", cells[variant]
        assert float(cells[variant]["s / step"]) == sps, cells[variant]


def test_studies_without_costs_keep_their_columns(out_dir):
    """A study that measured no costs has every column a costed study has (its own scientific one in
    place of peft_type), in the same order, less the two cost columns; its runs.csv invents no costs."""
    write_run(Run("tiny", "lr", "lr1e-4"), standard_series(5), {"learning_rate": 1e-4})
    build_report("lr", with_base=False, data_dir=out_dir / "nodata")
    costed = Run("tiny", "method", "lora")
    write_run(costed, standard_series(5), {"peft_type": "lora"}, ["peft_type"])
    rec = {**pd.read_json(costed.run_json, typ="series").to_dict()}
    atomic_write_json(
        costed.run_json, rec | {"trainable_params": 1_000, "all_params": 100_000, "trainable_pct": 1.0}
    )
    build_report("method", with_base=False, data_dir=out_dir / "nodata")
    plain, with_costs = table_header("lr"), table_header("method")
    assert "trainable params" not in (report_dir("lr") / "report.md").read_text()
    assert {"trainable params", "s / step"} <= set(with_costs)
    assert "learning_rate" in plain and "steps" in plain and plain[0] == "run" and plain[-1] == "warnings"
    assert plain == [
        "learning_rate" if c == "peft_type" else c
        for c in with_costs
        if c not in ("trainable params", "s / step")
    ]
    csv = pd.read_csv(report_dir("lr") / "runs.csv")
    assert csv["trainable_params"].isna().all() and csv["s_per_step"].isna().all()
