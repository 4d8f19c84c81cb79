"""From normalised rows to registered datasets: select, split, write, register.

Everything that can fail on bad input (strategy names, N, registry conflicts) is checked by
`plan` before anything is written; `write_subset` then writes the subset, its stages, manifest and
plot into a private folder and publishes them as one unit (`plugins.publishing.publish`: a versioned folder
switched in by one atomic rename, then registered), so a failure or a kill at any moment leaves the
old set or the new one, never a mix.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import plugins
from filelib import atomic_write_json, sha256_file
from plugins.pools import DataError, to_alpaca, to_sharegpt
from plugins.publishing import publish, registry
from plugins.selection import (
    UNSCORED,
    Context,
    curriculum,
    knee,
    leakage,
    parse_strategy,
    quota,
    score,
    select_quota,
    top_n,
    total_words,
)


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
    quota: dict | None = None  # a quota selection: its parts and which part chose each row


def plan(
    pool_size: int,
    n: int,
    strategies: list[str],
    claims: dict[str, tuple[str, str]],
    dataset_dir: Path,
    force: bool,
) -> None:
    """Validate every choice up front: nothing is written when one of them is wrong. `claims`: every
    name the command will register, {name: (kind, unit)} (registry.check_conflicts)."""
    if pool_size == 0:
        raise DataError("empty pool (no rows)")
    if n <= 0:
        raise DataError(f"N must be positive, got {n}")
    if n > pool_size:
        raise DataError(f"N={n} is larger than the pool ({pool_size} rows after dropping duplicates)")
    for s in strategies:
        quota.parse_quota(s, n, parse_strategy) if quota.is_quota(s) else parse_strategy(s)
    registry.check_conflicts(claims, dataset_dir, force)


# The strategies that read Context.model (the tokenizer for long_is_more, the LM for IFD).
MODEL_STRATEGIES = ("long_is_more", "ifd")


def needs_model(strategies: list[str], ifd_prefilter: str, diversity_prefilter: str) -> list[str]:
    """The strategies among `strategies` (names, weighted combinations, quotas; IFD's and diversity's
    prefilters where those run) that read Context.model, in order; [] when none does."""
    names: list[str] = []
    todo = list(strategies)
    while todo:
        spec = todo.pop(0)
        parts = [p.strategy for p in quota.parse_quota(spec)] if quota.is_quota(spec) else [spec]
        for part in parts:
            for name in parse_strategy(part):
                if name in names:
                    continue
                names.append(name)
                if name == "ifd":
                    todo.append(ifd_prefilter)
                elif name == "diversity" and diversity_prefilter != "none":
                    todo.append(diversity_prefilter)
    return [n for n in names if n in MODEL_STRATEGIES]


def _multi_turn(rows: list[dict]) -> bool:
    return any(r.get("turns") for r in rows)


def refuse_multi_turn(rows: list[dict], strategy: str) -> None:
    """Scoring strategies read one question and its answer: a pool holding conversations of several
    exchanges is refused with their count (random keeps them whole), never cut to their first exchange."""
    many = sum(1 for r in rows if r.get("turns"))
    if many and not all(w.startswith("random") for w in parse_strategy_names(strategy)):
        raise DataError(
            f"strategy {strategy!r} scores single question-answer pairs, and {many} of {len(rows)} pool rows "
            "are conversations of several exchanges: use --strategy random (which keeps them whole), "
            "or a pool of single exchanges"
        )


def parse_strategy_names(strategy: str) -> list[str]:
    if quota.is_quota(strategy):
        return ["quota"]
    return list(parse_strategy(strategy))


def select(
    rows: list[dict], name: str, strategy: str, n: int, ctx: Context, near_dup: float | None = None
) -> Selection:
    refuse_multi_turn(rows, strategy)
    t0 = time.perf_counter()
    if quota.is_quota(strategy):
        return _select_quota(rows, name, strategy, n, ctx, t0)
    s = score(rows, strategy, ctx)
    idx, skipped = top_n(rows, s, n, near_dup)
    seconds = time.perf_counter() - t0  # the knee is not part of selecting (kneed imports scipy: ~2 s)
    shown = np.where(s <= UNSCORED / 2, np.nan, s)  # rows the strategy did not score: not plotted
    k = None if strategy.startswith("random") else knee.find_knee(shown)
    return Selection(name, strategy, parse_strategy(strategy), n, idx, shown, k, skipped, seconds)


def split_stages(
    rows: list[dict],
    sel: Selection,
    ctx: Context,
    thresholds: tuple[int, int] | None = curriculum.DEFAULT_THRESHOLDS,
    curriculum_by: str | None = None,
) -> dict[str, list[dict]]:
    """The curriculum split of the chosen rows (a DataError, before anything is written, when
    explicit thresholds leave a stage empty)."""
    chosen = [rows[i] for i in sel.indices]
    by = None
    if curriculum_by:
        # scored on the chosen rows alone: the pool's memoised scores are for the whole pool
        own = dataclasses.replace(ctx, n=len(chosen), notes={}, _memo={})
        by = score(chosen, curriculum_by, own)
    return curriculum.split(chosen, thresholds, by)


def _select_quota(rows: list[dict], name: str, strategy: str, n: int, ctx: Context, t0: float) -> Selection:
    idx, _, block = select_quota(rows, strategy, n, ctx)
    shown = np.full(len(rows), np.nan)  # no single score: the plot shows the picks in part order
    shown[idx] = np.arange(n, 0, -1, dtype=np.float64)
    weights = {p["label"]: p["count"] for p in block["parts"]}
    return Selection(name, strategy, weights, n, idx, shown, None, [], time.perf_counter() - t0, block)


def write_subset(
    rows: list[dict],
    sel: Selection,
    dataset_dir: Path,
    source: dict,
    ctx: Context,
    stages: bool = True,
    thresholds: tuple[int, int] | None = curriculum.DEFAULT_THRESHOLDS,
    curriculum_by: str | None = None,
    plot: bool = True,
    force: bool = False,
    parts: dict[str, list[dict]] | None = None,
) -> dict:
    """Write the subset (and its stages: `parts` from `split_stages`, else split here), manifest and
    plot under <dataset_dir>/generated/<name>/ and register them, all as one unit. Returns the manifest."""
    if stages and parts is None:
        parts = split_stages(rows, sel, ctx, thresholds, curriculum_by)
    claims = {sel.name: ("train", sel.name)}
    claims.update({f"{sel.name}_{st}": ("stage", sel.name) for st in (parts or {}) if stages})
    registry.check_conflicts(claims, dataset_dir, force)  # before the first write
    with publish.staging(dataset_dir, sel.name) as gen:
        manifest, files = _write_subset_files(
            gen, rows, sel, source, ctx, parts if stages else None, thresholds, curriculum_by, plot
        )
        # stable across versions (the manifest holds strategy, n and hashes): a kill between the
        # switch and the registry write can never leave the registry describing the other version
        meta = {"unit": sel.name, "manifest": publish.rel_file(sel.name, f"{sel.name}.manifest.json")}
        chosen = [rows[i] for i in sel.indices]
        fmt = {"formatting": "sharegpt" if _multi_turn(chosen) else "alpaca"}
        fmt["system"] = any(r.get("system") for r in chosen)
        entries = {
            k: registry.entry(publish.rel_file(sel.name, v.name), kind=claims[k][0], **fmt, **meta)
            for k, v in files.items()
        }
        publish.commit(dataset_dir, sel.name, gen, entries, force=force)
    return manifest


def _write_subset_files(gen, rows, sel, source, ctx, parts, thresholds, curriculum_by, plot):
    chosen = [rows[i] for i in sel.indices]
    files = {sel.name: gen / f"{sel.name}.json"}
    counts = {}
    stages = parts is not None
    parts = parts or {}
    if stages:
        for st, part in parts.items():
            files[f"{sel.name}_{st}"] = gen / f"{sel.name}_{st}.json"
            counts[st] = len(part)
        assert sum(counts.values()) == len(chosen)
    # a unit holding any conversation of several exchanges is written whole, in sharegpt form, every file
    write = to_sharegpt if _multi_turn(chosen) else to_alpaca
    atomic_write_json(files[sel.name], [write(r) for r in chosen])
    for st, part in parts.items():
        atomic_write_json(files[f"{sel.name}_{st}"], [write(r) for r in part])
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
        "multi_turn": sum(1 for r in chosen if r.get("turns")),  # conversations kept whole (sharegpt form)
        "knee": sel.knee,
        "knee_note": "rank at the knee of the sorted scores (kneed), proposed as a cut" if sel.knee else None,
        "curriculum": {
            "by": curriculum_by or ("answer_words" if thresholds else "code_or_math_then_answer_words"),
            "rule": "answer words by value (HW5)" if thresholds and not curriculum_by else "thirds by rank",
            "thresholds": list(thresholds) if thresholds and not curriculum_by else None,
            "counts": counts,
        }
        if stages
        else None,
        "ifd": ctx.notes.get("ifd") if "ifd" in sel.weights else None,
        "diversity": ctx.notes.get("diversity") if "diversity" in sel.weights else None,
        "length_window": ctx.notes.get("length_window") if "length_window" in sel.weights else None,
        "quota": sel.quota,
        "ids": [r["id"] for r in chosen],
        # training rows that repeat a dev or test prompt (plugins.selection.leakage): warned about, shown in the report
        "leakage": leakage.summary(leakage.check(chosen, sets), sets) if sets else None,
        # pool rows dropped (or kept with --keep-leaked) before selection for repeating one (tools/data/guard.py)
        "leak_guard": ctx.notes.get("leak_guard"),
        "files": {k: {"path": v.name, "sha256": sha256_file(v)} for k, v in files.items()},
        "plot": png.name if png else None,
        "seconds": round(sel.seconds, 3),
        "package_version": plugins.__version__,
        "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(gen / f"{sel.name}.manifest.json", manifest)
    return manifest, files


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
    registry.check_conflicts({name: ("eval", name)}, dataset_dir, force)
    counts = {"rows": len(rows), "with_reference": sum(1 for r in rows if r["output"])}
    if file is not None:  # a shipped file: one registry write, nothing else to switch
        meta = {"kind": "eval", "unit": name, "role": role, **counts, "source": source}
        registry.register({name: registry.alpaca_entry(file, dataset_dir, **meta)}, dataset_dir, force=force)
        return Path(file)
    with publish.staging(dataset_dir, name) as tmp:
        atomic_write_json(tmp / f"{name}.json", [to_alpaca(r) for r in rows])
        atomic_write_json(
            tmp / f"{name}.manifest.json",
            {"name": name, "kind": "eval", "role": role, "source": source, **counts},
        )
        meta = {
            "kind": "eval",
            "unit": name,
            "role": role,
            "source": source,
            "manifest": publish.rel_file(name, f"{name}.manifest.json"),
        }
        entry = registry.entry(publish.rel_file(name, f"{name}.json"), **meta)
        publish.commit(dataset_dir, name, tmp, {name: entry}, force=force)
    return publish.unit_dir(dataset_dir, name) / f"{name}.json"
