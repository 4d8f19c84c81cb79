"""The whole study end to end on the embedded default, one status line per step.

On the embedded SmolLM2-135M and the data the project ships (`--data demo`), or the real 2k
Alpaca rows and HW5's 150 prompts from ../shared/data (`--data hw5`):

  1. select 100 rows from the pool, split the curriculum, register the datasets;
  2. render the demo study (two ranks and the three chained curriculum stages, steps cut to fit
     a 2-core CPU) and train it, skipping runs already finished;
  3. evaluate, in one process (tools.eval.study: the base model loaded once, each run's adapter
     swapped in): answers for the evaluation prompts from the base model and every tuned run,
     ROUGE, perplexity and the other automatic metrics, and the judge's scores: GPT-4o-mini when
     OPENAI_API_KEY is set, else the offline judge (the embedded model, scores labelled as not
     comparable with GPT-4o-mini's);
  4. export the best run (merged, verified by logits);
  5. write the report, the base model beside the tuned runs, and print its path.

Every step is a tool of its own, run as a subprocess and resumable, so a second `make demo`
finds everything done and finishes in seconds; a failed step stops the demo and names its log.
Each step prints its wall time, and the evaluation its split between model compute and loading.

`--model tiny` trains the tiny random test model instead (same study, seconds a step): the tests run
`make demo DATA=hw5 DEMO_ARGS="--model tiny --limit 2 --max-new-tokens 8"` that way.

Usage:
    python -m tools.demo [--data demo|hw5] [--limit N] [--judge auto|offline|openai] [--model smollm2_135m|tiny]
                     [--max-new-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from tools.core.paths import Run, cache_dir, report_dir

MODEL = "smollm2_135m"
STUDY = "demo"
TESTSETS = {"demo": "demo_eval", "hw5": "hw5_test"}
# LLaMA-Factory and transformers log every config they load at INFO: keep the progress bars readable.
QUIET = dict(os.environ, LLAMAFACTORY_VERBOSITY="WARN", TRANSFORMERS_VERBOSITY="error")
# Answers long enough to judge, short enough for a 2-core CPU.
MAX_NEW_TOKENS = 128


def step(label: str, argv: list[str], log_name: str, progress: bool = False) -> float:
    """Run one tool. Its stdout (status lines) reaches the user; its stderr goes to a log, or to
    the terminal too where it carries a progress bar (`progress`)."""
    log = cache_dir() / "demo" / f"{log_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"- {label} ...", flush=True)
    t0 = time.time()
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-m", *argv], stderr=None if progress else err, env=QUIET)
    dt = time.time() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        print("\n".join("      " + x for x in tail))
        raise SystemExit(f"demo: '{label}' failed (exit {proc.returncode}); its log: {log}")
    print(f"  {label}: done in {dt:.0f} s", flush=True)
    return dt


def best_run(runs: list[Run], testset: str) -> Run | None:
    scored = []
    for run in runs:
        path = run.scores(testset, "greedy")
        if path.exists():
            s = json.loads(path.read_text())
            if s.get("mean") is not None:
                scored.append((s["mean"], run.name, run))
    return max(scored)[2] if scored else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["demo", "hw5"], default="demo")
    ap.add_argument("--limit", type=int, default=None, help="evaluate on the first N prompts only")
    ap.add_argument("--judge", choices=["auto", "offline", "openai"], default="auto")
    ap.add_argument(
        "--model", choices=[MODEL, "tiny"], default=MODEL, help="the profile to train (tiny: for tests)"
    )
    ap.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="answer length cap")
    a = ap.parse_args(argv)
    model = a.model

    testset = TESTSETS[a.data]
    # HW5's 150 prompts x 5 models at 256 new tokens is over half an hour on 2 CPU cores.
    limit = a.limit if a.limit is not None else (32 if a.data == "hw5" else None)
    offline = a.judge == "offline" or (a.judge == "auto" and not os.environ.get("OPENAI_API_KEY"))
    lim = ["--limit", str(limit)] if limit else []

    from tools.train import render_study

    runs = [Run.base(model)] + [r.run for r in render_study(STUDY, model)]
    names = ", ".join(r.variant for r in runs[1:])
    t0 = time.time()
    # The curriculum splits into thirds by rank by default, so no stage is empty on either pool.
    data_args = ["--source", a.data] + (["--eval", "hw5"] if a.data == "hw5" else [])
    print(f"[1/5] data: select 100 from the {a.data} pool, split the curriculum, register", flush=True)
    step("tools.data", ["tools.data", *data_args], "1-data")
    print(f"[2/5] train: study '{STUDY}' on {model} ({names}); finished runs are skipped", flush=True)
    step(
        "tools.train.sweep", ["tools.train.sweep", "--study", STUDY, "--model", model, "--no-eval"], "2-train"
    )
    who = "offline judge: the embedded model, NOT comparable with GPT-4o-mini" if offline else "GPT-4o-mini"
    print(
        f"[3/5] evaluate on {testset} in one process: answers (greedy, {a.max_new_tokens} new tokens), "
        f"metrics, {who}",
        flush=True,
    )
    ev = ["--runs", *[r.name for r in runs], "--testset", testset, "--max-new-tokens", str(a.max_new_tokens)]
    ev += ["--judge", "offline" if offline else "openai", *lim]
    step("tools.eval.study", ["tools.eval.study", *ev], "3-evaluate")
    best = best_run(runs[1:], testset)
    if best is not None:
        print(f"[4/5] export the best tuned run by judge score: {best.name}", flush=True)
        step(f"export {best.name}", ["tools.export", "--run", best.name], "4-export")
    print("[5/5] report", flush=True)
    step(
        "tools.report", ["tools.report", "--study", STUDY, "--model", model, "--testset", testset], "5-report"
    )
    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    print(f"report: {report_dir(STUDY) / 'index.html'}")
    print(f"        {report_dir(STUDY) / 'report.md'}")
    if best is not None:
        print(f"best run: {best.name} -> exported to {best.export_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
