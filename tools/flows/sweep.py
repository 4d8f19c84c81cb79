"""Run one study: render its configs, train every run, evaluate the finished ones, report.

Each run trains with `llamafactory-cli train` in a child process (log: <output_dir>/train.log) and
leaves run.json (resolved config, git commit, package versions, wall time, peak RSS and GPU memory,
data fingerprint) and, last, DONE. Re-running is safe and cheap:
  - a run with DONE, its adapter, the same data fingerprint and the same config is skipped; one whose
    data or config changed is moved aside (.<variant>.stale-<time>) and trained again, saying why;
  - a killed run resumes from its last complete checkpoint-* before its final step (resume_from_checkpoint,
    tools.train.resume_point), else restarts;
  - a failed run is recorded (run.json status failed, its log) and the others go on;
  - curriculum stages run after the stage they continue (and fail when it did not finish).
The command exits non-zero when any run failed. One status line per run as it ends, a table at the end.

Runners: `local` trains one run after another; with --warm each run (and the evaluation after) is a
child of a fork server that imported LLaMA-Factory once (tools.core.warm: 10-20 s saved per run on a
CPU, same log, run.json, DONE).
`ray` sends each run to Ray as a task holding one GPU
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
    python -m tools.flows.sweep --study rank --model smollm2_135m [--runner local|ray] [--only r4,r8]
        [--no-eval] [--testset demo_eval] [--test-all] [--configs-dir DIR] [--dataset-dir data]
        [--set key=value ...] [--skip-preflight] [--warm]
    Before training, tools.flows.preflight checks the GPU, the base model, disk and the memory bill of
    each run, and refuses (exit 2, nothing written) when one fails.
    --set overrides a template variable for every run (e.g. max_steps_cap=4 for a quick look); such configs
    are rendered under cache/experiments/, and a later normal sweep retrains those runs (config changed).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from filelib import run_main
from plugins.launchers import is_pruned
from tools.core.args import command, opt
from tools.core.paths import DATA, EXPERIMENTS, ROOT, Run, cache_dir, llamafactory_cli, out_root
from tools.core.profiles import ConfigError, list_profiles, load_profile, resolve_model_path
from tools.core.runinfo import git_commit, package_versions
from tools.flows.evaluation import evaluate, evaluate_recovery
from tools.flows.preflight import check as preflight_check
from tools.flows.tracking import TRACKERS, Tracker
from tools.train import (
    COMMITTED_PROFILES,
    PreflightError,
    config_hash,
    list_studies,
    load_study,
    parse_set,
    render_study,
    run_jobs,
    set_problems,
    train_one,
    write_rendered,
)


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
    warm: bool = False,
    track: str = "tensorboard",
    shared_saves: str | None = None,
) -> list[dict]:
    bills = {}
    if skip_preflight:
        print("preflight skipped (--skip-preflight)")
    else:  # GPU, model, disk, memory: refused here, before anything is written or spent
        remote = os.environ.get("RAY_ADDRESS") if runner == "ray" else None
        rep = preflight_check(render_study(study, model, overrides, only), model, remote=remote)
        print("\n".join(rep.lines()), flush=True)
        if not rep.ok:
            bad = "; ".join(f"{name}: {detail}" for name, ok, detail in rep.checks if not ok)
            raise PreflightError(f"preflight refused the sweep ({bad}); --skip-preflight overrides")
        bills = rep.bills
    tracker = Tracker(track, study, model)  # an unusable tracker stops the sweep here, before training
    jobs = plan(study, model, configs_dir, dataset_dir, only, overrides, testset)
    tracker.prepare(jobs)
    for job in jobs:
        job["memory_estimate"] = bills.get(job["variant"])
        job["warm"] = warm and runner == "local"
    n, seen = len(jobs), []
    print(
        f"sweep {study} x {model}: {n} run(s), runner {runner}, outputs under {out_root() / 'saves' / model}"
    )

    def report(res: dict) -> None:
        seen.append(res)
        print(status_line(len(seen), n, res), flush=True)

    if runner == "ray":
        results = run_jobs(jobs, report, shared_saves)
    else:
        results = run_local(jobs, report)
    order = {j["run"]: i for i, j in enumerate(jobs)}
    results.sort(key=lambda r: order[r["run"]])
    print(summary_table(results))
    if run_eval:
        testset = jobs[0]["eval_testset"]
        dev = jobs[0]["resolved_config"].get("eval_dataset")
        finished = [Run.parse(r["run"]) for r in results if r["status"] in ("finished", "done")]
        if any(
            is_pruned(j["resolved_config"]["model_name_or_path"])
            for j in jobs
            if j["resolved_config"].get("model_name_or_path")
        ):
            evaluate_recovery(finished, study, dataset_dir, warm=warm and runner == "local")
        else:
            names = {j["run"]: j["decoding"] for j in jobs}
            names[Run.base(model).name] = list(dict.fromkeys(d for j in jobs for d in j["decoding"]))
            # A study that names a held-out general set or zero-shot tasks (`heldout:`, `zeroshot:` in its
            # spec) measures forgetting on them, for the base model and every run.
            spec = load_study(study)
            guard = (["--heldout", spec["heldout"]] if spec.get("heldout") else []) + (
                ["--zeroshot", *spec["zeroshot"]] if spec.get("zeroshot") else []
            )
            evaluate(
                [Run.base(model), *finished],
                testset,
                study,
                dataset_dir,
                decodings=names,
                dev=dev,
                model=model,
                test_all=test_all,
                extra=guard or None,
                warm=warm and runner == "local",
            )
    tracker.finish(results)
    return results


@dataclass
class SweepArgs:
    study: str = opt(help="a study in templates/studies/", required=True, choices=list_studies)
    model: str = opt("smollm2_135m", help="a profile in templates/profiles/", choices=list_profiles)
    runner: str = opt("local", help="where runs train", choices=("local", "ray"))
    only: list[str] | None = opt(None, help="comma-separated variants", split=",")
    eval: bool = opt(True, help="train only")
    testset: str | None = opt(None, help="evaluation set (default: the profile's eval_testset)")
    test_all: bool = opt(False, help="score every run on the test set, not only the one chosen on dev")
    configs_dir: Path | None = opt(None, help="render into this folder")
    dataset_dir: Path = opt(DATA, help="LLaMA-Factory dataset_dir")
    sets: list[str] = opt(
        [], help="override a template variable", repeat=True, flag="--set", metavar="KEY=VALUE"
    )
    skip_preflight: bool = opt(False, help="train even when a preflight check fails")
    warm: bool = opt(
        False,
        help="import LLaMA-Factory once: each run and its evaluation a child of a warm fork server "
        "(local runner; Linux)",
    )

    track: str = opt(
        "tensorboard",
        help="experiment tracker: LLaMA-Factory's report_to plus study, scores, decision",
        choices=TRACKERS,
        env="TRACK",
    )
    shared_saves: str | None = opt(
        None,
        help="--runner ray on several nodes: the shared folder holding saves/",
        env="SMALLDATA_SHARED_SAVES",
    )

    def check(self) -> list[str]:
        into = self.configs_dir and Path(self.configs_dir).resolve() == EXPERIMENTS.resolve()
        wrong = ["--set renders configs that differ from the study spec: not into experiments/"]
        return set_problems(self.sets) + (wrong if self.sets and into else [])


@command(SweepArgs, __doc__)
def main(a: SweepArgs) -> int:
    try:
        results = sweep(
            a.study,
            a.model,
            a.runner,
            a.only,
            a.eval,
            a.testset,
            a.configs_dir,
            a.dataset_dir,
            parse_set(a.sets),
            a.test_all,
            a.skip_preflight,
            a.warm,
            a.track,
            a.shared_saves,
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if any(r["status"] == "failed" for r in results) else 0


if __name__ == "__main__":
    run_main(main)
