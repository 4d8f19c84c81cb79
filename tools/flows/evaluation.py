"""After a sweep trains: every run evaluated, in one `tools.eval.study` process per prompt set and
decoding list (base model loaded once, adapters swapped), choices made on the dev set, the test set
scored for the chosen point, then the study's report. A pruned model's study (recovery) is scored by
`tools.eval.recovery` instead. Each evaluation is a child process (its memory, GPU memory included, is
given back when it ends, before the next step): a failure is printed with its log and the rest still goes.
With `warm` (a sweep or search that trained with `--warm`) the children are forked from the same warm
server as its training runs (tools.core.warm): the same command, log and exit status, without importing
the libraries again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tools.core import warm as warm_server
from tools.core.paths import DATA, ROOT, Run, out_root, study_dir
from tools.core.runinfo import command_of, run_child
from tools.eval import recovery_main, study_main
from tools.report import main as report_main
from tools.report import record_choice, recovery_report_main


def evaluate(
    runs: list[Run],
    testset: str,
    study: str,
    dataset_dir: Path = DATA,
    evaluator: Callable | None = study_main,
    reporter: Callable | None = report_main,
    decodings: dict[str, list[str]] | None = None,
    dev: str | None = None,
    model: str | None = None,
    test_all: bool = False,
    extra: list[str] | None = None,
    warm: bool = False,
) -> list[tuple[str, str, int]]:
    """Answers, metrics and judge scores (greedy) of every run in ONE child process, then the report.

    With a dev set: first every epoch's checkpoint of every run (`<run>@epochN`; the run itself when
    it kept none) and the base model on dev; then the point chosen there (tools.report.choose) and the
    base model on the test set - every run too with `test_all`. The test set never takes part in a choice.
    tools.eval.study loads the base model once and swaps the adapters; a run that fails there is reported
    in its log and the others still go. `decodings` maps a run's name to the decoding names (points or
    policies) it is evaluated with (the study's `decoding`); without an entry a run gets greedy.
    `extra`: more arguments for tools.eval.study (e.g. --limit, --judge). `evaluator` and `reporter` are the
    tools' `main`s, started as children (None leaves that step out). (step, returncode) rows.
    """
    rows = []
    if dev:
        points = [p for r in runs for p in ([r] if r.is_base else (r.epochs() or [r]))]
        rows += _evaluate_points(
            points, dev, study, dataset_dir, evaluator, decodings, f"sweep_eval_{dev}.log", extra, warm
        )
        chosen = choose_point(study, model, dev)
        print(f"  chosen on {dev}: {chosen or 'nothing (no dev scores)'}", flush=True)
        tuned = [r for r in runs if not r.is_base]
        runs = [r for r in runs if r.is_base] + (tuned if test_all else [chosen] if chosen else [])
    rows += _evaluate_points(
        runs, testset, study, dataset_dir, evaluator, decodings, "sweep_eval.log", extra, warm
    )
    if reporter is not None:
        log = out_root() / "reports" / study / "sweep_report.log"
        rc = _child([*command_of(reporter), "--study", study], log, warm).returncode
        rows.append((study, "report", rc))
        print(f"  report {study:<40} {'ok' if rc == 0 else f'FAILED ({rc}), see {log}'}", flush=True)
    return rows


def _child(cmd: list[str], log: Path, warm: bool):
    """One step's child: forked from the warm server when the flow is warm, else a fresh process."""
    if warm:
        return warm_server.run_command(cmd, log, ROOT, dict(os.environ))
    return run_child(cmd, log, cwd=ROOT)


def _decodings_of(run: Run, decodings: dict[str, list[str]] | None) -> tuple[str, ...]:
    """A checkpoint `<run>@epochN` is evaluated with its run's decoding names."""
    d = decodings or {}
    return tuple(d.get(run.name) or d.get(run.name.split("@")[0]) or ())


def _evaluate_points(
    runs: list[Run],
    testset: str,
    study: str,
    dataset_dir: Path,
    evaluator: Callable | None,
    decodings,
    log_name: str = "sweep_eval.log",
    extra: list[str] | None = None,
    warm: bool = False,
) -> list[tuple[str, str, int]]:
    """The runs on one prompt set, in one tools.eval.study process per decoding list."""
    rows = []
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(_decodings_of(run, decodings), []).append(run)
    for names, members in groups.items() if runs and evaluator is not None else ():
        log = study_dir(members[0].model, study) / log_name
        cmd = [*command_of(evaluator), "--runs", *[r.name for r in members], "--testset", testset]
        cmd += ["--decoding", *names] if names else []
        cmd += extra or []
        if Path(dataset_dir).resolve() != DATA.resolve():
            cmd += ["--dataset-dir", str(dataset_dir)]
        res = _child(cmd, log, warm)
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


def evaluate_recovery(
    runs: list[Run], study: str, dataset_dir: Path = DATA, warm: bool = False
) -> list[tuple[str, str, int]]:
    """tools.eval.recovery for each recovered run, then its own report (tools.report.recovery)."""
    rows = []
    for run in runs:
        log = run.output_dir / "eval" / "sweep_eval.log"
        cmd = [*command_of(recovery_main), "--run", run.name]
        if Path(dataset_dir).resolve() != DATA.resolve():
            cmd += ["--dataset-dir", str(dataset_dir)]
        rc = _child(cmd, log, warm).returncode
        rows.append((run.name, "recovery", rc))
        print(
            f"  eval {run.name:<42} recovery {'ok' if rc == 0 else f'FAILED ({rc}), see {log}'}", flush=True
        )
    log = out_root() / "reports" / study / "sweep_report.log"
    rc = _child([*command_of(recovery_report_main), "--study", study], log, warm).returncode
    rows.append((study, "report", rc))
    return rows


def choose_point(study: str, model: str | None, dev: str) -> Run | None:
    """The point the study's decision rule picks on the dev set (tools.report.choose, as the report does)."""
    try:
        choice = record_choice(study, model, dev)
    except (OSError, ValueError) as e:
        print(f"  choose: {e}")
        return None
    if choice.best is None:
        print(f"  choose: {choice.note}")
    else:
        print(f"  choose: {choice.verdict}", flush=True)
    return choice.run
