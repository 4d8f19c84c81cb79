"""The whole study end to end on the embedded default, one status line per step.

On the embedded SmolLM2-135M and the data the project ships (`--data demo`), or the real 2k
Alpaca rows and HW5's 150 prompts (`--data hw5`: fetched once by `make fetch-hw5`, see tools/data/sources.py):

  1. select 100 rows from the pool, split the curriculum, register the datasets;
  2. render the demo study (the three chained curriculum stages against the same rows shuffled, steps
     cut to fit a 2-core CPU) and train it, skipping runs already finished;
  3. on the dev set (demo_dev, or hw5_dev), in one process (tools.eval.study: the base model loaded
     once, each adapter swapped in): answers, metrics and judge scores for the base model and every
     epoch of each arm's final run (`<run>@epochN`, one checkpoint per epoch; the chain's last stage);
     the judge is GPT-4o-mini when OPENAI_API_KEY is set, else the offline judge (the embedded model,
     scores labelled as not comparable with GPT-4o-mini's);
  4. choose the best run, epoch and decoding point on the dev set (tools.report.choose), then score
     the test set (demo_eval, or hw5_test) once, the same way: for the chosen point and the base model only;
  5. export the chosen point (merged, verified by logits);
  6. write the report (the decision first: dev and test side by side) and print its path.

Every step is a tool of its own, run as a child process (forked from one warm server that imported
LLaMA-Factory once; the sweep trains its runs the same way, `--warm`) and resumable, so a second `make demo`
finds everything done and finishes in seconds; a failed step stops the demo and names its log.
Each step prints its wall time, and the evaluation its split between model compute and loading.

`--model tiny` trains the tiny random test model instead (same study, seconds a step): the tests run
`make demo DATA=hw5 DEMO_ARGS="--model tiny --limit 2 --max-new-tokens 8"` that way.

Usage:
    python -m tools.flows.demo [--data demo|hw5] [--limit N] [--judge auto|offline|openai] [--model smollm2_135m|tiny]
                     [--max-new-tokens 64]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass

from filelib import run_main
from tools.core import warm
from tools.core.args import command, opt
from tools.core.paths import ROOT, Run, cache_dir, report_dir
from tools.core.streams import streams_to
from tools.data import main as data_main
from tools.eval import study_main
from tools.export import main as export_main
from tools.flows.sweep import main as sweep_main
from tools.report import choose_on_dev, dev_records, record_choice
from tools.report import main as report_main
from tools.train import render_study

MODEL = "smollm2_135m"
STUDY = "demo"
TESTSETS = {"demo": "demo_eval", "hw5": "hw5_test"}
DEVSETS = {"demo": "demo_dev", "hw5": "hw5_dev"}
# LLaMA-Factory and transformers log every config they load at INFO: keep the progress bars readable.
QUIET = dict(os.environ, LLAMAFACTORY_VERBOSITY="WARN", TRANSFORMERS_VERBOSITY="error")
# Answers long enough to judge, short enough for a 2-core CPU: a judged answer costs its generation and a
# judge's forward pass over question, reference and answer, for every checkpoint on the dev set.
MAX_NEW_TOKENS = 64


def _start_warm() -> None:
    """The warm server (once), with QUIET in the environment it inherits: the libraries read their
    verbosity when they are imported, in the server."""
    os.environ.update(QUIET)
    warm.context()


def tool(main) -> str:
    """The module a tool's imported `main` runs as (`python -m <module>`)."""
    return main.__module__.removesuffix(".__main__")


def step(label: str, argv: list[str], log_name: str, here: bool = False) -> float:
    """Run one tool as a child process: its stdout (status lines) reaches the user, its stderr goes to a
    log. The child is forked from the warm server (tools.core.warm: LLaMA-Factory imported once for
    the whole demo) where the platform allows, else a fresh `python -m`.

    `here`: a tool that only orchestrates children of its own (the sweep: its training runs) runs in
    this process instead, so that those children come from the same warm server, not a second one
    that would import LLaMA-Factory again."""
    log = cache_dir() / "demo" / f"{log_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    print(f"- {label} ...", flush=True)
    t0 = time.time()
    if warm.available():
        _start_warm()
        if here:
            returncode = _here(argv, log)
        else:
            returncode = warm.run_module(argv[0], argv[1:], log, ROOT, QUIET, keep_stdout=True).returncode
    else:
        with open(log, "w") as err:
            returncode = subprocess.run([sys.executable, "-m", *argv], stderr=err, env=QUIET).returncode
    dt = time.time() - t0
    if returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        print("\n".join("      " + x for x in tail))
        raise SystemExit(f"demo: '{label}' failed (exit {returncode}); its log: {log}")
    print(f"  {label}: done in {dt:.0f} s", flush=True)
    return dt


def _here(argv: list[str], log) -> int:
    """`python -m argv...` as a call in this process, its stderr in the log."""
    import importlib

    with streams_to(log, fds=(2,)):
        try:
            return importlib.import_module(argv[0]).main(argv[1:]) or 0
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else 1
        except Exception:  # as a child's crash would: its traceback in the log, the step failed
            traceback.print_exc()
            return 1


