"""`data/dataset_info.json`: where LLaMA-Factory looks up datasets by name (its only dataset hook).

Our entries carry a marker key, `"smalldata": {...}`, which LLaMA-Factory 0.9.5 ignores (its
`DatasetAttr.join` reads only the keys it knows, and the web UI only calls `.get("ranking")`).
Registration merges with what is there, under a lock, and writes atomically, so a crash never
clobbers the file; an entry of the same name without our marker is a user's and is only replaced
when asked (`force=True`), while our own entries are replaced on every run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from plugins.fileio import atomic_write_text

DATA = Path(__file__).resolve().parents[1] / "data"
INFO = "dataset_info.json"
MARK = "smalldata"


class RegistryError(ValueError):
    """A name not registered, an entry that is not ours, a broken dataset_info.json."""


def info_path(dataset_dir: str | Path = DATA) -> Path:
    return Path(dataset_dir) / INFO


def load_info(dataset_dir: str | Path = DATA) -> dict:
    path = info_path(dataset_dir)
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except json.JSONDecodeError as e:
        raise RegistryError(f"{path}: broken JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(info, dict):
        raise RegistryError(f"{path}: expected an object of dataset entries, found {type(info).__name__}")
    return info


def resolve(name: str, dataset_dir: str | Path = DATA) -> Path:
    """The file of a registered dataset; a clear error listing the registered names otherwise."""
    path = info_path(dataset_dir)
    info = load_info(dataset_dir)
    if name not in info:
        names = ", ".join(sorted(info)) or "none"
        raise RegistryError(
            f"dataset {name!r} is not registered in {path}; registered: {names} "
            "(run `make data`, or `python -m tools.data --eval demo|hw5|<file>` for evaluation sets)"
        )
    entry = info[name]
    if not isinstance(entry, dict) or "file_name" not in entry:
        raise RegistryError(f"{path}: {name}: no 'file_name' (only local files can be resolved)")
    file = Path(dataset_dir) / entry["file_name"]
    if not file.exists():
        mark = entry.get(MARK) if is_ours(entry) else {}
        how = "`make data`"
        if mark.get("kind") == "eval":
            how = f"`python -m tools.data --eval {mark.get('source') or '<file>'}`"
        raise RegistryError(f"{path}: {name}: its file {file} does not exist (run {how} to rebuild it)")
    return file


def is_ours(entry: object) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get(MARK), dict)


def alpaca_entry(file: str | Path, dataset_dir: str | Path = DATA, **meta) -> dict:
    """An Alpaca-format entry for a file inside dataset_dir, marked as ours (meta goes in the marker)."""
    rel = Path(file).resolve().relative_to(Path(dataset_dir).resolve()).as_posix()
    return {
        "file_name": rel,
        "formatting": "alpaca",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        MARK: {"generated_by": "plugins.registry", **meta},
    }


@contextlib.contextmanager
def _locked(dataset_dir: Path) -> Iterator[None]:
    """Serialise read-modify-write of dataset_info.json across processes (lock on the folder)."""
    dataset_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(dataset_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def check_conflicts(entries: dict[str, dict], dataset_dir: str | Path = DATA, force: bool = False) -> None:
    """Raise before anything is written when a name belongs to a user's entry (and force is off)."""
    if force:
        return
    info = load_info(dataset_dir)
    taken = [n for n in entries if n in info and not is_ours(info[n])]
    if taken:
        raise RegistryError(
            f"{info_path(dataset_dir)}: {', '.join(taken)} already registered by someone else "
            "(no 'smalldata' marker); pass --force to replace, or --name to pick another name"
        )


def register(entries: dict[str, dict], dataset_dir: str | Path = DATA, force: bool = False) -> Path:
    """Merge `entries` (name -> entry) into dataset_info.json, atomically; returns the file."""
    dataset_dir = Path(dataset_dir)
    for name, e in entries.items():
        if not isinstance(e, dict) or not ("file_name" in e or "hf_hub_url" in e):
            raise RegistryError(f"entry {name!r}: needs a 'file_name'")
    with _locked(dataset_dir):
        check_conflicts(entries, dataset_dir, force)
        info = load_info(dataset_dir)
        for name, e in entries.items():
            e = dict(e)
            e.setdefault(MARK, {"generated_by": "plugins.registry"})
            info[name] = e
        return atomic_write_text(
            info_path(dataset_dir), json.dumps(info, indent=2, ensure_ascii=False) + "\n"
        )


def unregister(names: list[str], dataset_dir: str | Path = DATA) -> list[str]:
    """Remove our own entries (a user's are left alone); returns the names removed."""
    dataset_dir = Path(dataset_dir)
    with _locked(dataset_dir):
        info = load_info(dataset_dir)
        gone = [n for n in names if n in info and is_ours(info[n])]
        if gone:
            for n in gone:
                del info[n]
            atomic_write_text(info_path(dataset_dir), json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        return gone
