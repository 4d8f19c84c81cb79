"""From normalised rows to registered datasets: select, split, write, register.

Everything that can fail on bad input (strategy names, N, registry conflicts) is checked by
`plan` before anything is written; `write_subset` then writes each file atomically and
registers the entries last, so a failure leaves dataset_info.json as it was.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import plugins
from plugins import curriculum, knee, leakage, registry
from plugins.fileio import atomic_write_json, sha256_file
from plugins.loaders import DataError, to_alpaca
from plugins.strategies import UNSCORED, Context, parse_strategy, score, top_n, total_words


@dataclass
class Selection:
    name: str
    strategy: str
    weights: dict
    n: int
    indices: list[int]
    scores: np.ndarray
    knee: int | None
    near_duplicates: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def plan(
    pool_size: int,
    n: int,
    strategies: list[str],
    names: list[str],
    dataset_dir: Path,
    force: bool,
) -> None:
    """Validate every choice up front: nothing is written when one of them is wrong."""
    if pool_size == 0:
        raise DataError("empty pool (no rows)")
    if n <= 0:
        raise DataError(f"N must be positive, got {n}")
    if n > pool_size:
        raise DataError(f"N={n} is larger than the pool ({pool_size} rows after dropping duplicates)")
    for s in strategies:
        parse_strategy(s)
    registry.check_conflicts({k: {} for k in names}, dataset_dir, force)


def select(
    rows: list[dict], name: str, strategy: str, n: int, ctx: Context, near_dup: float | None = None
) -> Selection:
    t0 = time.perf_counter()
    s = score(rows, strategy, ctx)
    idx, skipped = top_n(rows, s, n, near_dup)
    seconds = time.perf_counter() - t0  # the knee is not part of selecting (kneed imports scipy: ~2 s)
    shown = np.where(s <= UNSCORED / 2, np.nan, s)  # rows the strategy did not score: not plotted
    k = None if strategy.startswith("random") else knee.find_knee(shown)
    return Selection(name, strategy, parse_strategy(strategy), n, idx, shown, k, skipped, seconds)


def write_subset(
    rows: list[dict],
    sel: Selection,
    dataset_dir: Path,
    source: dict,
    ctx: Context,
    stages: bool = True,
    thresholds: tuple[int, int] = curriculum.DEFAULT_THRESHOLDS,
    curriculum_by: str | None = None,
    plot: bool = True,
    force: bool = False,
) -> dict:
    """Write the subset (and its stages), manifest and plot under <dataset_dir>/generated/, then
    register them. Returns the manifest."""
    gen = Path(dataset_dir) / "generated"
    chosen = [rows[i] for i in sel.indices]
    files = {sel.name: gen / f"{sel.name}.json"}
    counts = {}
    parts: dict[str, list[dict]] = {}
    if stages:
        by = score(chosen, curriculum_by, ctx) if curriculum_by else None
        parts = curriculum.split(chosen, thresholds, by)
        for st, part in parts.items():
            files[f"{sel.name}_{st}"] = gen / f"{sel.name}_{st}.json"
            counts[st] = len(part)
        assert sum(counts.values()) == len(chosen)
    atomic_write_json(files[sel.name], [to_alpaca(r) for r in chosen])
    for st, part in parts.items():
        atomic_write_json(files[f"{sel.name}_{st}"], [to_alpaca(r) for r in part])
    png = None
    if plot:
        words = total_words(rows, ctx)
        png = knee.plot(
            gen / f"{sel.name}.png", words, sel.scores, sel.indices, sel.knee, f"{sel.name}: {sel.strategy}"
        )
    sets = ctx.notes.get("leakage_sets") or {}
    manifest = {
        "name": sel.name,
        "source": source,
        "strategy": sel.strategy,
        "weights": sel.weights,
        "n": sel.n,
        "seed": ctx.seed,
        "near_duplicate_threshold": ctx.notes.get("near_dup"),
        "near_duplicates_skipped": sel.near_duplicates,
        "knee": sel.knee,
        "knee_note": "rank at the knee of the sorted scores (kneed), proposed as a cut" if sel.knee else None,
        "curriculum": {
            "by": curriculum_by or "answer_words",
            "thresholds": list(thresholds),
            "counts": counts,
        }
        if stages
        else None,
        "ifd": ctx.notes.get("ifd") if "ifd" in sel.weights else None,
        "ids": [r["id"] for r in chosen],
        # training rows that repeat a dev or test prompt (plugins.leakage): warned about, shown in the report
        "leakage": leakage.summary(leakage.check(chosen, sets), sets) if sets else None,
        "files": {k: {"path": v.name, "sha256": sha256_file(v)} for k, v in files.items()},
        "plot": png.name if png else None,
        "seconds": round(sel.seconds, 3),
        "package_version": plugins.__version__,
        "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(gen / f"{sel.name}.manifest.json", manifest)
    meta = {
        "kind": "train",
        "strategy": sel.strategy,
        "n": sel.n,
        "manifest": f"generated/{sel.name}.manifest.json",
    }
    # no hashes here: dataset_info.json is tracked, and the manifest holds them
    entries = {k: registry.alpaca_entry(v, dataset_dir, **meta) for k, v in files.items()}
    registry.register(entries, dataset_dir, force=force)
    return manifest


def write_eval(
    rows: list[dict],
    name: str,
    dataset_dir: Path,
    source: str,
    force: bool = False,
    file: Path | None = None,
    role: str = "test",
) -> Path:
    """An evaluation set: Alpaca rows with ids (output = reference or ""), registered as `name`;
    `role` says what it is for: `dev` (choices are made on it) or `test` (the final score)."""
    dataset_dir = Path(dataset_dir)
    if file is not None and not Path(file).resolve().is_relative_to(dataset_dir.resolve()):
        file = None  # a shipped file registered into another dataset_dir: write a copy there
    path = file or dataset_dir / "generated" / f"{name}.json"
    registry.check_conflicts({name: {}}, dataset_dir, force)
    if file is None:
        atomic_write_json(path, [to_alpaca(r) for r in rows])
    meta = {
        "kind": "eval",
        "role": role,
        "rows": len(rows),
        "with_reference": sum(1 for r in rows if r["output"]),
    }
    registry.register(
        {name: registry.alpaca_entry(path, dataset_dir, **meta, source=source)},
        dataset_dir,
        force=force,
    )
    return path
