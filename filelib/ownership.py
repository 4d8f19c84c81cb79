"""Outputs that never destroy what the command did not make.

A command that builds a folder claims it with a marker file naming the command (`OWNER_FILE`); it may
write into a folder that does not exist, an empty one, or one it claimed before (or that holds the
command's own completion file, for folders built before markers were written). It never writes over
its own input, inside its input, around its input, or inside a folder another command claimed or that
holds a model (a `config.json` beside weights). Every check runs before the first write.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

OWNER_FILE = ".smalldata-owner"
_MODEL_FILES = ("config.json",)


class OwnershipError(ValueError):
    """An output path that would replace or mix with what another command (or the user) made."""


def owner_of(folder: Path) -> str | None:
    try:
        return (Path(folder) / OWNER_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _related(a: Path, b: Path) -> str | None:
    if a == b:
        return "is"
    if b in a.parents:
        return "is inside"
    if a in b.parents:
        return "holds"
    return None


def check_output(
    path: str | Path,
    owner: str,
    inputs: Iterable[str | Path] = (),
    folder: bool = True,
    own_files: Iterable[str] = (),
    outside_models: bool = True,
) -> Path:
    """`path` as an output of `owner`, or OwnershipError saying why not and what to do instead.
    `folder`: the output is a folder (else a file); `own_files`: files whose presence marks a folder as
    the owner's; `outside_models`: refuse a path inside a model folder (config.json + tokenizer files)."""
    out = Path(path).absolute()
    real = out.resolve()
    for given in inputs:
        if given is None or not Path(given).exists():
            continue
        src = Path(given).resolve()
        how = _related(real, src)
        if how:
            raise OwnershipError(f"{out}: {how} this command's input {given}: write somewhere else")
    for parent in real.parents:
        other = owner_of(parent)
        if other is not None and other != owner:
            raise OwnershipError(f"{out}: inside {parent}, which {other} made: write somewhere else")
        is_model = (
            any((parent / f).exists() for f in _MODEL_FILES) and (parent / "tokenizer_config.json").exists()
        )
        if outside_models and is_model:
            raise OwnershipError(f"{out}: inside the model folder {parent}: write somewhere else")
    if not real.exists():
        return out
    if folder:
        if not real.is_dir():
            raise OwnershipError(f"{out}: a file, not a folder: choose another output folder")
        mine = owner_of(real) == owner or any((real / f).exists() for f in own_files)
        if not mine and any(real.iterdir()):
            raise OwnershipError(
                f"{out}: a folder with files this command did not make: empty it, or choose another output folder"
            )
    elif real.is_dir():
        raise OwnershipError(f"{out}: a folder, not a file: name a file")
    return out


def claim(folder: str | Path, owner: str) -> None:
    """Mark a folder as `owner`'s (write it into the staging folder, before it is renamed into place)."""
    (Path(folder) / OWNER_FILE).write_text(owner + "\n", encoding="utf-8")
