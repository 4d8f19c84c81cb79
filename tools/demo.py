"""The whole study end to end on the embedded default, one status line per step.

On the embedded SmolLM2-135M and the data the project ships (`--data demo`), or the real 2k
Alpaca rows and HW5's 150 prompts from ../shared/data (`--data hw5`):

  1. select 100 rows from the pool, split the curriculum, register the datasets;
  2. render the demo study (two ranks and the three chained curriculum stages, steps cut to fit
     a 2-core CPU) and train it, skipping runs already finished;
  3. generate answers for the evaluation prompts from the base model and every tuned run;
  4. score ROUGE and the other automatic metrics;
  5. judge: GPT-4o-mini when OPENAI_API_KEY is set, else the offline judge (the embedded model,
     scores labelled as not comparable with GPT-4o-mini's);
  6. export the best run (merged, verified by logits);
  7. write the report, the base model beside the tuned runs, and print its path.

Every step is a tool of its own, run as a subprocess and resumable, so a second `make demo`
finds everything done and finishes in seconds; a failed step stops the demo and names its log.

Usage:
    python -m tools.demo [--data demo|hw5] [--limit N] [--judge auto|offline|openai]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from tools.paths import Run, cache_dir, report_dir

MODEL = "smollm2_135m"
STUDY = "demo"
TESTSETS = {"demo": "demo_eval", "hw5": "hw5_test"}


def step(i: int, n: int, label: str, argv: list[str], log_name: str) -> float:
    """Run one tool; its stdout (status lines) reaches the user, everything else goes to a log."""
    log = cache_dir() / "demo" / f"{i:02d}-{log_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{i}/{n}] {label} ...", flush=True)
    t0 = time.time()
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-m", *argv], stderr=err)
    dt = time.time() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        print("\n".join("      " + x for x in tail))
        raise SystemExit(f"[{i}/{n}] {label}: failed (exit {proc.returncode}); full log: {log}")
    print(f"[{i}/{n}] {label}: done in {dt:.0f} s", flush=True)
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
    a = ap.parse_args(argv)

    testset = TESTSETS[a.data]
    # HW5's 150 prompts x 5 models at 256 new tokens is over half an hour on 2 CPU cores.
    limit = a.limit if a.limit is not None else (32 if a.data == "hw5" else None)
    offline = a.judge == "offline" or (a.judge == "auto" and not os.environ.get("OPENAI_API_KEY"))
    judge_args = ["--offline"] if offline else []
    lim = ["--limit", str(limit)] if limit else []

    from tools.configs import render_study

    runs = [Run.base(MODEL)] + [r for r, *_ in render_study(STUDY, MODEL)]
    n = 7
    t0 = time.time()
    data_args = ["--source", a.data] + (["--eval", "hw5"] if a.data == "hw5" else [])
    step(
        1,
        n,
        f"data: select 100 from the {a.data} pool, curriculum, register",
        ["tools.data", *data_args],
        "data",
    )
    step(
        2,
        n,
        f"train: {len(runs) - 1} runs of study '{STUDY}'",
        ["tools.sweep", "--study", STUDY, "--model", MODEL, "--no-eval"],
        "train",
    )
    for r in runs:
        step(
            3,
            n,
            f"generate: {r.name} on {testset}",
            ["tools.generate", "--run", r.name, "--testset", testset, *lim],
            "generate",
        )
    for r in runs:
        step(4, n, f"metrics: {r.name}", ["tools.metrics", "--run", r.name, "--testset", testset], "metrics")
    who = "offline judge (embedded model; not comparable with GPT-4o-mini)" if offline else "GPT-4o-mini"
    for r in runs:
        step(
            5,
            n,
            f"judge ({who}): {r.name}",
            ["tools.judge", "--run", r.name, "--testset", testset, "--decoding", "greedy", *judge_args],
            "judge",
        )
    best = best_run(runs[1:], testset)
    if best is not None:
        step(6, n, f"export: best run {best.name}", ["tools.export", "--run", best.name], "export")
    step(7, n, "report", ["tools.report", "--study", STUDY, "--model", MODEL], "report")
    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    print(f"report: {report_dir(STUDY) / 'index.html'}")
    print(f"        {report_dir(STUDY) / 'report.md'}")
    if best is not None:
        print(f"best run: {best.name} -> exported to {best.export_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
