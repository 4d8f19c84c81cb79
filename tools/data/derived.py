"""Datasets derived from a registered one (refined answers, a general-data mix): written and registered
the same way, with a manifest saying where every row came from.

`data/generated/<name>.json` (Alpaca format, the extra fields kept) and `<name>.manifest.json` are
written atomically, then the name is registered in dataset_info.json (the commit point): a kill
before it leaves the registry as it was.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from plugins import registry
from plugins.fileio import atomic_write_json, sha256_file
from plugins.loaders import DataError, load_rows
from tools.core.paths import DATA

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
    name: str, rows: list[dict], manifest: dict, dataset_dir: Path = DATA, note: str = ""
) -> tuple[Path, Path]:
    """Write rows and manifest under <dataset_dir>/generated/, then register `name` pointing at them."""
    check_name(name)
    registry.check_conflicts({name: {}}, dataset_dir)
    out = Path(dataset_dir) / "generated"
    file = atomic_write_json(out / f"{name}.json", rows)
    man = {
        **manifest,
        "name": name,
        "rows": len(rows),
        "file": f"generated/{name}.json",
        "sha256": sha256_file(file),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    man_path = atomic_write_json(out / f"{name}.manifest.json", man)
    registry.register({name: registry.alpaca_entry(file, dataset_dir, note=note)}, dataset_dir)
    return file, man_path