def chosen_run(study: str, model: str, dev: str | None = None) -> Run | None:
    """The point chosen on the dev set (tools.report.choose: the same function the report uses)."""
    return choose_on_dev(dev_records(study, model), dev).run


def evaluate(label: str, runs: list[Run], testset: str, extra: list[str], max_new: int, n: int) -> None:
    """Answers (greedy), metrics and judgments for the runs on one set, in one resumable process."""
    print(f"[{n}/6] {label}: answers (greedy, {max_new} new tokens), metrics, judge", flush=True)
    ev = ["--runs", *[r.name for r in runs], "--testset", testset, "--max-new-tokens", str(max_new), *extra]
    step(f"tools.eval.study on {testset}", [tool(study_main), *ev], f"{n}-evaluate-{testset}")


@dataclass
class DemoArgs:
    data: str = opt("demo", help="the pool to select from", choices=("demo", "hw5"))
    limit: int | None = opt(None, help="evaluate on the first N prompts only (hw5: 32)", min=1)
    judge: str = opt(
        "auto", help="auto: GPT-4o-mini with a key, else offline", choices=("auto", "offline", "openai")
    )
    model: str = opt(MODEL, help="the profile to train (tiny: for tests)", choices=(MODEL, "tiny"))
    max_new_tokens: int = opt(MAX_NEW_TOKENS, help="answer length cap", min=1)


@command(DemoArgs, __doc__)
def main(a: DemoArgs) -> int:
    model = a.model

    testset, devset = TESTSETS[a.data], DEVSETS[a.data]
    # HW5's 150 prompts x 5 models at 256 new tokens is over half an hour on 2 CPU cores.
    limit = a.limit if a.limit is not None else (32 if a.data == "hw5" else None)
    offline = a.judge == "offline" or (a.judge == "auto" and not os.environ.get("OPENAI_API_KEY"))
    lim = ["--limit", str(limit)] if limit else []
    if warm.available():  # the server imports LLaMA-Factory while this process renders and validates
        _start_warm()

    rendered = render_study(STUDY, model)
    trained = [r.run for r in rendered]
    names = ", ".join(r.variant for r in trained)
    # The candidates: each arm's product. A stage that the next stage continues is a step of the chain, not
    # a model anyone would ship; the curriculum study (make sweep-curriculum) scores every stage.
    continued = {r.parent for r in rendered if r.parent}
    finals = [r for r in trained if r.variant not in continued]
    t0 = time.time()
    # The curriculum splits into thirds by rank by default, so no stage is empty on either pool.
    data_args = ["--source", a.data] + (["--eval", "hw5"] if a.data == "hw5" else [])
    print(f"[1/6] data: select 100 from the {a.data} pool, split the curriculum, register", flush=True)
    step(tool(data_main), [tool(data_main), *data_args], "1-data")
    print(f"[2/6] train: study '{STUDY}' on {model} ({names}); finished runs are skipped", flush=True)
    step(
        tool(sweep_main),
        [tool(sweep_main), "--study", STUDY, "--model", model, "--no-eval", "--warm"],
        "2-train",
        here=True,
    )
    points = [p for r in finals for p in (r.epochs() or [r])]  # every epoch's checkpoint of every arm
    who = "offline judge: the embedded model, NOT comparable with GPT-4o-mini" if offline else "GPT-4o-mini"
    print(f"      judge: {who}", flush=True)
    judge = ["--judge", "offline" if offline else "openai"]
    evaluate(
        f"dev set {devset}, {len(points)} checkpoints + base",
        [Run.base(model), *points],
        devset,
        [*lim, *judge],
        a.max_new_tokens,
        3,
    )
    choice = record_choice(STUDY, model, devset)  # reports/demo/choice.json: what was chosen, and why
    best = choice.run
    if best is None:
        raise SystemExit(f"demo: no tuned run has a score on {devset}: nothing to choose")
    print(f"      chosen on {devset}: {best.name} (greedy): {choice.verdict}", flush=True)
    evaluate(
        f"test set {testset}, scored once: the chosen point and the base",
        [Run.base(model), best],
        testset,
        [*lim, *judge],
        a.max_new_tokens,
        4,
    )
    print(f"[5/6] export the chosen point: {best.name}", flush=True)
    step(f"export {best.name}", [tool(export_main), "--run", best.name], "5-export")
    print("[6/6] report", flush=True)
    step(
        tool(report_main),
        [tool(report_main), "--study", STUDY, "--model", model, "--testset", testset],
        "6-report",
    )
    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    print(f"report: {report_dir(STUDY) / 'index.html'}")
    print(f"        {report_dir(STUDY) / 'report.md'}")
    print(f"chosen on {devset}: {best.name} -> exported to {best.export_dir}")
    how = (
        f"by {choice.decided_by['metric']}"
        if choice.decided_by
        else f"by no criterion (tie-break: {choice.tie_break})"
    )
    print(f"decided {how}: {choice.verdict}")
    return 0


if __name__ == "__main__":
    run_main(main)
