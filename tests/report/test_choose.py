"""Choices on the dev set, scores on the test set: the report, the choose CLI and the demo's export agree;
the random floor verdict on synthetic judgments whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tools.core.paths import Run, report_dir
from tools.report import build_report
from tools.report.choose import choose_on_dev, dev_records, role_of
from tools.report.choose import main as choose_main
from tools.report.synthetic import standard_series, write_run

IDS = [f"p{i:02d}" for i in range(30)]


def items(mean: float, seed: int, noise: float = 0.8) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {i: float(np.clip(mean + rng.normal(0, noise), 1, 10)) for i in IDS}


def epochs_study(dev_means: dict[str, list[float]], test_means: dict[str, list[float]], study="epochs"):
    """Arms with a dev (and test) judgment per prompt at every epoch."""
    for k, (variant, means) in enumerate(dev_means.items()):
        evals = {}
        for e, m in enumerate(means, 1):
            evals[("demo_dev", "greedy", e)] = {"items": items(m, 100 * k + e)}
            evals[("demo_eval", "greedy", e)] = {
                "items": items(test_means[variant][e - 1], 1000 + 100 * k + e)
            }
        write_run(
            Run("tiny", study, variant),
            standard_series(20, eval_every=5),
            {"lora_rank": 8 * (k + 1)},
            ["lora_rank"],
            evals=evals,
        )
    write_run(
        Run.base("tiny"),
        None,
        evals={
            ("demo_dev", "greedy"): {"items": items(4.0, 7)},
            ("demo_eval", "greedy"): {"items": items(4.0, 8)},
        },
    )


def test_roles_come_from_the_registry_then_the_name(tmp_path):
    (tmp_path / "h.json").write_text("[]")  # the registry lists only sets whose files exist
    (tmp_path / "dataset_info.json").write_text(
        json.dumps({"held": {"file_name": "h.json", "smalldata": {"kind": "eval", "role": "dev"}}})
    )
    assert role_of("held", tmp_path) == "dev"
    assert role_of("demo_dev", tmp_path) == "dev" and role_of("hw5_test", tmp_path) == "test"


def test_choice_is_made_on_dev_never_on_test(out_dir, capsys):
    # r8 is best on dev at epoch 2; on the test set r16@epoch3 would look best: the test set must not decide
    epochs_study({"r8": [5.0, 7.5, 6.0], "r16": [5.5, 6.0, 6.2]}, {"r8": [5, 6, 5], "r16": [5, 6, 8.5]})
    choice = choose_on_dev(dev_records("epochs"))
    assert choice.dev == "demo_dev" and choice.metric == "judge_mean"
    assert choice.best.run == "tiny/epochs/r8@epoch2" and choice.best.decoding == "greedy"
    assert len(choice.candidates) == 6

    rep = build_report("epochs", data_dir=out_dir / "nodata")
    assert rep.choice.best.run == choice.best.run
    csv = pd.read_csv(report_dir("epochs") / "runs.csv")
    row = csv[csv.run == "tiny/epochs/r8"].iloc[0]
    assert bool(row["best"]) and row["point"] == "@epoch2 greedy"
    # the test column is the test score at the point chosen on dev, not the test-best point
    chosen_test = json.loads(Run.parse("tiny/epochs/r8@epoch2").scores("demo_eval", "greedy").read_text())
    assert row["judge_mean"] == pytest.approx(chosen_test["mean"])
    assert rep.verdict.text.startswith("Chosen on demo_dev by judge mean: tiny/epochs/r8@epoch2 (greedy)")
    assert "Decided by judge_mean: tiny/epochs/r8@epoch2 (greedy) beats tiny/epochs/r16" in rep.verdict.text
    assert (
        "on 30 paired prompts" in rep.verdict.text and "Chosen - base model on demo_eval" in rep.verdict.text
    )
    md = (report_dir("epochs") / "report.md").read_text()
    head = md.split("## Runs")[0]
    assert "## Decision" in head and "made on the dev set **demo_dev**" in head
    header = next(line for line in md.split("## Runs")[1].splitlines() if line.startswith("| run |"))
    assert header.startswith("| run | point (chosen on dev) | dev demo_dev | test demo_eval | status |")
    html = (report_dir("epochs") / "index.html").read_text()
    assert "Score per epoch on the dev set (demo_dev)" in html

    assert choose_main(["--study", "epochs"]) == 0
    assert capsys.readouterr().out.strip() == "tiny/epochs/r8@epoch2"
    saved = json.loads((report_dir("epochs") / "choice.json").read_text())
    assert saved["best"]["run"] == "tiny/epochs/r8@epoch2" and saved["chosen_on"] == "demo_dev"

    from tools.flows.demo import chosen_run

    assert chosen_run("epochs", "tiny") == Run.parse("tiny/epochs/r8@epoch2")  # what the demo exports


def test_no_dev_set_means_no_choice_and_the_old_verdict(out_dir):
    write_run(
        Run("tiny", "rank", "r8"),
        None,
        {"lora_rank": 8},
        evals={("demo_eval", "greedy"): {"items": items(6, 1)}},
    )
    assert choose_on_dev(dev_records("rank")).best is None
    rep = build_report("rank", with_base=False, data_dir=out_dir / "nodata")
    assert rep.verdict.text.startswith("only one arm evaluated: r8")


def data_study(strategy_shift: dict[str, float], testset="demo_eval"):
    """Every arm scores each prompt at that prompt's difficulty plus its own noise; a strategy adds a
    known shift. So the answer is known: a strategy beats random by its shift, and only if it is positive."""
    difficulty = items(5.0, 99, noise=1.0)

    def arm(shift: float, seed: int) -> dict[str, float]:
        rng = np.random.default_rng(seed)
        return {i: v + shift + float(rng.normal(0, 0.3)) for i, v in difficulty.items()}

    for s in range(3):
        write_run(
            Run("tiny", "data", f"random_s{s}"),
            None,
            {"dataset": f"d_random_s{s}"},
            ["dataset"],
            evals={(testset, "greedy"): {"items": arm(0.0, 10 + s)}},
        )
    for k, (name, shift) in enumerate(strategy_shift.items()):
        write_run(
            Run("tiny", "data", name),
            None,
            {"dataset": f"d_{name}"},
            ["dataset"],
            evals={(testset, "greedy"): {"items": arm(shift, 50 + k)}},
        )


def test_random_floor_names_the_strategies_that_beat_it(out_dir):
    data_study({"ifd": 1.5, "length": 0.0, "rating": -1.5})
    rep = build_report("data", data_dir=out_dir / "nodata")
    f = rep.floor
    assert f["set"] == "demo_eval" and len(f["seed_means"]) == 3 and f["seed_spread"] > 0
    assert f["beats"] == ["ifd"]
    arms = {a["arm"]: a for a in f["arms"]}
    assert 1.0 < arms["ifd"]["diff"] < 2.0 and arms["ifd"]["ci95"][0] > 0
    assert arms["length"]["ci95"][0] < 0 < arms["length"]["ci95"][1] and arms["rating"]["below"]
    assert "Beat random: ifd +1." in f["text"] and "Below random: rating" in f["text"]
    assert "**Random floor:**" in (report_dir("data") / "report.md").read_text()


def test_random_floor_says_when_no_strategy_beats_it(out_dir):
    data_study({"ifd": 0.0, "length": -0.05})
    f = build_report("data", data_dir=out_dir / "nodata").floor
    assert f["beats"] == [] and f["text"].split(". ", 1)[1].startswith("No strategy beats random")
