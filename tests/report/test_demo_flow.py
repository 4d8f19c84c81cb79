"""The demo's flow (tools/flows/demo.py) with its tools stood in by file writers: every epoch is evaluated on the
dev set, the choice is made there, the test set is scored for the chosen point and the base only, and the
export takes the same point the report chose. (The real tools each have their own end-to-end tests.)"""

from __future__ import annotations

import json
import sys

from filelib import atomic_write_json, atomic_write_text
from tools.core.paths import Run
from tools.flows import demo
from tools.report import build_report
from tools.report.synthetic import judged_scores, metrics, write_judgments

EPOCHS = {"shuffled": 2, "stage1_easy": 1, "stage2_easy_medium": 1, "stage3_all": 1}
# dev judge means by point: shuffled at epoch 1 is best on dev; on the test set the base would look better
DEV = {"shuffled@epoch1": 6.5, "shuffled@epoch2": 6.0, "stage3_all@epoch1": 5.5}


def study_runs(argv: list[str]) -> list[str]:
    """The run names after --runs, up to the next option."""
    rest = argv[argv.index("--runs") + 1 :]
    return rest[: next((i for i, x in enumerate(rest) if x.startswith("--")), len(rest))]


def fake_tools(calls: list[list[str]]):
    def step(label, argv, log_name, here=False):
        calls.append(argv)
        mod = argv[0]
        if mod == "tools.flows.sweep":
            for variant, n in EPOCHS.items():
                out = Run(demo.MODEL, demo.STUDY, variant).output_dir
                for e in range(1, n + 1):
                    ck = out / f"checkpoint-{2 * e}"
                    atomic_write_json(ck / "trainer_state.json", {"epoch": float(e), "global_step": 2 * e})
                    atomic_write_text(ck / "adapter_model.safetensors", "x")
                atomic_write_text(out / "adapter_model.safetensors", "x")
                atomic_write_json(out / "run.json", {"status": "finished", "scientific": ["dataset"]})
                atomic_write_json(out / "DONE", {})
        if mod == "tools.eval.study":  # answers, metrics and judgments of every run named
            testset = argv[argv.index("--testset") + 1]
            for name in study_runs(argv):
                run = Run.parse(name)
                atomic_write_text(run.predictions(testset, "greedy"), "{}\n")
                atomic_write_json(run.metrics(testset, "greedy"), metrics(0.2))
                key = run.name.rsplit("/", 1)[1]
                mean = DEV.get(key, 4.0) if testset == "demo_dev" else (7.0 if run.is_base else 5.0)
                # each point its own prompt-to-prompt noise, so paired differences vary (an interval exists)
                noise = [(i * (3 + len(key)) + len(run.name)) % 5 - 2 for i in range(9)]
                items = {f"p{i}": mean + 0.2 * noise[i] for i in range(9)}
                d = run.eval_dir(testset, "greedy")
                write_judgments(d, items)
                atomic_write_json(d / "scores.json", judged_scores(items))
        return 0.0

    return step


def test_demo_chooses_on_dev_scores_test_once_and_exports_the_choice(out_dir, monkeypatch, capsys):
    calls: list[list[str]] = []
    monkeypatch.setattr(demo, "step", fake_tools(calls))
    assert demo.main(["--judge", "offline"]) == 0
    out = capsys.readouterr().out
    chosen = f"{demo.MODEL}/demo/shuffled@epoch1"
    assert f"chosen on demo_dev: {chosen}" in out

    def generated(testset: str) -> list[str]:
        return [r for c in calls if c[0] == "tools.eval.study" and testset in c for r in study_runs(c)]

    finals = {v: n for v, n in EPOCHS.items() if v in ("shuffled", "stage3_all")}  # not the chain's steps
    epochs = [f"{demo.MODEL}/demo/{v}@epoch{e}" for v, n in finals.items() for e in range(1, n + 1)]
    assert generated("demo_dev") == [f"{demo.MODEL}/base/base", *epochs]  # every epoch of every arm, on dev
    assert generated("demo_eval") == [f"{demo.MODEL}/base/base", chosen]  # the test set: once, for the choice
    export = next(c for c in calls if c[0] == "tools.export.export")
    assert export == ["tools.export.export", "--run", chosen]
    rep = build_report("demo", demo.MODEL)
    assert rep.choice.best.run == chosen and rep.verdict.text.startswith(
        f"Chosen on demo_dev by judge mean: {chosen}"
    )
    assert json.loads((rep.out / "choice.json").read_text())["best"]["run"] == chosen


def test_a_step_run_in_process_that_crashes_fails_as_a_child_would(tmp_path, monkeypatch, capfd):
    """The sweep step runs in the demo's own process: a crash there is the step's failure (its traceback in
    the log, the demo's one-line message), and the demo's stderr is its own again afterwards."""
    (tmp_path / "crashing_tool.py").write_text(
        "def main(argv):\n    raise ValueError(f'bad input: {argv}')\n"
    )
    (tmp_path / "refusing_tool.py").write_text("def main(argv):\n    raise SystemExit(2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # stderr as in a real process (pytest's capture writes around descriptor 2)
    monkeypatch.setattr(sys, "stderr", open(2, "w", closefd=False))
    log = tmp_path / "step.log"
    log.write_text("")

    assert demo._here(["crashing_tool", "x"], log) == 1
    assert "ValueError: bad input: ['x']" in log.read_text() and "Traceback" in log.read_text()
    assert demo._here(["refusing_tool"], log) == 2
    print("after", file=sys.stderr, flush=True)
    assert "after" in capfd.readouterr().err and "after" not in log.read_text()
