"""HW5's named sources and the one resolver that finds their files.

The sources, their files, where each comes from and its sha256 are pinned in templates/sources/hw5.yaml:

    hw5          HW5's 150 official test prompts
    hw5_refs     Long-Is-More's Evol-Instruct 1k with gpt-3.5 answers (the first 150 are HW5's, by id)
    alpaca_2k    Long-Is-More's two Alpaca 1k files (`--source hw5` merges them)
    alpaca_52k   HW5's 52k training pool (from the Hugging Face hub)

A source is looked for, in this order, in
  1. the cache `make fetch-hw5` fills: $SMALLDATA_CACHE, else <the user's cache dir>/smalldata-lora/hw5;
  2. a folder the user names: `--data-dir DIR` (or, without it, $SMALLDATA_HW5_DIR), holding the files
     in the cache's layout (hw5/..., long_is_more/...) or side by side;
  3. ../shared/data beside the checkout, where it exists (the tests' copy): $SMALLDATA_SHARED moves it,
     and set empty or to a missing folder it is skipped.
The first place holding all of a source's files gives them all; a file whose sha256 is not its pin is
refused there (never silently replaced by another copy). When no place has them, the message names
the command that fetches them. Nothing here downloads: offline, what is on disk is all there is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from filelib import sha256_file
from plugins.pools import DataError
from tools.core.hub import hub_id_shaped, hub_offline, hub_reachable
from tools.core.paths import EMBEDDED_MODEL as EMBEDDED
from tools.core.paths import ROOT, TEMPLATES

PINS = TEMPLATES / "sources" / "hw5.yaml"
FETCH = "make fetch-hw5"
RECORD = "SOURCES.json"  # what the fetch wrote into the cache: {key: {sha256, url, ...}}
LICENCE_FILE = "LICENCE.md"


@dataclass(frozen=True)
class Pin:
    """One upstream file: where it goes (`path`, relative to a data folder), where it comes from, its hash."""

    key: str
    path: str
    sha256: str | None
    bytes: int | None
    origin: str
    licence: str
    url: str | None = None  # a plain download
    repo_id: str | None = None  # or a file of a Hugging Face dataset repository
    revision: str | None = None
    filename: str | None = None
    rows: int | None = None

    @property
    def hub(self) -> bool:
        return self.repo_id is not None

    @property
    def where_from(self) -> str:
        return self.url or f"hf://datasets/{self.repo_id}@{self.revision}/{self.filename}"


@dataclass(frozen=True)
class Pins:
    files: dict[str, Pin]
    sources: dict[str, tuple[str, ...]]
    licence: str
    licence_url: str
    licence_note: str

    def of(self, name: str) -> list[Pin]:
        if name not in self.sources:
            raise DataError(f"unknown source {name!r}: one of {', '.join(self.sources)}")
        return [self.files[k] for k in self.sources[name]]


def load_pins(path: Path = PINS) -> Pins:
    import yaml

    spec = yaml.safe_load(path.read_text())
    files: dict[str, Pin] = {}
    for group in ("files", "hub"):
        for key, f in (spec.get(group) or {}).items():
            files[key] = Pin(key=key, **f)
    sources = {name: tuple(keys) for name, keys in spec["sources"].items()}
    unknown = sorted({k for keys in sources.values() for k in keys} - set(files))
    if unknown:
        raise DataError(f"{path}: sources name files it does not pin: {unknown}")
    return Pins(files, sources, spec["licence"], spec["licence_url"], spec.get("licence_note", ""))


@cache
def pins() -> Pins:
    return load_pins()


# -- where to look ----------------------------------------------------------------------------------
def cache_root() -> Path:
    """$SMALLDATA_CACHE, else the user's cache folder (~/.cache/smalldata-lora/hw5 on Linux)."""
    env = os.environ.get("SMALLDATA_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_cache_dir

        base = Path(user_cache_dir("smalldata-lora", appauthor=False))
    except ImportError:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "smalldata-lora"
    return base / "hw5"


def shared_root() -> Path | None:
    """../shared/data beside the checkout (the tests' copy), or $SMALLDATA_SHARED; None when absent."""
    env = os.environ.get("SMALLDATA_SHARED")
    p = Path(env).expanduser() if env is not None else ROOT.parent / "shared" / "data"
    return p if env != "" and p.is_dir() else None


def roots(data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """(label, folder) in the order they are searched."""
    out = [("the cache", cache_root())]
    named = data_dir if data_dir is not None else os.environ.get("SMALLDATA_HW5_DIR", "").strip() or None
    if named is not None:
        out.append(("--data-dir" if data_dir is not None else "$SMALLDATA_HW5_DIR", Path(named).expanduser()))
    shared = shared_root()
    if shared is not None:
        out.append(("../shared/data", shared))
    return out


def _candidates(root: Path, pin: Pin) -> list[Path]:
    return [root / pin.path, root / Path(pin.path).name]


def recorded(root: Path) -> dict:
    """The fetch's record in a cache folder ({} when it has none or it cannot be read)."""
    try:
        return json.loads((root / RECORD).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}


# -- the resolver -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Found:
    pin: Pin
    path: Path
    where: str  # which place it came from: "the cache", "--data-dir", ...
    sha256: str

    def manifest(self) -> dict:
        """The entry a dataset manifest keeps for the file it was built from."""
        return {
            "path": str(self.path),
            "found_in": self.where,
            "from": self.pin.where_from,
            "sha256": self.sha256,
        }


def missing_message(name: str, looked: list[tuple[str, Path]]) -> str:
    extra = " ARGS=--pool" if any(p.hub for p in pins().of(name)) else ""
    where = "; ".join(f"{label} {root}" for label, root in looked) or "nowhere"
    return (
        f"source {name!r}: its files ({', '.join(Path(p.path).name for p in pins().of(name))}) are not on this "
        f"machine (looked in {where}). Fetch them once with `{FETCH}{extra}` (it needs the internet; then "
        "they are used offline), or point --data-dir / SMALLDATA_HW5_DIR at a folder that holds them"
    )


def locate(name: str, data_dir: str | Path | None = None, verify: bool = True) -> list[Found]:
    """The files of source `name`, all from the first place that holds every one of them."""
    want = pins().of(name)
    looked = roots(data_dir)
    for label, root in looked:
        paths = [next((c for c in _candidates(root, p) if c.is_file()), None) for p in want]
        if any(p is None for p in paths):
            continue
        rec = recorded(root) if label == "the cache" else {}
        found = []
        for pin, path in zip(want, paths, strict=True):
            digest = sha256_file(path)
            expect = pin.sha256 or rec.get(pin.key, {}).get("sha256")
            if verify and expect and digest != expect:
                raise DataError(
                    f"{path} (found in {label}): sha256 {digest} is not the expected {expect} "
                    f"({pin.where_from}); remove it and fetch it again with `{FETCH}`"
                )
            found.append(Found(pin, path, label, digest))
        return found
    raise DataError(missing_message(name, looked))


def source_files(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """Paths of source `name`'s files (see `locate`)."""
    return [f.path for f in locate(name, data_dir)]


def where_is(name: str, data_dir: str | Path | None = None) -> str | None:
    """Which place would give source `name` (None when none has it): for messages, never raises."""
    try:
        return locate(name, data_dir, verify=False)[0].where
    except DataError:
        return None


def data_root(
    data_dir: str | Path | None = None, names: tuple[str, ...] = ("hw5", "hw5_refs", "alpaca_2k")
) -> Path | None:
    """The first folder holding all of `names` in the cache's layout (hw5/..., long_is_more/...), for code
    that wants one folder (the tests' fixture); None when none does."""
    for _, root in roots(data_dir):
        if all((root / p.path).is_file() for n in names for p in pins().of(n)):
            return root
    return None


# -- the model a strategy reads ---------------------------------------------------------------------
def check_model(model: Path, used: list[str]) -> None:
    """The tokenizer / LM that `used` strategies read, at hand before anything is read or written: a local
    folder holding a config, or a hub id (org/name) in the Hugging Face cache or a reachable hub. A path
    typed wrong fails here, in one line, not after the pool is scored (and the hub client's retries)."""
    from tools.core.profiles import local_model

    ref = str(model)
    what = f"--model {ref} (read by the strategy {', '.join(used)})"
    local = local_model(ref)
    if local is not None:
        if local.is_file():
            raise DataError(
                f"{what}: {local} is a file: name the model's folder (the one holding config.json)"
            )
        if not (local / "config.json").exists():
            hint = ": make base-model builds it" if local == EMBEDDED.resolve() else ""
            raise DataError(f"{what}: {local} holds no config.json, so it is not a model folder{hint}")
        return
    hint = ": make base-model builds it" if model == EMBEDDED else ""
    if not hub_id_shaped(ref):
        raise DataError(f"{what}: no such folder{hint}")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(ref, "config.json"), str):
        return
    why = "HF_HUB_OFFLINE is set" if hub_offline() else None
    if why is None and not hub_reachable():
        why = "the hub is not reachable from here"
    if why:
        raise DataError(f"{what}: no such folder here, not in the Hugging Face cache, and {why}")
