"""A study's evaluation in one process: the base model loaded once, each run's adapter swapped in.

For every run (the base model `<model>/base/base` and each finished run of the study, or the runs
named with --runs) and every decoding point, in this one process:
  1. answers (tools.eval.generate's `generate_point`: resumes per batch, same files);
  2. metrics with perplexity (tools.eval.metrics' `compute`, on the same engine; skipped when
     metrics.json is newer than the answers);
  3. judge scores (tools.judge's `run_judge`; the offline judge model is loaded once for all runs,
     and only when a judgment is missing from the cache).
The engine (tools.eval.engine) loads the base through LLaMA-Factory once and swaps adapters with PEFT
(any adapter folder: a run's output, a checkpoint). Every file is the one the single-run tools write
(tools/CONTRACTS.md), so a killed evaluation resumes where it stopped and any step can be re-run
alone. Runs on different base models (or templates, or loading options) are refused up front, as are
merged model folders (evaluate those with tools.eval.generate --model-path). A run that fails is
reported and the others go on; the exit status is then 1.

Usage:
    python -m tools.eval.study --model smollm2_135m --study demo --testset demo_eval [--no-base]
    python -m tools.eval.study --runs smollm2_135m/base/base smollm2_135m/rank/r8 --testset demo_eval
        [--decoding greedy ... | --grid hw5] [--max-new-tokens N] [--limit K] [--batch-size N]
        [--dtype bfloat16] [--judge auto|offline|openai|none] [--offline-model DIR] [--no-metrics]
        [--no-similarity] [--dataset-dir data] [--references NAME] [--timings FILE] [--force]
        [--heldout POOL [--heldout-n 50]]   (perplexity on POOL rows no run trained on: the forgetting guard)
        [--zeroshot TASK... [--zeroshot-limit N]]   (zero-shot accuracy through lm-eval, once per run)
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from filelib import atomic_write_json, run_main
from tools.core.args import command, opt
from tools.core.paths import DATA, TEMPLATES, Run, runs_of_study, study_dir
from tools.eval.decoding import DEFAULT_MAX_NEW_TOKENS, DecodingPoint
from tools.eval.engine import DTYPES, Engine, _base_key
from tools.eval.generate import decoding_points, generate_point
from tools.eval.metrics import compute
from tools.eval.prompts import GenerateError, load_prompts
from tools.eval.source import Source, resolve_source
from tools.eval.stale import metrics_stale, zeroshot_done

log = logging.getLogger("study")
JUDGES = ("auto", "offline", "openai", "none")
STUDIES = TEMPLATES / "studies"


def study_runs(model: str, study: str, base: bool = True) -> list[Run]:
    """The base model and every finished run of a study, by name (unfinished ones are left out)."""
    runs = runs_of_study(study, model)
    for r in runs:
        if not r.is_finished():
            log.warning("%s is not finished: left out", r)
    done = [r for r in runs if r.is_finished()]
    if not done and not base:
        raise GenerateError(f"study {study} has no finished run under {study_dir(model, study)}")
    return ([Run.base(model)] if base else []) + done


def check_sources(sources: list[Source]) -> None:
    """One base for all: an adapter of another base, or a merged folder, is refused before any work."""
    from tools.core.profiles import same_model

    first = sources[0]
    for s in sources:
        if s.kind == "merged":
            raise GenerateError(
                f"{s.run}: a merged model folder has weights of its own; evaluate it with "
                "`python -m tools.eval.generate --model-path`"
            )
        if not same_model(s.model_name_or_path, first.model_name_or_path):
            raise GenerateError(
                f"{s.run}: its adapter was trained on {s.model_name_or_path!r}, not on {first.run}'s "
                f"{first.model_name_or_path!r}: one study evaluation shares one base model"
            )
        if _base_key(s) != _base_key(first):
            raise GenerateError(f"{s.run}: template/loading options differ from {first.run}'s")


class Study:
    """The engine and the offline judge of one evaluation, each loaded on first need."""

    def __init__(self, dtype: str | None = None, offline_model: str | Path | None = None):
        self.dtype = dtype
        self.engine: Engine | None = None
        self.offline_model = offline_model
        self.judge_s = 0.0  # seconds in the offline judge's forward passes
        self.load_s = 0.0  # seconds loading models

    def engine_for(self, source: Source) -> Engine:
        if self.engine is None:
            t0 = time.perf_counter()
            self.engine = Engine(source, self.dtype)
            self.load_s += time.perf_counter() - t0
        return self.engine.use(source)

    @functools.cache  # noqa: B019 (one Study per process)
    def offline_judge(self, path: Path):
        from tools.judge import OfflineJudge

        t0 = time.perf_counter()
        judge = OfflineJudge(path)
        self.load_s += time.perf_counter() - t0
        started: list[float] = []
        judge.model.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))

        def done(*_):
            self.judge_s += time.perf_counter() - started.pop()

        judge.model.register_forward_hook(done)
        return judge

    @property
    def compute_s(self) -> float:
        return (self.engine.compute_s if self.engine else 0.0) + self.judge_s


def evaluate_run(
    study: Study, source: Source, prompts: list[dict], points: list[DecodingPoint], a: StudyArgs, say=print
) -> None:
    """Answers, metrics and judge scores of one run at every point, on the shared engine and judge.
    With --heldout: perplexity on rows of a registered pool the run did not train on (forgetting); with
    --zeroshot: zero-shot accuracy, computed once per run and written with every point."""
    testset, force = a.testset, a.force
    heldout = (a.heldout, a.heldout_n) if a.heldout else None
    zeroshot = (a.zeroshot, a.zeroshot_limit) if a.zeroshot else None
    run = source.run
    known = zeroshot_done(source, zeroshot) if zeroshot and not force else {}
    for point in points:
        pred = generate_point(
            None,
            source,
            testset,
            prompts,
            point,
            a.batch_size,
            force,
            progress=False,
            engine_factory=lambda: study.engine_for(source),
        )
        met = run.metrics(testset, point.name)
        if a.metrics and (force or metrics_stale(met, pred, heldout, zeroshot)):
            m = compute(
                run,
                testset,
                point.name,
                similarity=a.similarity,
                dataset_dir=a.dataset_dir,
                engine=study.engine_for(source),
                heldout=heldout[0] if heldout else None,
                heldout_n=heldout[1] if heldout else 50,
                zeroshot=zeroshot[0] if zeroshot else None,
                zeroshot_limit=zeroshot[1] if zeroshot else None,
                zeroshot_known=known,
            )
            known = m.get("zeroshot") or known
            general = f" ppl {heldout[0]} {m.get('ppl_heldout')}" if heldout else ""
            general += "".join(
                f" {t} {r['acc']}" if "acc" in r else f" {t} skipped"
                for t, r in (m.get("zeroshot") or {}).items()
            )
            say(f"  metrics {run.name} {point.name}: rougeL {m['rougeL']} ppl {m['ppl_reference']}{general}")
        if a.judge != "none":
            from tools.judge import run_judge

            run_judge(
                run.name,
                testset,
                point.name,
                offline={"auto": None, "offline": True, "openai": False}[a.judge],
                offline_model=study.offline_model,
                judge_factory=study.offline_judge,
                say=lambda line: say(f"  {line}"),
            )


def evaluate_study(runs: list[Run | str], points: list[DecodingPoint], a: StudyArgs, say=print) -> dict:
    """Evaluate every run on one engine; returns {failed: [run names], timings}."""
    t0 = time.perf_counter()
    sources = [resolve_source(r) for r in runs]
    if not sources:
        raise GenerateError("no runs to evaluate")
    check_sources(sources)
    prompts = load_prompts(a.testset, a.dataset_dir, a.references)[: a.limit]
    study = Study(a.dtype, a.offline_model)
    failed = []
    for source in sources:
        t_run = time.perf_counter()
        say(f"{source.run.name}: {a.testset} x {', '.join(p.name for p in points)}")
        try:
            evaluate_run(study, source, prompts, points, a, say)
        except Exception as e:  # noqa: BLE001 (one run's failure is reported; the others still go)
            if isinstance(e, KeyboardInterrupt):
                raise
            log.exception("%s failed", source.run)
            say(f"  {source.run.name}: FAILED: {e}")
            failed.append(source.run.name)
            continue
        say(f"  {source.run.name}: done in {time.perf_counter() - t_run:.1f} s")
    wall = time.perf_counter() - t0
    timings = {
        "runs": len(sources),
        "points": len(points),
        "prompts": len(prompts),
        "wall_s": round(wall, 2),
        "load_s": round(study.load_s, 2),
        "generate_and_score_s": round(study.engine.compute_s if study.engine else 0.0, 2),
        "judge_forward_s": round(study.judge_s, 2),
        "compute_s": round(study.compute_s, 2),
        "dtype": str(study.engine.dtype).replace("torch.", "") if study.engine else None,
    }
    return {"failed": failed, "timings": timings}


@dataclass
class StudyArgs:
    """Every option of a study's evaluation, each default, help and rule once (tools.core.args)."""

    study: str | None = opt(None, help="every finished run of this study (with --model), and the base model")
    runs: list[str] | None = opt(None, help="runs by name, model/study/variant (instead of --study)")
    model: str = opt("smollm2_135m", help="with --study: the profile")
    base: bool = opt(True, help="with --study: leave the base model out")
    testset: str = opt("demo_eval", help="a registered prompt set")
    grid: str | None = opt(None, help="a grid in templates/decoding/")
    decoding: list[str] | None = opt(None, help="decoding names or policies (default greedy)")
    max_new_tokens: int | None = opt(
        None, help=f"answer length cap (default {DEFAULT_MAX_NEW_TOKENS})", min=1
    )
    limit: int | None = opt(None, help="only the first K prompts", min=1)
    batch_size: int | None = opt(None, help="default: all prompts, within memory", min=1)
    dtype: str | None = opt(None, help="default: the profile's on GPU, bf16 on a bf16 CPU", choices=DTYPES)
    judge: str = opt("auto", help="auto: GPT-4o-mini with a key, else offline", choices=JUDGES)
    offline_model: Path | None = opt(None, help="the offline judge's model folder")
    metrics: bool = opt(True, help="no metrics (ROUGE, perplexity, ...)")
    similarity: bool = opt(True, help="no embedding similarity")
    dataset_dir: Path = opt(DATA, help="the folder holding dataset_info.json")
    references: str | None = opt(None, help="a registered set whose `output` is the reference, joined by id")
    timings: Path | None = opt(None, help="write the time split (load, compute, wall) as JSON here")
    force: bool = opt(False, help="regenerate and rescore")
    heldout: str | None = opt(
        None, help="a registered pool: perplexity on rows no run trained on (forgetting)"
    )
    heldout_n: int = opt(50, help="with --heldout: how many rows", min=1)
    zeroshot: list[str] | None = opt(None, help="lm-eval tasks: zero-shot accuracy per run", metavar="TASK")
    zeroshot_limit: int | None = opt(None, help="with --zeroshot: items per task", min=1)

    def check(self) -> list[str]:
        problems = []
        if bool(self.study) == bool(self.runs):
            problems.append("--study or --runs: give one of them")
        elif self.study and not (STUDIES / f"{self.study}.yaml").is_file() and not _has_runs(self):
            known = ", ".join(sorted(p.stem for p in STUDIES.glob("*.yaml")))
            problems.append(f"--study {self.study!r}: unknown study (no spec, no runs); studies: {known}")
        if self.grid and self.decoding:
            problems.append("--grid and --decoding: give one of them")
        if self.zeroshot_limit is not None and not self.zeroshot:
            problems.append("--zeroshot-limit: goes with --zeroshot")
        if self.zeroshot:
            from tools.eval.zeroshot import check_tasks

            try:
                check_tasks(self.zeroshot)
            except ValueError as e:
                problems.append(f"--zeroshot: {e}")
        return problems


