"""Speed and memory checks, each printing ratios measured in one run (never timed tests).

Runs every `tools/bench/<topic>.py` that exposes `bench(quick: bool) -> list[str]`, in a fixed
order, and prints its lines; one failing benchmark is reported and the others still run.

Usage:
    python -m tools.bench [--only data,generate,dtype,study,judge,report,tune] [--quick]
"""

from __future__ import annotations

import importlib
import time
import traceback
from dataclasses import dataclass

from filelib import run_main
from tools.core.args import command, opt

TOPICS = ["data", "generate", "dtype", "study", "judge", "report", "tune"]


@dataclass
class BenchArgs:
    only: list[str] = opt(TOPICS, help="comma-separated topics", split=",", choices=TOPICS)
    quick: bool = opt(False, help="smaller sizes, for a first look")


@command(BenchArgs, __doc__)
def main(a: BenchArgs) -> int:
    failed = []
    for topic in a.only:
        try:
            mod = importlib.import_module(f"tools.bench.{topic}")
        except ModuleNotFoundError:
            print(f"== {topic}: no benchmark yet")
            continue
        print(f"== {topic}", flush=True)
        t0 = time.time()
        try:
            for line in mod.bench(quick=a.quick):
                print(f"   {line}", flush=True)
        except Exception:
            failed.append(topic)
            traceback.print_exc()
        print(f"   ({time.time() - t0:.1f} s)")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main)
