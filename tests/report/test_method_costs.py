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


def test_studies_without_costs_keep_their_columns(out_dir):
    write_run(Run("tiny", "lr", "lr1e-4"), standard_series(5), {"learning_rate": 1e-4})
    build_report("lr", with_base=False, data_dir=out_dir / "nodata")
    assert "trainable params" not in (report_dir("lr") / "report.md").read_text()
