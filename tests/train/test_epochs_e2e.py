"""A real run with a checkpoint per epoch (tiny model, real llamafactory-cli): eval loss on the dev set
every epoch, one evaluation point per epoch, the choice made on dev, the test set scored for it only."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from tools.core.paths import DATA, Run, report_dir, study_dir
from tools.flows import sweep

EPOCHS = 2
QUICK = (
    ("tools.eval.generate", ("--max-new-tokens", "4", "--limit", "3", "--quiet")),
    ("tools.eval.metrics", ("--no-ppl", "--no-similarity")),
)


@pytest.mark.slow
@pytest.mark.usefixtures("llamafactory_in_process")  # the chosen point's export merges in this process
def test_one_run_gives_a_point_per_epoch_and_the_choice_is_made_on_dev(out_dir, tiny_model, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    rows = [
        {"id": f"t{i}", "instruction": f"Write {i} in words.", "input": "", "output": f"It is {i}."}
        for i in range(4)
    ]
    (data / "alpaca_top100.json").write_text(json.dumps(rows))
    for name in ("demo_dev", "demo_eval"):
        shutil.copy(DATA / f"{name}.json", data / f"{name}.json")
    info = {n: {"file_name": f"{n}.json"} for n in ("alpaca_top100", "demo_dev", "demo_eval")}
    (data / "dataset_info.json").write_text(json.dumps(info))
    # 4 rows, 2 per step: 2 steps an epoch; a checkpoint and a dev eval loss at the end of each epoch
    sets = [
        "max_steps_cap=",
        "save_steps=",
        "train_rows=4",
        f"num_train_epochs={EPOCHS}",
        "eval_dataset=demo_dev",
    ]
    argv = ["--study", "epochs", "--model", "tiny", "--no-eval", "--warm", "--dataset-dir", str(data)]
    assert sweep.main([*argv, *[x for s in sets for x in ("--set", s)]]) == 0
    run = Run("tiny", "epochs", "ep15")
    assert [r.name for r in run.epochs()] == [f"tiny/epochs/ep15@epoch{e}" for e in range(1, EPOCHS + 1)]
    state = json.loads((run.output_dir / "trainer_state.json").read_text())
    assert [h["epoch"] for h in state["log_history"] if "eval_loss" in h] == [1.0, 2.0]

    quick = [
        "--limit",
        "3",
        "--max-new-tokens",
        "4",
        "--judge",
        "offline",
        "--offline-model",
        str(tiny_model),
    ]
    # as the sweep's --warm evaluates: each step a child of the fork server that trained the run
    rows = sweep.evaluate(
        [run], "demo_eval", "epochs", data, dev="demo_dev", model="tiny", extra=quick, warm=True
    )
    assert [r for r in rows if r[2] != 0] == []
    for name in ("sweep_eval_demo_dev.log", "sweep_eval.log"):
        head = [x for x in (study_dir("tiny", "epochs") / name).read_text().splitlines() if " $ " in x]
        assert len(head) == 1 and "-m tools.eval.study" in head[0] and head[0].endswith("(warm start)"), head
    for e in range(1, EPOCHS + 1):
        assert run.at_epoch(e).scores("demo_dev", "greedy").exists()  # a judged point per epoch, on dev
    out = capsys.readouterr().out
    picked = out.split("chosen on demo_dev: ")[1].split()[0]
    assert picked.startswith("tiny/epochs/ep15@epoch")
    # the test set is scored for the chosen point only: no other epoch, not the final adapter
    tested = [r for r in (run, *run.epochs()) if r.predictions("demo_eval", "greedy").exists()]
    assert [r.name for r in tested] == [picked]
    rep = json.loads((report_dir("epochs") / "choice.json").read_text())
    assert rep["best"]["run"] == picked and rep["metric"] == "judge_mean" and rep["chosen_on"] == "demo_dev"
    evals = pd.read_csv(report_dir("epochs") / "evals.csv")
    assert sorted(evals[evals.testset == "demo_dev"]["epoch"]) == list(range(1, EPOCHS + 1))
    # the export takes the chosen epoch too: its checkpoint merged into the base, checked by logits
    from tools.export import main as export_main

    assert export_main(["--run", picked]) == 0
    record = json.loads((Run.parse(picked).export_dir / "export.json").read_text())
    assert record["adapter"] == str(Run.parse(picked).adapter_dir) and "checkpoint-" in record["adapter"]
