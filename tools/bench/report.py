"""How fast a study report is: 50 synthetic runs of 1,000 steps, 4 scalars per step (target < 5 s).

Builds the run folders in a temporary directory (TensorBoard's own writer, the tags transformers
writes), then times the whole report with one process reading events and with one per core, and
splits the time into reading events against the rest (table, plots, HTML, HParams); then a re-run
with the event files unchanged (parsed curves cached). TensorBoard's
EventAccumulator over the same files is timed alongside, as the reader the report does not use.

Usage:
    python -m tools.bench.report [--quick]
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from filelib import run_main
from tools.core.args import command, opt
from tools.core.paths import Run

RUNS, STEPS = 50, 1000


def build_study(root: Path, runs: int, steps: int, study: str = "bench") -> list[Run]:
    """`runs` arms of a learning-rate-like grid, each with loss, eval loss, lr and grad norm every step."""
    from tools.report import metrics, scores, write_run

    os.environ["SMALLDATA_OUT"] = str(root)
    rng = random.Random(0)
    out = []
    for i in range(runs):
        run = Run("bench", study, f"v{i:02d}")
        k = 2 + 3 * i / runs
        series = {
            "loss": [
                (s, 0.4 + 2 * math.exp(-k * s / steps) + 0.05 * rng.random()) for s in range(1, steps + 1)
            ],
            "eval_loss": [(s, 0.6 + 2 * math.exp(-k * s / steps)) for s in range(1, steps + 1)],
            "learning_rate": [(s, 2e-4 * (1 - s / steps)) for s in range(1, steps + 1)],
            "grad_norm": [(s, 1 / math.sqrt(s)) for s in range(1, steps + 1)],
        }
        write_run(
            run,
            series,
            {"learning_rate": 1e-5 * (i + 1), "lora_rank": 8},
            ["learning_rate"],
            evals={("demo_eval", "greedy"): {"metrics": metrics(0.2), "scores": scores(5 + i / runs * 3)}},
        )
        out.append(run)
    return out


def bench(quick: bool = False) -> list[str]:
    from tools.report import build_report

    runs, steps = (4, 50) if quick else (RUNS, STEPS)
    old = os.environ.get("SMALLDATA_OUT")
    lines = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
            t0 = time.perf_counter()
            built = build_study(Path(tmp), runs, steps)
            lines.append(
                f"built {runs} runs x {steps} steps x 4 scalars = {runs * steps * 4:,} scalars "
                f"in {time.perf_counter() - t0:.1f} s (setup, not timed below)"
            )
            nodata = Path(tmp) / "nodata"
            results = {}

            def line(what: str, t: dict) -> str:
                return (
                    f"{what}: total {t['total']:.2f} s = events {t['read']:.2f} s + table/plots "
                    f"{t['analyse_plot']:.2f} s + write (md, html, csv, HParams) {t['write']:.2f} s; "
                    f"events {100 * t['read'] / t['total']:.0f} %; CPU in this process: events "
                    f"{t['cpu_read']:.2f} s, rest {t['cpu_rest']:.2f} s"
                )

            lines.append(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")

            for workers in (1, 2):
                t = build_report(
                    "bench", with_base=False, workers=workers, data_dir=nodata, cache=False
                ).timings
                results[workers] = t
                lines.append(line(f"cold, {workers} process{'es' if workers > 1 else ''} reading", t))
            best = min(results, key=lambda w: results[w]["total"])
            lines.append(
                f"two processes vs one: reading x{results[1]['read'] / results[2]['read']:.2f} faster "
                f"({os.cpu_count()} cores, shared: the ratio moves with the machine's load)"
            )
            build_report("bench", with_base=False, data_dir=nodata)  # fills cache/report_events
            warm = build_report("bench", with_base=False, data_dir=nodata).timings
            lines.append(line("re-run, event files unchanged (cache)", warm))
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

            t0 = time.perf_counter()
            for run in built:
                for d in sorted({p.parent for p in run.tb_dir.rglob("events.out.tfevents.*")}):
                    EventAccumulator(str(d), size_guidance={"scalars": 0}).Reload()
            t_ea = time.perf_counter() - t0
            lines.append(
                f"TensorBoard's EventAccumulator, one process, same files: {t_ea:.2f} s "
                f"(our tag-filtered read of the raw records, one process: {results[1]['read']:.2f} s, "
                f"x{t_ea / results[1]['read']:.2f})"
            )
            target = 5.0
            total = results[best]["total"]
            lines.append(f"load average {os.getloadavg()[0]:.1f} at the end")
            cpu = results[1]["cpu_read"] + results[1]["cpu_rest"]
            lines.append(
                f"target < {target:.0f} s for {RUNS} x {STEPS}"
                + (" (quick sizes)" if quick else "")
                + ": wall "
                f"{total:.2f} s (best of 1 or 2 processes) -> {'OK' if total < target else 'SLOW'}; "
                f"CPU of the one-process report {cpu:.2f} s -> {'OK' if cpu < target else 'SLOW'} on an idle core"
            )
    finally:
        if old is None:
            os.environ.pop("SMALLDATA_OUT", None)
        else:
            os.environ["SMALLDATA_OUT"] = old
    return lines


@dataclass
class BenchArgs:
    quick: bool = opt(False, help="smaller sizes, for a first look")


@command(BenchArgs, __doc__)
def main(a: BenchArgs) -> int:
    for line in bench(a.quick):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
