"""Publish a dataset's files as one unit, so a kill at any moment leaves the old set or the new one.

A unit is the files one name owns (a subset, its curriculum stages, manifest and plot; or an
evaluation set). They are written into a private folder, `generated/.<unit>.<pid>.<rand>.partial/`,
which is renamed to a versioned folder `generated/<unit>.<sha12>/` (sha of its files); then the
symlink `generated/<unit>` is switched to it with one atomic rename: the commit point. Registry
entries name files through the symlink (`generated/<unit>/<file>`), so they are the same for every
version, and the registry write that follows only matters the first time a name is registered.
Everything from the rename on happens under the registry's lock, so two processes publishing at
once serialise; the loser of a race is simply replaced. Old versions, and the partial folders of
processes that are gone and the links a killed run made but never switched, are removed after the switch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from plugins.publishing import registry

GENERATED = "generated"
_UNIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_unit(name: str) -> str:
    if not _UNIT.match(name) or ".." in name:
        raise registry.RegistryError(f"dataset name {name!r}: use letters, digits and _ . - only")
    return name


def unit_dir(dataset_dir: str | Path, unit: str) -> Path:
    """Where the published files of `unit` are read from (the symlink to its current version)."""
    return Path(dataset_dir) / GENERATED / unit


def rel_file(unit: str, file: str) -> str:
    """A file of `unit` as registry entries name it (relative to dataset_dir, through the symlink)."""
    return f"{GENERATED}/{unit}/{file}"


@contextlib.contextmanager
def staging(dataset_dir: str | Path, unit: str) -> Iterator[Path]:
    """A private folder to write the unit's files into; removed when the block fails."""
    gen = Path(dataset_dir) / GENERATED
    gen.mkdir(parents=True, exist_ok=True)
    tmp = gen / f".{check_unit(unit)}.{os.getpid()}.{secrets.token_hex(3)}.partial"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def commit(
    dataset_dir: str | Path, unit: str, tmp: Path, entries: dict[str, dict], force: bool = False
) -> Path:
    """Switch `unit` to the files in `tmp` and register `entries` (file names via `rel_file`)."""
    dataset_dir = Path(dataset_dir)
    gen = dataset_dir / GENERATED
    link = gen / unit
    with registry.locked(dataset_dir):
        registry.check_conflicts(registry.claims_of(entries), dataset_dir, force)
        if link.exists() and not link.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
            raise registry.RegistryError(
                f"{link}: a folder, not the link this tool keeps there; move it away"
            )
        final = gen / f"{unit}.{_digest(tmp)}"
        if final.is_dir():
            shutil.rmtree(tmp)  # the same files are published already
        else:
            os.replace(tmp, final)
        new_link = gen / f".{unit}.{os.getpid()}.link"
        with contextlib.suppress(FileNotFoundError):
            new_link.unlink()
        os.symlink(final.name, new_link)
        os.replace(new_link, link)  # the commit point
        _fsync_dir(gen)
        registry.register(entries, dataset_dir, force=force)
        _collect(gen, unit, final, entries)
    return final


def _stale_link(unit: str) -> re.Pattern:
    """A link a run made for its switch and was killed before renaming: links are made and renamed under
    the registry's lock, so while a process holds it any such link is a dead run's."""
    return re.compile(rf"^\.{re.escape(unit)}\.\d+\.link$")


def _collect(gen: Path, unit: str, keep: Path, entries: dict[str, dict]) -> None:
    """Remove the unit's old versions, dead processes' partial folders, links a killed run left before
    its switch, and pre-versioning flat files."""
    version = re.compile(rf"^{re.escape(unit)}\.[0-9a-f]{{12}}$")
    partial = re.compile(rf"^\.{re.escape(unit)}\.(\d+)\.[0-9a-f]+\.partial$")
    stale_link = _stale_link(unit)
    for p in gen.iterdir():
        if version.match(p.name) and p != keep and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif (m := partial.match(p.name)) and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
        elif stale_link.match(p.name) and p.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    for name in entries:  # files of the flat layout (generated/<name>.json) this version replaces
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            (gen / f"{name}.json").unlink()
    for suffix in (".manifest.json", ".png"):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            (gen / f"{unit}{suffix}").unlink()


def remove(dataset_dir: str | Path, name: str) -> list[str]:
    """Remove a unit as one step: its registry entries, then its published folders. `name` is the unit
    (a stage or member names its unit in the refusal). A user's entry is never touched; a shipped file a
    unit registered (outside generated/) stays on disk. Returns the names unregistered."""
    dataset_dir = Path(dataset_dir)
    gen = dataset_dir / GENERATED
    with registry.locked(dataset_dir):
        info = registry.load_info(dataset_dir)
        own = registry.owner(name, info.get(name))
        if name in info and own is None:
            raise registry.RegistryError(
                f"{registry.info_path(dataset_dir)}: {name} is not ours (no 'smalldata' marker): edit the file by hand"
            )
        if own is not None and own[1] != name:
            raise registry.RegistryError(
                f"{name} is a {own[0]} set of unit {own[1]!r}: remove the unit: python -m tools.data --remove {own[1]}"
            )
        names = list(registry.members(name, dataset_dir))
        on_disk = (gen / name).is_symlink() or (gen / name).exists()
        if not names and not on_disk:
            raise registry.RegistryError(
                f"{name}: no such unit in {registry.info_path(dataset_dir)} or {gen}"
            )
        gone = registry.unregister(names, dataset_dir)  # the commit point: nothing names the files now
        link = gen / name
        if link.is_symlink():
            link.unlink()
        version = re.compile(rf"^{re.escape(name)}\.[0-9a-f]{{12}}$")
        stale_link = _stale_link(name)
        for p in gen.iterdir() if gen.is_dir() else ():
            if version.match(p.name) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif stale_link.match(p.name) and p.is_symlink():
                p.unlink()
        if gen.is_dir():
            _fsync_dir(gen)
    return gone
