"""Everything the report knows about one run, read from its folder and nothing else.

A run's folder holds LLaMA-Factory's events (`runs/`), our `run.json` and `DONE`, and one folder
per evaluation point `eval/<testset>/<decoding>/` with `metrics.json` and `scores.json`
(tools/CONTRACTS.md). Real folders are often incomplete - a run still going, a killed writer,
a run not judged yet - so nothing here raises on a missing or broken file: each gap becomes a
line in `problems` that the report prints, and the rest still renders.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tools.core.paths import Run
from tools.report.events import Curves, read_many


@dataclass
class EvalPoint:
    testset: str
    decoding: str
    metrics: dict | None = None
    scores: dict | None = None
    epoch: int | None = None  # None: the run's final adapter; N: its checkpoint at the end of epoch N


@dataclass
class RunRecord:
    run: Run
    info: dict = field(default_factory=dict)  # run.json, {} when absent
    status: str = "unknown"
    curves: Curves = field(default_factory=Curves)
    evals: list[EvalPoint] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    show_model: bool = False  # set when the study holds several models, so labels stay unique
    step_offset: int = 0  # a chained stage: the steps of the stages before it (one continuous axis)
    chain: str | None = None  # a chained stage: the variant its chain starts from (one colour per chain)

    @property
    def is_base(self) -> bool:
        return self.run.is_base

    @property
    def label(self) -> str:
        """Short name in tables and legends: the variant, prefixed by the model when several are shown."""
        if self.is_base:
            return f"{self.run.model} (base)"
        return f"{self.run.model}/{self.run.variant}" if self.show_model else self.run.variant

    @property
    def hparams(self) -> dict:
        return dict(self.info.get("hparams") or {})

    def eval_point(
        self, testset: str | None, decoding: str | None, epoch: int | None | str = "standard"
    ) -> EvalPoint | None:
        """The point at (testset, decoding): of the final adapter, else of the last epoch evaluated there
        (`epoch="standard"`), or of the given epoch (None: the final adapter only)."""
        found = [e for e in self.evals if e.testset == testset and e.decoding == decoding]
        if epoch != "standard":
            return next((e for e in found if e.epoch == epoch), None)
        final = [e for e in found if e.epoch is None]
        return final[0] if final else max(found, key=lambda e: e.epoch, default=None)


def zeroshot_accs(m: dict) -> dict[str, float]:
    """{task: accuracy} of the zero-shot tasks metrics.json scored (tasks recorded as skipped left out)."""
    zs = m.get("zeroshot") if isinstance(m, dict) else None
    return {
        t: float(r["acc"])
        for t, r in (zs if isinstance(zs, dict) else {}).items()
        if isinstance(r, dict) and isinstance(r.get("acc"), (int, float))
    }


def checked_numbers(obj: dict | None, path: Path, problems: list[str], keys=("mean",)) -> dict | None:
    """The object, or None with a problem when one of `keys` is present but not a finite number (a text
    `mean`, NaN): such a file would otherwise print as a confident score."""
    if obj is None:
        return None
    for k in keys:
        v = obj.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            problems.append(f"{path}: {k} = {v!r} is not a finite number; the file is ignored")
            return None
    return obj


def read_json(path: Path, problems: list[str], what: str) -> dict | None:
    """A JSON object, or None with a line in `problems` saying what is missing or broken."""
    if not path.exists():
        problems.append(f"no {what} ({path.name})")
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problems.append(f"{path}: broken JSON ({e}); {what} ignored")
        return None
    if not isinstance(obj, dict):
        problems.append(f"{path}: expected a JSON object, got {type(obj).__name__}; {what} ignored")
        return None
    return obj


def run_status(run: Run, info: dict) -> str:
    """The status run.json records (running, finished, failed); `finished` only with the DONE marker."""
    if run.is_base:
        return "base"
    status = info.get("status")
    if run.done_marker.exists():
        return "finished" if status in (None, "finished") else str(status)
    if status == "finished":  # run.json says finished but DONE is missing: the sweep was killed after
        return "incomplete"
    return str(status) if status else "unknown"


def _eval_roots(run: Run) -> list[tuple[int | None, Path]]:
    """eval/ (the final adapter) and each eval@epochN/ (one epoch's checkpoint), epochs in order."""
    roots = [(None, run.output_dir / "eval")]
    for d in run.output_dir.glob("eval@epoch*"):
        tail = d.name.removeprefix("eval@epoch")
        if d.is_dir() and tail.isdigit():
            roots.append((int(tail), d))
    return sorted(roots, key=lambda x: -1 if x[0] is None else x[0])


def read_evals(run: Run, problems: list[str]) -> list[EvalPoint]:
    points = []
    for epoch, root in _eval_roots(run):
        for d in sorted(root.glob("*/*")) if root.is_dir() else []:
            if not d.is_dir() or d.name.startswith("."):
                continue
            where = f"{root.name}/{d.parent.name}/{d.name}"
            local: list[str] = []
            point = EvalPoint(
                d.parent.name,
                d.name,
                checked_numbers(
                    read_json(d / "metrics.json", local, "metrics"), d / "metrics.json", local, ("rougeL",)
                ),
                checked_numbers(
                    read_json(d / "scores.json", local, "judge scores"), d / "scores.json", local
                ),
                epoch,
            )
            problems.extend(f"{where}: {p}" for p in local)
            points.append(point)
    if not points and not problems:
        problems.append("not evaluated yet (no eval/<testset>/<decoding>/ folder)")
    return points


def collect(runs: list[Run], workers: int | None = None, cache: bool = True) -> list[RunRecord]:
    """Read every run's files; events of all runs at once (a process per core when it pays)."""
    records = []
    for run in runs:
        rec = RunRecord(run)
        if run.run_json.exists() or not run.is_base:
            rec.info = read_json(run.run_json, rec.problems, "run.json (settings, status, wall time)") or {}
        rec.status = run_status(run, rec.info)
        if rec.status == "running":
            rec.problems.append("still running (no DONE yet): numbers are provisional")
        elif rec.status in ("unknown", "incomplete"):
            rec.problems.append(f"status {rec.status}: no DONE marker")
        records.append(rec)
    several = len({r.run.model for r in records}) > 1
    for rec in records:
        rec.show_model = several
    trained = [r for r in records if not r.is_base]
    for rec, curves in zip(trained, read_many([r.run.tb_dir for r in trained], workers, cache), strict=True):
        rec.curves = curves
        rec.problems.extend(curves.problems)
    for rec in records:
        rec.evals = read_evals(rec.run, rec.problems)
    chain_steps(records)
    return records


def chain_steps(records: list[RunRecord]) -> None:
    """Put chained stages (run.json `parent`) on one step axis: a stage starts where its parent ended.

    Each stage restarts its own step count at 1 (its own optimizer and schedule); the offset is the
    last logged step of every stage before it, so a three-stage chain reads as one run in the plots.
    """
    by_key = {(r.run.model, r.run.variant): r for r in records if not r.is_base}

    def last_step(rec: RunRecord) -> int:
        return max((s[-1] for s, _ in rec.curves.series.values() if s), default=0)

    def resolve(rec: RunRecord, seen: tuple = ()) -> tuple[int, str]:
        parent = by_key.get((rec.run.model, rec.info.get("parent")))
        if parent is None or parent in seen:
            return 0, rec.run.variant
        offset, root = resolve(parent, (*seen, rec))
        return offset + last_step(parent), root

    for rec in by_key.values():
        if rec.info.get("parent"):
            rec.step_offset, rec.chain = resolve(rec)
            if rec.chain == rec.run.variant:  # the parent is not in this report: nothing to chain to
                rec.chain = None
            else:
                by_key[(rec.run.model, rec.chain)].chain = rec.chain
