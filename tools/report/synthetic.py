"""Run folders with known numbers, for the report's tests and benchmark: real files, invented values.

Writes what a finished run leaves (tools/CONTRACTS.md): TensorBoard events under `runs/` in
transformers' tag names (written with TensorBoard's own event writer), run.json, DONE, an adapter
placeholder, and per evaluation point metrics.json and scores.json.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from filelib import atomic_write_json, atomic_write_text
from tools.core.paths import Run
from tools.report.events import TAGS, write_event_file


def write_events(
    tb_dir: Path, series: dict[str, list[tuple[int, float]]], wall_time: float | None = None
) -> Path:
    """One event file holding {short name: [(step, value)]} (short names as in report_events.TAGS);
    `wall_time` (seconds) dates its events and its name."""
    from tensorboard.compat.proto import event_pb2, summary_pb2

    t = time.time() if wall_time is None else wall_time
    events = []
    for name, points in series.items():
        for step, value in points:
            s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=TAGS[name], simple_value=value)])
            events.append(event_pb2.Event(wall_time=t + step, step=step, summary=s))
    events.sort(key=lambda e: e.step)  # as a trainer logs them: step by step
    return write_event_file(tb_dir, events, t)


def curve(steps: int, start: float = 2.0, end: float = 0.5, every: int = 1) -> list[tuple[int, float]]:
    """An exponential decay from `start` to about `end`, logged every `every` steps."""
    return [(s, end + (start - end) * math.exp(-4 * s / steps)) for s in range(every, steps + 1, every)]


def standard_series(steps: int, lr: float = 2e-4, eval_every: int = 0) -> dict[str, list[tuple[int, float]]]:
    series = {
        "loss": curve(steps),
        "learning_rate": [(s, lr * (1 - s / steps)) for s in range(1, steps + 1)],
        "grad_norm": [(s, 1.0 / math.sqrt(s)) for s in range(1, steps + 1)],
    }
    if eval_every:
        series["eval_loss"] = curve(steps, 2.1, 0.7, eval_every)
    return series


def write_run(
    run: Run,
    series: dict[str, list[tuple[int, float]]] | None,
    hparams: dict | None = None,
    scientific: list[str] | None = None,
    status: str = "finished",
    evals: dict[tuple[str, str], dict] | None = None,
    wall_s: float = 60.0,
    done: bool | None = None,
) -> Path:
    """A run folder; `evals` maps (testset, decoding) to {'metrics': {...}, 'scores': {...}} (either optional)."""
    out = run.output_dir
    out.mkdir(parents=True, exist_ok=True)
    if series is not None:
        write_events(out / "runs" / "Nov23_00-00-00_host", series)
    hparams = hparams or {}
    atomic_write_json(
        run.run_json,
        {
            "run": run.name,
            "model": run.model,
            "study": run.study,
            "variant": run.variant,
            "scientific": scientific if scientific is not None else list(hparams),
            "hparams": hparams,
            "status": status,
            "returncode": 0 if status == "finished" else (1 if status == "failed" else None),
            "wall_s": wall_s,
            "peak_rss_mb": 1234.5,
            "peak_gpu_mb": None,
            "memory_estimate": {"total_mb": 1300.0, "device": "cpu"},  # preflight's bill
        },
    )
    if done if done is not None else status == "finished":
        atomic_write_text(run.adapter, "placeholder")
        atomic_write_text(run.done_marker, "")
    for key, files in (evals or {}).items():
        testset, decoding, *epoch = key  # (testset, decoding) or (testset, decoding, epoch)
        d = run.at_epoch(epoch[0] if epoch else None).eval_dir(testset, decoding)
        if files.get("items") is not None:  # {prompt id: judge score}: judge.jsonl, and scores.json from it
            write_judgments(d, files["items"])
            files = {"scores": judged_scores(files["items"]), **files}
        if files.get("metrics") is not None:
            atomic_write_json(d / "metrics.json", files["metrics"])
        if files.get("scores") is not None:
            atomic_write_json(d / "scores.json", files["scores"])
        d.mkdir(parents=True, exist_ok=True)
    return out


def write_judgments(folder: Path, items: dict[str, float]) -> None:
    """judge.jsonl as tools.judge writes it (tools/CONTRACTS.md), one HW5-order judgment per prompt."""
    from filelib import atomic_write_jsonl

    rows = [
        {
            "key": f"k{i}",
            "id": i,
            "protocol": "hw5_pairwise",
            "protocol_version": 1,
            "judge_model": "gpt-4o-mini",
            "order": "ab",
            "score_reference": 7.0,
            "score_answer": float(v),
            "parsed": True,
            "raw": "",
            "usage": {},
            "error": None,
        }
        for i, v in items.items()
    ]
    atomic_write_jsonl(folder / "judge.jsonl", rows)


def judged_scores(items: dict[str, float]) -> dict:
    from tools.judge import summary

    s = summary(items.values())
    return {**scores(s["mean"], n=s["n"]), "std": s["std"], "ci95": s["ci95"]}


def metrics(rouge: float, words: float = 120.0, truncated: float = 0.0, n: int = 10) -> dict:
    return {
        "n": n,
        "n_without_reference": 0,
        "rouge1": rouge + 0.05,
        "rouge2": rouge / 2,
        "rougeL": rouge,
        "share_rougeL_above_0.99": 0.0,
        "answer_words_mean": words,
        "answer_tokens_mean": words * 1.3,
        "truncated_share": truncated,
        "tokens_per_s": 50.0,
        "peak_mem_mb": 900.0,
        "ppl_reference": 12.0,
    }


def scores(mean: float, half: float = 0.3, n: int = 10, unparsed: int = 0, offline: bool = False) -> dict:
    return {
        "judge_model": "offline-heuristic" if offline else "gpt-4o-mini",
        "protocol": "hw5",
        "offline": offline,
        "comparable_with_gpt4o_mini": not offline,
        "mean": mean,
        "std": half * math.sqrt(n) / 1.96,
        "ci95": [mean - half, mean + half],
        "n": n,
        "n_unparsed": unparsed,
        "n_failed": 0,
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "cost_usd": 0.001,
    }
