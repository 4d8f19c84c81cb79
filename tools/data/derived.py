"""Datasets derived from a registered one (refined answers, a general-data mix): written and registered
the same way, with a manifest saying where every row came from.

`data/generated/<name>/<name>.json` (Alpaca format, the extra fields kept) and `<name>.manifest.json`
are published as one unit (`plugins.publishing.publish`: a versioned folder switched in by one atomic rename,
then registered): a kill at any moment leaves the old pair or the new one.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime, timezone
from pathlib import Path

from filelib import atomic_write_json, sha256_file
from plugins.pools import DataError, load_rows
from plugins.publishing import publish as publish_unit
from plugins.publishing import registry
from tools.core.paths import DATA
from tools.data.guard import describe, drop_leaked, guard_sets

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_name(name: str, flag: str = "--name") -> str:
    """A dataset name that is also a safe file name: no folders, no `..`."""
    if not NAME.match(name) or ".." in name:
        raise DataError(f"{flag} {name!r}: use letters, digits and _ . - only (it names a file under data/)")
    return name


def registered_rows(name: str, dataset_dir: Path = DATA) -> tuple[list[dict], Path]:
    """The rows of a registered dataset (any shape the loaders read), and its file."""
    try:
        path = Path(registry.resolve(name, dataset_dir=dataset_dir))
    except registry.RegistryError as e:
        raise DataError(str(e)) from None
    return load_rows(path), path


def publish(
    name: str,
    rows: list[dict],
    manifest: dict,
    dataset_dir: Path = DATA,
    note: str = "",
    also: dict[str, tuple[list[dict], dict, str]] | None = None,
    also_kind: str = "stage",
    keep_leaked: bool = False,
) -> tuple[Path, Path]:
    """Write rows and manifest under <dataset_dir>/generated/<name>/ and register `name`, as one unit;
    `also` ({other name: (rows, manifest, note)}) are published in the same unit, so datasets that
    must agree (a mix and its held-out set) are switched together; they are registered as `also_kind`
    (`stage`: more training sets; `eval`: a set to measure on, never to train on). The training rows pass
    the leakage guard first (tools/data/guard.py): rows repeating a registered dev or test prompt are
    dropped (kept and flagged with `keep_leaked`), and the manifest lists them."""
    sets = {name: (rows, manifest, note), **(also or {})}
    for n in sets:
        check_name(n)
    claims = {n: ("train", name) if n == name else (also_kind, name) for n in sets}
    registry.check_conflicts(claims, dataset_dir)
    for n, (r, m, nt) in list(sets.items()):
        if claims[n][0] == "eval":
            continue
        kept, leak = drop_leaked(r, guard_sets(dataset_dir), keep_leaked)
        if line := describe(leak, n):
            print(f"warning: {line}", file=sys.stderr)
        sets[n] = (kept, {**m, "leak_guard": leak}, nt)
    entries = {}
    with publish_unit.staging(dataset_dir, name) as tmp:
        for n, (r, m, nt) in sets.items():
            rel = publish_unit.rel_file(name, f"{n}.json")
            file = atomic_write_json(tmp / f"{n}.json", r)
            man = {
                **m,
                "name": n,
                "rows": len(r),
                "file": rel,
                "sha256": sha256_file(file),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            atomic_write_json(tmp / f"{n}.manifest.json", man)
            manifest_rel = publish_unit.rel_file(name, f"{n}.manifest.json")
            entries[n] = registry.entry(rel, note=nt, manifest=manifest_rel, kind=claims[n][0], unit=name)
        publish_unit.commit(dataset_dir, name, tmp, entries)
    folder = publish_unit.unit_dir(dataset_dir, name)
    return folder / f"{name}.json", folder / f"{name}.manifest.json"