def _has_runs(a: StudyArgs) -> bool:
    try:
        return study_dir(a.model, a.study).is_dir()
    except ValueError:  # not a folder name
        return False


@command(StudyArgs, __doc__)
def main(a: StudyArgs) -> int:
    t_start = time.time()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        points = decoding_points(a.grid, a.decoding, a.max_new_tokens)
        runs = a.runs or study_runs(a.model, a.study, a.base)
        out = evaluate_study(runs, points, a)
    except (GenerateError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t = out["timings"]
    # the whole process, interpreter start and imports included: what a user waits for
    t["process_wall_s"] = round(time.time() - _process_start(t_start), 2)
    share = t["compute_s"] / t["process_wall_s"] if t["process_wall_s"] else 0.0
    t["compute_share"] = round(share, 3)
    print(
        f"evaluated {t['runs']} run(s) x {t['points']} point(s) x {t['prompts']} prompts in "
        f"{t['process_wall_s']:.1f} s: model compute {t['compute_s']:.1f} s ({share:.0%}), "
        f"model loads {t['load_s']:.1f} s, dtype {t['dtype']}"
    )
    if a.timings:
        atomic_write_json(a.timings, t)
    if out["failed"]:
        print(f"failed: {', '.join(out['failed'])}", file=sys.stderr)
        return 1
    return 0


def _process_start(fallback: float) -> float:
    try:
        import psutil

        return psutil.Process().create_time()
    except (ImportError, OSError):
        return fallback


if __name__ == "__main__":
    run_main(main)
