"""Benchmark: search against the grid on the lr study (tools.flows.tune_bench), from an empty output folder.

The full form is the measured figure of docs/tune.md: the lr study's grid (3 runs) and a 6-trial Optuna
search of its space on the embedded SmolLM2-135M at the CPU budget (8 rows at 64 tokens, 3 epochs, the
dev set demo_dev; 332 s with OMP_NUM_THREADS=1 on 2 shared cores at load 2.4-2.9, many times that with
torch's 2 threads on a busy machine). The quick form is the tiny model's plumbing (4 rows,
2 epochs, 2 trials), the same command docs/tune.md shows as the quick form. Each run starts from a fresh
temporary output root, so a second `make bench` measures again rather than finding the runs finished.

Usage:
    python -m tools.bench --only tune [--quick]     (also part of `make bench`)
"""

from __future__ import annotations

import os
import tempfile

FULL = ["--study", "lr", "--model", "smollm2_135m", "--trials", "6", "--budget", "cpu"]
QUICK = ["--quick", "--pruner", "{name: median, n_startup_trials: 1}"]


def bench(quick: bool = False) -> list[str]:
    from tools.core.args import parse
    from tools.flows.tune_bench import BenchArgs, lines, measure

    before = os.environ.get("SMALLDATA_OUT")
    try:
        with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
            os.environ["SMALLDATA_OUT"] = tmp
            return lines(measure(parse(BenchArgs, QUICK if quick else FULL)))
    finally:  # the benchmark moves the output root; the topics after it keep theirs
        if before is None:
            os.environ.pop("SMALLDATA_OUT", None)
        else:
            os.environ["SMALLDATA_OUT"] = before
