"""The method study's report shows which runs learned: the first and last logged train loss (run.json's
first_loss / final_loss, from the run's trainer_log.jsonl by tools.train.trainstats) in a column of their
own, flagged when the loss did not fall, and a warning naming the run."""

from __future__ import annotations

import json

import pandas as pd

from filelib import atomic_write_json
from tools.core.paths import Run, report_dir
from tools.report.build import build_report
from tools.report.synthetic import standard_series, write_run
from tools.train.trainstats import learning

HEADER = "learned (train loss first → last)"
# variant: the losses LLaMA-Factory logged, one a step (None: a run.json written before first_loss existed)
LOGGED = {
    "lora": [10.7795, 10.2, 9.6, 9.1234],
    "vera": [10.7795, 10.7795, 10.7795, 10.7795],  # the case: lr 0 at the first step, nothing moved
    "oft": [10.7795, 10.79, 10.81, 10.85],  # rose
    "full": None,
    "freeze": [10.7795],  # one step, one logged loss: says nothing either way
}


def run_table(study: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """report.md's run table: its header and each run's cells by header."""
    lines = (report_dir(study) / "report.md").read_text().splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith("| run |") and "| status |" in line]
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    split = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines[start:end]]
    header, rows = split[0], split[2:]
    return header, {r[0].lstrip("★ "): dict(zip(header, r, strict=True)) for r in rows}


def method_study() -> None:
    for variant, losses in LOGGED.items():
        run = Run("tiny", "method", variant)
        series = standard_series(4) if losses is None or len(losses) > 1 else {"loss": [(1, losses[0])]}
        write_run(run, series, {"peft_type": variant}, ["peft_type"])
        if losses is None:
            continue
        log = [{"current_steps": i + 1, "loss": v} for i, v in enumerate(losses)]
        (run.output_dir / "trainer_log.jsonl").write_text("\n".join(json.dumps(x) for x in log) + "\n")
        rec = json.loads(run.run_json.read_text())
        atomic_write_json(run.run_json, rec | learning(run.output_dir))  # as tools.train.trainer writes it


def test_each_run_shows_its_first_and_last_loss_and_whether_it_learned(out_dir):
    method_study()
    rep = build_report("method", with_base=False, data_dir=out_dir / "nodata")
    header, cells = run_table("method")
    assert HEADER in header and header.index(HEADER) == header.index("loss final / best") + 1
    assert cells["lora"][HEADER] == "10.78 → 9.123"
    assert cells["vera"][HEADER] == "10.78 → 10.78 (did not learn)"
    assert cells["oft"][HEADER] == "10.78 → 10.85 (did not learn)"
    assert cells["full"][HEADER] == "–"  # run.json says nothing: no figure invented
    assert cells["freeze"][HEADER] == "10.78 → 10.78 (not estimable)"
    csv = pd.read_csv(report_dir("method") / "runs.csv").set_index("label")
    assert csv.loc["lora", ["first_loss", "last_loss"]].tolist() == [10.7795, 9.1234]
    learned = csv["learned"].to_dict()
    assert pd.isna(learned.pop("full")) and pd.isna(learned.pop("freeze"))
    assert learned == {"lora": True, "vera": False, "oft": False}
    warned = [w for w in rep.warnings if "did not learn" in w]
    assert sorted(w.split(":")[0] for w in warned) == ["oft", "vera"]
    assert "vera: did not learn: train loss 10.78 -> 10.78" in "\n".join(warned)
    md = (report_dir("method") / "report.md").read_text()
    assert "- vera: did not learn" in md and "- lora: did not learn" not in md


def test_a_study_whose_runs_say_nothing_of_learning_has_no_such_column(out_dir):
    write_run(Run("tiny", "lr", "lr1e-4"), standard_series(5), {"learning_rate": 1e-4})
    build_report("lr", with_base=False, data_dir=out_dir / "nodata")
    header, _ = run_table("lr")
    assert HEADER not in header and "loss final / best" in header
