"""Measured, not claimed: does the search (tools.flows.tune) reach the grid's best dev eval_loss in fewer runs,
and what share of the steps does pruning save?

The grid is the study's own variants (trained by the sweep's planner and trainer, with the same --set
overrides); its best is the lowest dev eval_loss over every run and epoch (the point the rule would pick on
eval_loss). Then a tune of the study's `search:` space with --trials N, in its own Optuna study. Reported:
the runs the grid took, the trials the search needed before one of its kept epochs came within --within of
the grid's best (pruned trials' epochs count: they are real dev losses at real checkpoints), the steps each
spent, and the share of the search's planned steps that pruning saved. Everything goes under
<out root>/cache/tune-bench/<study>-<model>/ (its own saves/ and reports/), so the study's runs are untouched;
the figures go to reports/<study>/tune_bench.json there and are printed with the machine, load and command.

Usage:
    python -m tools.flows.tune_bench --study lr --model smollm2_135m --trials 6
    python -m tools.flows.tune_bench --quick        # tiny model, 2 epochs, 4 rows, 3 trials: the plumbing
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from filelib import atomic_write_json, run_main
from tools.core.args import command, opt
from tools.core.paths import DATA, Run, out_root, report_dir
from tools.core.profiles import ConfigError
from tools.core.runinfo import command_of
from tools.flows.sweep import plan, run_local
from tools.flows.tune import TuneArgs, tune
from tools.report import epoch_values

QUICK_SETS = ["max_steps_cap=", "save_steps=", "train_rows=4", "max_samples=4", "num_train_epochs=2"]
QUICK_SETS += ["eval_dataset=demo_dev"]


def quick_data(folder: Path) -> Path:
    """4 training rows and the shipped dev set: what --quick trains on."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": f"Write {i} in words.", "input": "", "output": f"It is {i}."} for i in range(4)]
    (folder / "alpaca_top100.json").write_text(json.dumps(rows))
    shutil.copy(DATA / "demo_dev.json", folder / "demo_dev.json")
    info = {n: {"file_name": f"{n}.json"} for n in ("alpaca_top100", "demo_dev")}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


def bench(
    study: str, model: str, trials: int, sets: list[str], data: Path, within: float, pruner: str
) -> dict:
    from tools.train import parse_set

    t0 = time.time()
    jobs = plan(study, model, None, data, None, parse_set(sets))
    for j in jobs:
        j["warm"] = True
    results = run_local(jobs, lambda r: print(f"grid {r['run']:<40} {r['status']}", flush=True))
    grid = {}
    for r in results:
        run = Run.parse(r["run"])
        vals = epoch_values(run)
        if vals:
            grid[run.variant] = min(vals.values())
    if not grid:
        raise ConfigError("the grid gave no dev eval_loss (does the profile set eval_dataset?)")
    grid_s = time.time() - t0
    grid_steps = sum(max((s for s in _steps(Run.parse(r["run"]))), default=0) for r in results)
    best = min(grid.values())
    t1 = time.time()
    args = TuneArgs(
        study=study, model=model, trials=trials, sets=sets, dataset_dir=data, name=f"{study}-{model}-bench"
    )
    args.skip_preflight, args.pruner = True, pruner
    summary = tune(args)
    tune_s = time.time() - t1
    rows = json.loads((report_dir(study) / "tune.json").read_text())
    needed, seen = None, []
    import optuna

    st = optuna.load_study(study_name=args.name, storage=f"sqlite:///{report_dir(study) / 'tune.db'}")
    counted = [t for t in st.trials if not t.user_attrs.get("interrupted")]
    for i, t in enumerate(counted, 1):
        seen += list(t.intermediate_values.values())
        if needed is None and seen and min(seen) <= best + within:
            needed = i
    return {
        "study": study,
        "model": model,
        "grid_runs": len(jobs),
        "grid_best": {"variant": min(grid, key=grid.get), "eval_loss": best, "all": grid},
        "grid_steps": grid_steps,
        "grid_wall_s": round(grid_s, 1),
        "within": within,
        "trials": len(counted),
        "trials_needed": needed,
        "tune_best": min(seen) if seen else None,
        "tune_steps": rows["steps"],
        "tune_wall_s": round(tune_s, 1),
        "pruning_saved_share": summary["steps"]["saved_share"],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "command": "",  # set by main from the parsed arguments
    }


def _steps(run: Run) -> list[int]:
    from tools.report import epoch_steps

    return list(epoch_steps(run).values())


@dataclass
class BenchArgs:
    study: str = opt("lr", help="a study spec with a `search:` block")
    model: str = opt("smollm2_135m", help="a profile in templates/profiles/")
    trials: int = opt(6, help="the search's trials", min=1)
    sets: list[str] = opt(
        [], help="override a template variable", repeat=True, flag="--set", metavar="KEY=VALUE"
    )
    dataset_dir: Path = opt(DATA, help="LLaMA-Factory dataset_dir")
    within: float = opt(0.05, help="how close to the grid's best dev eval_loss counts as reached", gt=0)
    pruner: str = opt("", help="the pruner as YAML, replacing the spec's")
    quick: bool = opt(False, help="tiny model, 4 rows, 2 epochs, 2 trials (seconds per run): the plumbing")


@command(BenchArgs, __doc__)
def main(a: BenchArgs) -> int:
    bench_root = out_root() / "cache" / "tune-bench" / f"{a.study}-{'tiny' if a.quick else a.model}"
    os.environ["SMALLDATA_OUT"] = str(bench_root)  # its own saves/ and reports/: the study's runs untouched
    model, trials, sets, data = a.model, a.trials, list(a.sets), a.dataset_dir
    if a.quick:
        model, trials, sets, data = (
            "tiny",
            min(a.trials, 2),
            [*QUICK_SETS, *sets],
            quick_data(bench_root / "data"),
        )
    try:
        res = bench(a.study, model, trials, sets, data, a.within, a.pruner)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    flags = [
        f"--study {a.study}",
        f"--model {a.model}",
        f"--trials {a.trials}",
        *[f"--set {x}" for x in a.sets],
    ]
    flags += [f"--pruner '{a.pruner}'"] * bool(a.pruner) + ["--quick"] * a.quick
    res["command"] = " ".join([*command_of(main), *flags])
    atomic_write_json(report_dir(a.study) / "tune_bench.json", res)
    print(
        f"grid: {res['grid_runs']} runs, best dev eval_loss {res['grid_best']['eval_loss']:.4f}"
        f" ({res['grid_best']['variant']}), {res['grid_steps']} steps, {res['grid_wall_s']} s"
    )
    print(
        f"tune: {res['trials']} trials; within {a.within} of the grid's best after"
        f" {res['trials_needed'] or 'none of them'}; best {res['tune_best']}; steps {res['tune_steps']['run']}"
        f" of {res['tune_steps']['planned']} (pruning saved {res['pruning_saved_share']:.0%}), {res['tune_wall_s']} s"
    )
    print(f"machine: {res['machine']}; load {res['load_avg_1m']}; {res['command']}")
    return 0


if __name__ == "__main__":
    run_main(main)
