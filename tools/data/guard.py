"""The leakage guard on every path that writes a training set (tools.data, mix, refine, recovery data).

Rows whose prompt repeats a registered dev or test prompt (exact, normalised, or sharing long word runs:
plugins.selection.leakage) are dropped before anything is chosen from them, and listed in the set's
manifest with the prompt each matched; `keep=True` (`--keep-leaked`) keeps them, and the manifest and
the report say so. A training row that is a test prompt inflates that test score: the default is to
refuse it, not to warn about it.
"""

from __future__ import annotations

from pathlib import Path

from plugins.pools import DataError, load_table
from plugins.publishing import registry
from plugins.selection import leakage


def guard_sets(dataset_dir: Path, given: dict[str, list[dict]] | None = None) -> dict[str, list[dict]]:
    """The prompts training rows must not repeat: the sets given now, and every dev or test set
    already registered in dataset_dir (a broken or missing one is skipped: it is checked when used)."""
    sets = dict(given or {})
    for name, entry in registry.load_info(dataset_dir).items():
        own = registry.owner(name, entry)
        if name in sets or own is None or own[0] != "eval":
            continue
        if (entry[registry.MARK].get("role") or "test") not in ("dev", "test"):
            continue  # a held-out general set measures forgetting; training near it is not leakage
        try:
            sets[name] = load_table(registry.resolve(name, dataset_dir)).rows
        except (DataError, registry.RegistryError):
            continue
    return sets


def drop_leaked(rows: list[dict], sets: dict[str, list[dict]], keep: bool = False) -> tuple[list[dict], dict]:
    """(the rows to train on, the manifest's `leak_guard` block): rows matching an evaluation prompt
    dropped (or kept, flagged, with `keep`), each listed with the prompt it matched."""
    if not sets:
        return rows, {"checked_against": {}, "dropped": [], "kept": [], "policy": "nothing to check against"}
    overlaps = leakage.check(rows, sets)
    by_row: dict[str, list[dict]] = {}
    for o in overlaps:
        by_row.setdefault(o["id"], []).append({k: o[k] for k in ("set", "eval_id", "kind", "shared_share")})
    listed = [{"id": rid, "matches": m} for rid, m in by_row.items()]
    block = {
        "checked_against": {name: len(r) for name, r in sets.items()},
        "method": f"exact normalised prompt, or >= {leakage.THRESHOLD:g} of the shorter prompt's "
        f"{leakage.NGRAM}-word shingles shared",
        "policy": "kept (--keep-leaked)" if keep else "dropped before selection",
        "dropped": [] if keep else listed,
        "kept": listed if keep else [],
    }
    if keep:
        return rows, block
    return [r for r in rows if str(r.get("id")) not in by_row], block


def describe(block: dict, what: str) -> str | None:
    """One line for the terminal, or None when nothing matched."""
    rows = block.get("dropped") or block.get("kept") or []
    if not rows:
        return None
    shown = ", ".join(f"{r['id']}~{m['set']}:{m['eval_id']}" for r in rows[:6] for m in r["matches"][:1])
    more = f" and {len(rows) - 6} more" if len(rows) > 6 else ""
    verb = "kept (--keep-leaked), flagged" if block.get("kept") else "dropped"
    return f"leakage: {len(rows)} row(s) of {what} repeat a dev/test prompt, {verb}: {shown}{more}"


__all__ = ["DataError", "describe", "drop_leaked", "guard_sets"]
