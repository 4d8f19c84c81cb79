"""Measured, not claimed: does the search (tools.flows.tune) reach the grid's best dev eval_loss in fewer runs,
and what share of the steps does pruning save?

The grid is the study's own variants (trained by the sweep's planner and trainer, with the same --set
overrides); its best is the lowest dev eval_loss over every run and epoch (the point the rule would pick on
eval_loss). Then a tune of the study's `search:` space with --trials N, in its own Optuna study. Reported:
the runs the grid took, the trials the search needed before one of its kept epochs came within --within of
the grid's best (pruned trials' epochs count: they are real dev losses at real checkpoints), the steps each
spent, and the share of the search's planned steps that pruning saved. Everything goes under
<out root>/cache/tune-bench/<study>-<model>[-<budget>]/ (its own saves/ and reports/), so the study's runs are
untouched; the figures go to reports/<study>/tune_bench.json there and are printed with the machine, the load
average before and after, and the command.

--budget cpu is the study cut down to what a shared 2-core CPU trains in minutes, with the question kept: the
same grid, space, sampler, pruner, dev set (all 8 rows of demo_dev) and 3 epochs with a cosine schedule, on
the first 8 training rows at 64 tokens, 4 rows a step (2 optimizer steps an epoch instead of 13). Its figures
answer the question for that budget only, not for 100 rows at 256 tokens.

Usage:
    python -m tools.flows.tune_bench --study lr --model smollm2_135m --trials 6 [--budget cpu]
    python -m tools.flows.tune_bench --quick        # tiny model, 2 epochs, 4 rows, 2 trials: the plumbing
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
from tools.flows.tune import TuneArgs, require_data, tune
from tools.report import epoch_values

QUICK_SETS = ["max_steps_cap=", "save_steps=", "train_rows=4", "max_samples=4", "num_train_epochs=2"]
QUICK_SETS += ["eval_dataset=demo_dev"]
# the overrides each --budget adds (before the user's own --set); `make tune ... TUNE_ARGS="--set ..."` takes the same
# (cpu: 8 rows at 64 tokens, 4 a step, 3 epochs: 6 optimizer steps a run; no warm-up, which would be a whole
# step at learning rate 0, and no gradient checkpointing, which recomputes the activations: a third of a step)
BUDGETS = {
    "full": [],
    "cpu": [
        "train_rows=8",
        "max_samples=8",
        "cutoff_len=64",
        "gradient_accumulation_steps=1",
        "warmup_steps=0",
        "disable_gradient_checkpointing=true",
    ],
}


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

    load_before, t0 = _uptime(), time.time()
    jobs = plan(study, model, None, data, None, parse_set(sets))
    require_data(jobs[0]["resolved_config"], data)  # a fresh clone before `make data`: said before the grid
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
    needed, matched, seen, kept = None, None, [], []
    import optuna

    st = optuna.load_study(study_name=args.name, storage=f"sqlite:///{report_dir(study) / 'tune.db'}")
    counted = [t for t in st.trials if not t.user_attrs.get("interrupted")]
    for i, t in enumerate(counted, 1):
        seen += list(t.intermediate_values.values())
        kept.append(
            {"run": t.user_attrs.get("run"), "state": t.state.name, "params": t.params}
            | {"epochs": {int(e): v for e, v in t.intermediate_values.items()}}
        )
        if needed is None and seen and min(seen) <= best + within:
            needed = i
        if matched is None and seen and min(seen) <= best:
            matched = i
    return {
        "study": study,
        "model": model,
        "sets": sets,
        "grid_runs": len(jobs),
        "grid_best": {"variant": min(grid, key=grid.get), "eval_loss": best, "all": grid},
        "grid_spread": max(grid.values()) - best,
        "grid_steps": grid_steps,
        "grid_wall_s": round(grid_s, 1),
        "within": within,
        "trials": len(counted),
        "trials_needed": needed,
        "trials_to_grid_best": matched,
        "trial_rows": kept,
        "tune_best": min(seen) if seen else None,
        "tune_steps": rows["steps"],
        "tune_wall_s": round(tune_s, 1),
        "pruning_saved_share": summary["steps"]["saved_share"],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "load_before": load_before,
        "load_after": _uptime(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "command": "",  # set by main from the parsed arguments
    }


def _uptime() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _steps(run: Run) -> list[int]:
    from tools.report import epoch_steps

    return list(epoch_steps(run).values())


def lines(res: dict) -> list[str]:
    """What a run of the benchmark found, in the words docs/tune.md quotes."""
    g, s, within = res["grid_best"], res["tune_steps"], res["within"]
    per_run = ", ".join(f"{v} {x:.4f}" for v, x in sorted(g["all"].items()))
    reached = (
        f"after {res['trials_needed']} trial(s)"
        if res["trials_needed"]
        else f"in none of its {res['trials']}"
    )
    best = "none" if res["tune_best"] is None else f"{res['tune_best']:.4f}"
    return [
        f"grid: {res['grid_runs']} runs, best dev eval_loss {g['eval_loss']:.4f} ({g['variant']}; {per_run};"
        f" spread {res['grid_spread']:.4f}), {res['grid_steps']} steps, {res['grid_wall_s']} s",
        f"tune: {res['trials']} trials; within {within} of the grid's best {reached}; best {best};"
        f" steps {s['run']} of {s['planned']} (pruning saved {res['pruning_saved_share']:.0%}),"
        f" {res['tune_wall_s']} s",
        f"  the grid's best itself ({g['eval_loss']:.4f}) reached "
        + (
            f"after {res['trials_to_grid_best']} trial(s)"
            if res.get("trials_to_grid_best")
            else f"by none of the {res['trials']} trials"
        ),
        *(
            f"  {r['run']} {r['state'].lower()} "
            + " ".join(f"ep{e} {v:.4f}" for e, v in sorted(r["epochs"].items()))
            for r in res["trial_rows"]
        ),
        f"machine: {res['machine']}; load average {res['load_before']} before, {res['load_after']} after",
        f"command: {res['command']}",
    ]


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
    budget: str = opt(
        "full", help="the study's own budget, or cpu: 8 rows at 64 tokens (minutes)", choices=tuple(BUDGETS)
    )
    quick: bool = opt(False, help="tiny model, 4 rows, 2 epochs, 2 trials (seconds per run): the plumbing")


def measure(a: BenchArgs) -> dict:
    """Train the grid and the search under their own output root, write tune_bench.json there."""
    tag = "tiny" if a.quick else a.model + ("" if a.budget == "full" else f"-{a.budget}")
    bench_root = out_root() / "cache" / "tune-bench" / f"{a.study}-{tag}"
    os.environ["SMALLDATA_OUT"] = str(bench_root)  # its own saves/ and reports/: the study's runs untouched
    model, trials, sets, data = a.model, a.trials, [*BUDGETS[a.budget], *a.sets], a.dataset_dir
    if a.quick:
        model, trials = "tiny", min(a.trials, 2)
        sets, data = [*QUICK_SETS, *a.sets], quick_data(bench_root / "data")
    res = bench(a.study, model, trials, sets, data, a.within, a.pruner)
    flags = [f"--study {a.study}", f"--model {a.model}", f"--trials {a.trials}"]
    flags += [f"--budget {a.budget}"] * (a.budget != "full") + [f"--set {x}" for x in a.sets]
    flags += [f"--pruner '{a.pruner}'"] * bool(a.pruner) + ["--quick"] * a.quick
    res["command"] = " ".join([*command_of(main), *flags])
    atomic_write_json(report_dir(a.study) / "tune_bench.json", res)
    return res


@command(BenchArgs, __doc__)
def main(a: BenchArgs) -> int:
    try:
        res = measure(a)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines(res)))
    return 0


if __name__ == "__main__":
    run_main(main)
