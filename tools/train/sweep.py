"""Run one study: render its configs, train every run, evaluate the finished ones, report.

Each run trains with `llamafactory-cli train` in a child process (log: <output_dir>/train.log) and
leaves run.json (resolved config, git commit, package versions, wall time, peak RSS and GPU memory,
data fingerprint) and, last, DONE. Re-running is safe and cheap:
  - a run with DONE, its adapter, the same data fingerprint and the same config is skipped; one whose
    data or config changed is moved aside (.<variant>.stale-<time>) and trained again, saying why;
  - a killed run resumes from its last complete checkpoint-* (resume_from_checkpoint), else restarts;
  - a failed run is recorded (run.json status failed, its log) and the others go on;
  - curriculum stages run after the stage they continue (and fail when it did not finish).
The command exits non-zero when any run failed. One status line per run as it ends, a table at the end.

Runners: `local` trains one run after another. `ray` sends each run to Ray as a task holding one GPU
(one CPU where the cluster has no GPU), so N GPUs train N runs at once. It starts a local Ray instance,
or joins the cluster in RAY_ADDRESS (e.g. RAY_ADDRESS=ray://head:10001 or auto); every node must see this
repository, its .venv and saves/ at the same paths (a shared filesystem), since tasks run the
same command there and write the same folders. Ray is an optional extra (`make setup-extras`).

After training (unless --no-eval), evaluation runs in one child process per step, `tools.eval.study`
(base loaded once, adapters swapped; answers, metrics and judge scores): with a dev set (the profile's
eval_dataset), the base model and every epoch's checkpoint of every finished run (`<run>@epochN`) on dev,
then the base model and the point chosen on dev (tools.report.choose) on the test set (every run with
--test-all); without one, the base model and each run on the test set. Then tools.report for the study.
A failure is reported with its log and does not stop the rest.

Usage:
    python -m tools.train.sweep --study rank --model smollm2_135m [--runner local|ray] [--only r4,r8]
        [--no-eval] [--testset demo_eval] [--test-all] [--configs-dir DIR] [--dataset-dir data]
        [--set key=value ...] [--skip-preflight]
    Before training, tools.train.preflight checks the GPU, the base model, disk and the memory bill of
    each run, and refuses (exit 2, nothing written) when one fails.
    --set overrides a template variable for every run (e.g. max_steps_cap=4 for a quick look); such configs
    are rendered under cache/experiments/, and a later normal sweep retrains those runs (config changed).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from tools.core.paths import DATA, EXPERIMENTS, ROOT, Run, cache_dir, llamafactory_cli, out_root
from tools.core.runinfo import git_commit, package_versions, run_child
from tools.train.configs import (
    COMMITTED_PROFILES,
    ConfigError,
    load_profile,
    parse_set,
    render_study,
    resolve_model_path,
    write_rendered,
)
from tools.train.trainer import config_hash, last_checkpoint, train_one  # noqa: F401 (last_checkpoint: tested here)


# ---------------------------------------------------------------------------------------- planning
def plan(
    study: str,
    model: str,
    configs_dir: Path | None = None,
    dataset_dir: Path = DATA,
    only: list[str] | None = None,
    overrides: dict | None = None,
    testset: str | None = None,
) -> list[dict]:
    """Render the study (fresh, into configs_dir) and describe each run as plain data (picklable for Ray)."""
    configs_dir = configs_dir or default_configs_dir(model, bool(overrides))
    rendered = render_study(study, model, overrides, only)
    if not rendered:
        raise ConfigError(f"study {study!r} has no variant for profile {model!r} (--only {only})")
    write_rendered(rendered, configs_dir, prune=not only and not overrides)
    by_variant = {r.run.variant: r for r in rendered}
    testset = testset or load_profile(model).get("eval_testset", "demo_eval")
    commit, versions = git_commit(), package_versions()
    jobs = []
    for r in rendered:
        run = r.run
        resolved = dict(r.config)
        resolved["model_name_or_path"] = resolve_model_path(str(r.config["model_name_or_path"]))
        resolved["dataset_dir"] = str(Path(dataset_dir).resolve())
        resolved["output_dir"] = str(run.output_dir)
        parent_dir = None
        if r.parent:
            if only and r.parent not in by_variant and not Run(model, study, r.parent).is_finished():
                raise ConfigError(f"{run}: continues {r.parent!r}, which is neither selected nor finished")
            parent_dir = str(Run(model, study, r.parent).output_dir)
            resolved["adapter_name_or_path"] = parent_dir
        jobs.append(
            {
                "run": run.name,
                "model": model,
                "study": study,
                "variant": run.variant,
                "config": _rel(configs_dir / study / run.config.name),
                "resolved_config": resolved,
                "config_sha256": config_hash(r.config),
                "output_dir": str(run.output_dir),
                "parent": r.parent,
                "parent_dir": parent_dir,
                "dataset": str(r.config["dataset"]),
                "dataset_dir": str(Path(dataset_dir).resolve()),
                "scientific": list(r.scientific),
                "hparams": r.hparams,
                "eval_testset": testset,
                "decoding": list(r.decoding),
                "git_commit": commit,
                "versions": versions,
                "cli": llamafactory_cli(),
                "cwd": str(ROOT),
            }
        )
    return jobs


def _rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def default_configs_dir(model: str, overridden: bool = False) -> Path:
    """experiments/ for committed profiles, else <out root>/experiments; with overrides cache/experiments."""
    if overridden:  # never next to the committed files: they would no longer match the study spec
        return cache_dir() / "experiments"
    if model in COMMITTED_PROFILES and "SMALLDATA_OUT" not in os.environ:
        return EXPERIMENTS
    return out_root() / "experiments"


# ---------------------------------------------------------------------------------------- runners
def status_line(i: int, n: int, res: dict) -> str:
    parts = [f"[{i}/{n}] {res['run']:<42} {res['status']:<8}"]
    if res.get("wall_s") is not None:
        parts.append(f"{res['wall_s']:>7.1f} s")
    if res.get("peak_rss_mb") is not None:
        parts.append(f"rss {res['peak_rss_mb']:.0f} MB")
    if res.get("peak_gpu_mb"):
        parts.append(f"gpu {res['peak_gpu_mb']} MB")
    if res.get("train_loss") is not None:
        parts.append(f"loss {res['train_loss']}")
    if res.get("note"):
        parts.append(f"({res['note']})")
    return "  ".join(parts)


def run_local(jobs: list[dict], report) -> list[dict]:
    results = []
    for job in jobs:  # the renderer lists a stage after the stage it continues
        res = train_one(job)
        results.append(res)
        report(res)
    return results


def _cells(row: dict):
    def cell(key: str, fmt: str = "{}") -> str:
        return fmt.format(row[key]) if row.get(key) is not None else "-"

    return cell


def summary_table(results: list[dict]) -> str:
    head = f"{'run':<42} {'status':<8} {'wall_s':>8} {'rss_mb':>8} {'gpu_mb':>7} {'loss':>8}  note"
    lines = [head, "-" * len(head)]
    for r in results:
        cell = _cells(r)
        lines.append(
            f"{r['run']:<42} {r['status']:<8} {cell('wall_s', '{:.1f}'):>8} {cell('peak_rss_mb', '{:.0f}'):>8}"
            f" {cell('peak_gpu_mb'):>7} {cell('train_loss'):>8}  {r.get('note', '')}"
        )
    counts = {s: sum(r["status"] == s for r in results) for s in ("finished", "done", "failed")}
    lines.append(
        f"{counts['finished']} trained, {counts['done']} already finished, {counts['failed']} failed"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- evaluation
def module_exists(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


EVAL_MODULE = "tools.eval.study"
# A pruned model's runs (the recovery study) are scored before pruning, after it and after recovery
# (perplexity, zero-shot accuracy, speed, memory) and reported in one table, not answered and judged.
RECOVERY_MODULE = "tools.eval.recovery"


def evaluate(
    runs: list[Run],
    testset: str,
    study: str,
    dataset_dir: Path = DATA,
    module: str = EVAL_MODULE,
    report_module: str = "tools.report",
    decodings: dict[str, list[str]] | None = None,
    dev: str | None = None,
    model: str | None = None,
    test_all: bool = False,
) -> list[tuple[str, str, int]]:
    """Answers, metrics and judge scores (greedy) of every run in ONE child process, then the report.

    With a dev set: first every epoch's checkpoint of every run (`<run>@epochN`; the run itself when
    it kept none) and the base model on dev; then the point chosen there (tools.report.choose) and the
    base model on the test set - every run too with `test_all`. The test set never takes part in a choice.
    tools.eval.study loads the base model once and swaps the adapters; a run that fails there is reported
    in its log and the others still go. `decodings` maps a run's name to the decoding names (points or
    policies) it is evaluated with (the study's `decoding`); without an entry a run gets greedy.
    (step, returncode) rows for the study.
    """
    rows = []
    if dev:
        points = [p for r in runs for p in ([r] if r.is_base else (r.epochs() or [r]))]
        rows += _evaluate_points(points, dev, study, dataset_dir, module, decodings, f"sweep_eval_{dev}.log")
        chosen = choose_on_dev(study, model, dev)
        print(f"  chosen on {dev}: {chosen or 'nothing (no dev scores)'}", flush=True)
        tuned = [r for r in runs if not r.is_base]
        runs = [r for r in runs if r.is_base] + (tuned if test_all else [chosen] if chosen else [])
    rows += _evaluate_points(runs, testset, study, dataset_dir, module, decodings)
    if module_exists(report_module):
        log = out_root() / "reports" / study / "sweep_report.log"
        rc = run_child([sys.executable, "-m", report_module, "--study", study], log, cwd=ROOT).returncode
        rows.append((study, "report", rc))
        print(f"  report {study:<40} {'ok' if rc == 0 else f'FAILED ({rc}), see {log}'}", flush=True)
    return rows


def _decodings_of(run: Run, decodings: dict[str, list[str]] | None) -> tuple[str, ...]:
    """A checkpoint `<run>@epochN` is evaluated with its run's decoding names."""
    d = decodings or {}
    return tuple(d.get(run.name) or d.get(run.name.split("@")[0]) or ())


def _evaluate_points(
    runs: list[Run],
    testset: str,
    study: str,
    dataset_dir: Path,
    module: str,
    decodings,
    log_name: str = "sweep_eval.log",
) -> list[tuple[str, str, int]]:
    """The runs on one prompt set, in one tools.eval.study process per decoding list."""
    rows = []
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(_decodings_of(run, decodings), []).append(run)
    for names, members in groups.items() if runs and module_exists(module) else ():
        log = out_root() / "saves" / members[0].model / "lora" / study / log_name
        cmd = [sys.executable, "-m", module, "--runs", *[r.name for r in members], "--testset", testset]
        cmd += ["--decoding", *names] if names else []
        if Path(dataset_dir).resolve() != DATA.resolve():
            cmd += ["--dataset-dir", str(dataset_dir)]
        res = run_child(cmd, log, cwd=ROOT)
        rows.append((study, "evaluate", res.returncode))
        for run in members:
            ok = all(run.scores(testset, n).exists() for n in names or ("greedy",))
            print(f"  eval {run.name:<42} {testset:<10} {'ok' if ok else f'FAILED, see {log}'}", flush=True)
        print(
            f"  evaluate {len(members)} run(s) in one process on {testset} in {res.wall_s:.0f} s: "
            f"exit {res.returncode}, log {log}",
            flush=True,
        )
    return rows


def evaluate_recovery(runs: list[Run], study: str, dataset_dir: Path = DATA) -> list[tuple[str, str, int]]:
    """tools.eval.recovery for each recovered run, then its own report (tools.report.recovery)."""
    rows = []
    for run in runs if module_exists(RECOVERY_MODULE) else ():
        log = run.output_dir / "eval" / "sweep_eval.log"
        cmd = [sys.executable, "-m", RECOVERY_MODULE, "--run", run.name]
        if Path(dataset_dir).resolve() != DATA.resolve():
            cmd += ["--dataset-dir", str(dataset_dir)]
        rc = run_child(cmd, log, cwd=ROOT).returncode
        rows.append((run.name, "recovery", rc))
        print(
            f"  eval {run.name:<42} recovery {'ok' if rc == 0 else f'FAILED ({rc}), see {log}'}", flush=True
        )
    log = out_root() / "reports" / study / "sweep_report.log"
    rc = run_child(
        [sys.executable, "-m", "tools.report.recovery", "--study", study], log, cwd=ROOT
    ).returncode
    rows.append((study, "report", rc))
    return rows


def choose_on_dev(study: str, model: str | None, dev: str) -> Run | None:
    """The point `python -m tools.report.choose` picks on the dev set (a child: train never imports report)."""
    import subprocess

    cmd = [sys.executable, "-m", "tools.report.choose", "--study", study, "--dev", dev]
    cmd += ["--model", model] if model else []
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        print(f"  choose: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed'}")
        return None
    return Run.parse(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------- CLI
def sweep(
    study: str,
    model: str,
    runner: str = "local",
    only: list[str] | None = None,
    run_eval: bool = True,
    testset: str | None = None,
    configs_dir: Path | None = None,
    dataset_dir: Path = DATA,
    overrides: dict | None = None,
    test_all: bool = False,
    skip_preflight: bool = False,
) -> list[dict]:
    bills = {}
    if skip_preflight:
        print("preflight skipped (--skip-preflight)")
    else:  # GPU, model, disk, memory: refused here, before anything is written or spent
        from tools.train.preflight import PreflightError, check

        remote = os.environ.get("RAY_ADDRESS") if runner == "ray" else None
        rep = check(render_study(study, model, overrides, only), model, remote=remote)
        print("\n".join(rep.lines()), flush=True)
        if not rep.ok:
            bad = "; ".join(f"{name}: {detail}" for name, ok, detail in rep.checks if not ok)
            raise PreflightError(f"preflight refused the sweep ({bad}); --skip-preflight overrides")
        bills = rep.bills
    jobs = plan(study, model, configs_dir, dataset_dir, only, overrides, testset)
    for job in jobs:
        job["memory_estimate"] = bills.get(job["variant"])
    n, seen = len(jobs), []
    print(
        f"sweep {study} x {model}: {n} run(s), runner {runner}, outputs under {out_root() / 'saves' / model}"
    )

    def report(res: dict) -> None:
        seen.append(res)
        print(status_line(len(seen), n, res), flush=True)

    if runner == "ray":
        from tools.train.ray_runner import run_jobs

        results = run_jobs(jobs, report)
    else:
        results = run_local(jobs, report)
    order = {j["run"]: i for i, j in enumerate(jobs)}
    results.sort(key=lambda r: order[r["run"]])
    print(summary_table(results))
    if run_eval:
        testset = jobs[0]["eval_testset"]
        dev = jobs[0]["resolved_config"].get("eval_dataset")
        finished = [Run.parse(r["run"]) for r in results if r["status"] in ("finished", "done")]
        if any(j["resolved_config"].get("launcher") == "plugins.pruned_train" for j in jobs):
            evaluate_recovery(finished, study, dataset_dir)
        else:
            names = {j["run"]: j["decoding"] for j in jobs}
            names[Run.base(model).name] = list(dict.fromkeys(d for j in jobs for d in j["decoding"]))
            evaluate(
                [Run.base(model), *finished],
                testset,
                study,
                dataset_dir,
                decodings=names,
                dev=dev,
                model=model,
                test_all=test_all,
            )
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", required=True)
    ap.add_argument("--model", default="smollm2_135m", help="a profile in templates/profiles/")
    ap.add_argument("--runner", choices=("local", "ray"), default="local")
    ap.add_argument("--only", default=None, help="comma-separated variants")
    ap.add_argument("--no-eval", action="store_true", help="train only")
    ap.add_argument("--testset", default=None, help="evaluation set (default: the profile's eval_testset)")
    ap.add_argument(
        "--test-all",
        action="store_true",
        help="score every run on the test set, not only the one chosen on dev",
    )
    ap.add_argument("--configs-dir", type=Path, default=None, help="render into this folder")
    ap.add_argument(
        "--dataset-dir", type=Path, default=DATA, help="LLaMA-Factory dataset_dir (default data/)"
    )
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a template variable"
    )
    ap.add_argument("--skip-preflight", action="store_true", help="train even when a preflight check fails")
    a = ap.parse_args(argv)
    try:
        overrides = parse_set(a.set)
        if overrides and a.configs_dir and a.configs_dir.resolve() == EXPERIMENTS.resolve():
            raise ConfigError("--set renders configs that differ from the study spec: not into experiments/")
        results = sweep(
            a.study,
            a.model,
            a.runner,
            a.only.split(",") if a.only else None,
            not a.no_eval,
            a.testset,
            a.configs_dir,
            a.dataset_dir,
            overrides,
            a.test_all,
            a.skip_preflight,
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if any(r["status"] == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
