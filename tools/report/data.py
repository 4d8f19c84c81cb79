"""The data report: what the data plugin left in data/generated/ (selection manifests, length-vs-score plot).

The manifests' exact keys belong to the data plugin; we show their scalar facts and anything that
looks like stage counts (a dict under a key naming stages or counts, whose values are numbers or
carry `n`/`count`/`rows`), so a new key shows up here without a change.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tools.core.paths import DATA

GENERATED = DATA / "generated"
MAX_MANIFESTS = 6
MAX_PLOTS = 4


def _count(v) -> int | float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, list):
        return len(v)
    if isinstance(v, dict):
        for k in ("n", "count", "rows", "size"):
            if isinstance(v.get(k), (int, float)):
                return v[k]
    return None


def stage_counts(manifest: dict) -> dict[str, int | float]:
    """{stage: count}: the data plugin's `curriculum.counts`, else any nested dict whose key names
    stages or counts (manifests of other tools)."""
    counts = (manifest.get("curriculum") or {}).get("counts")
    if isinstance(counts, dict):
        return {k: v for k, v in counts.items() if isinstance(v, (int, float))}
    out: dict[str, int | float] = {}

    def walk(obj, prefix: str) -> None:
        if not isinstance(obj, dict):
            return
        for k, v in obj.items():
            if isinstance(v, dict) and any(w in k.lower() for w in ("stage", "count", "curriculum")):
                for name, x in v.items():
                    c = _count(x)
                    if c is not None:
                        out[f"{prefix}{name}"] = c
            elif isinstance(v, dict):
                walk(v, f"{prefix}{k}.")

    walk(manifest, "")
    return out


def facts(manifest: dict) -> dict[str, str]:
    return {
        k: str(v)
        for k, v in manifest.items()
        if isinstance(v, (str, int, float, bool)) and len(str(v)) <= 200
    }


def _hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)


def data_section(generated: Path | None = None) -> dict:
    """{'manifests': [{name, path, facts, stages, problem}], 'plots': [Path]}; empty when nothing exists."""
    generated = Path(generated or GENERATED)
    if not generated.is_dir():
        return {"manifests": [], "plots": [], "where": str(generated)}
    # hidden folders are data runs still writing (plugins.publishing.publish): not published, not shown
    found = [p for p in generated.rglob("*manifest*.json") if not _hidden(p, generated)]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    manifests = []
    for p in found[:MAX_MANIFESTS]:
        entry = {"name": p.name, "path": str(p), "facts": {}, "stages": {}, "problem": None}
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
            if isinstance(m, dict):
                entry["facts"], entry["stages"] = facts(m), stage_counts(m)
            else:
                entry["problem"] = f"not a JSON object ({type(m).__name__})"
        except (OSError, ValueError) as e:
            entry["problem"] = f"unreadable: {e}"
        manifests.append(entry)
    plots = [p for p in generated.rglob("*.png") if not _hidden(p, generated)]
    plots = sorted(plots, key=lambda p: p.stat().st_mtime, reverse=True)[:MAX_PLOTS]
    return {"manifests": manifests, "plots": plots, "where": str(generated)}


def leakage_lines(generated: Path | None = None, datasets: list[str] | None = None) -> list[str]:
    """One line per selection manifest whose rows repeat a dev or test prompt (plugins.selection.leakage's
    `leakage` block), for the datasets named (default: every manifest there)."""
    generated = Path(generated or GENERATED)
    if datasets:  # a curriculum stage's rows are its subset's: <subset>_easy -> <subset>'s manifest
        names = {re.sub(r"_(easy|medium|hard)$", "", d) for d in datasets}
        # a published set lives in generated/<name>/ (plugins.publishing.publish); older ones beside it
        candidates = [
            (generated / d / f"{d}.manifest.json", generated / f"{d}.manifest.json") for d in sorted(names)
        ]
        paths = [next((p for p in c if p.exists()), c[0]) for c in candidates]
    else:
        paths = (
            sorted(p for p in generated.rglob("*.manifest.json") if not _hidden(p, generated))
            if generated.is_dir()
            else []
        )
    out = []
    for p in paths:
        try:
            leak = json.loads(p.read_text(encoding="utf-8")).get("leakage") or {}
        except (OSError, ValueError, AttributeError):
            continue
        overlaps = leak.get("overlaps") or []
        if overlaps:
            shown = ", ".join(
                f"{o.get('id')}~{o.get('set')}:{o.get('eval_id')} ({o.get('kind')})" for o in overlaps[:6]
            )
            more = f" and {len(overlaps) - 6} more" if len(overlaps) > 6 else ""
            out.append(
                f"leakage: {leak.get('n_overlapping_rows', len(overlaps))} training row(s) of "
                f"{p.name.removesuffix('.manifest.json')} repeat a dev/test prompt: {shown}{more}"
            )
    return out
