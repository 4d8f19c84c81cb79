"""`data/dataset_info.json`: where LLaMA-Factory looks up datasets by name (its only dataset hook).

Our entries carry a marker key, `"smalldata": {...}`, which LLaMA-Factory 0.9.5 ignores (its
`DatasetAttr.join` reads only the keys it knows, and the web UI only calls `.get("ranking")`).
Registration merges with what is there, under a lock, and writes atomically, so a crash never
clobbers the file; an entry of the same name without our marker is a user's and is only replaced
when asked (`force=True`). Each of our entries belongs to a unit (the data set published as one folder,
`generated/<unit>/`) and has a kind: `train` (the unit's own set), `stage` (another training set of the
unit: a curriculum stage, a mix's member) or `eval` (a dev, test or held-out set). A command replaces
only names of its own kind and unit; any other of ours is refused, naming the command that removes its
unit (`python -m tools.data --remove UNIT`), before anything is written. Only our entries' text
is ever rewritten: a user's entries keep their exact bytes (number spellings, escapes, a key given
twice), because the file is spliced rather than re-serialised.

The registry tells the truth: it lists only sets whose files exist. `dataset_info.json` is generated
(ignored by git): the sets the project ships are declared in the committed `shipped_datasets.json`
beside it and written into it whenever it is missing; generated sets are added when their files are
written and our entries whose files are gone are removed whenever the registry is read or written, so
`make data` on a clean clone leaves `git status` clean. Evaluation sets (kind `eval`: dev, test,
held-out) carry `"ranking": null`: LlamaBoard lists a set for a stage only when its `ranking` equals the
stage's (False for SFT, True for RM/DPO), so it never offers them for training, while LLaMA-Factory's
loader still reads them (as SFT data: `eval_dataset: demo_dev` in a training config keeps working). One
folder, one file, one API: LLaMA-Factory's training needs its dev set in the same dataset_dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from filelib import atomic_write_text

# $SMALLDATA_DATA, as tools.core.paths reads it (plugins never import tools)
DATA = Path(os.environ.get("SMALLDATA_DATA", Path(__file__).resolve().parents[2] / "data"))
INFO = "dataset_info.json"
SHIPPED = "shipped_datasets.json"  # committed: the sets the project ships (dataset_info.json is generated)
MARK = "smalldata"
HIDDEN = {"ranking": None}  # LlamaBoard offers a set only where ranking == the stage's: None matches none


class RegistryError(ValueError):
    """A name not registered, an entry that is not ours, a broken dataset_info.json."""


def info_path(dataset_dir: str | Path = DATA) -> Path:
    return Path(dataset_dir) / INFO


def _read_text(path: Path) -> str:
    if not path.exists():
        return ""
    if not path.is_file():
        raise RegistryError(f"{path}: is not a file (a folder?); move it away and re-run `make data`")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise RegistryError(
            f"{path}: line {line}: byte 0x{raw[e.start]:02x} is not UTF-8 ({e.reason}); save it as UTF-8"
        ) from None


def _parse(path: Path, text: str) -> dict:
    try:
        info = json.loads(text or "{}")
    except json.JSONDecodeError as e:
        raise RegistryError(f"{path}: broken JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(info, dict):
        raise RegistryError(f"{path}: expected an object of dataset entries, found {type(info).__name__}")
    return info


def load_info(dataset_dir: str | Path = DATA) -> dict:
    """The registered sets whose files exist (the file is brought up to date first: `sync`)."""
    path = sync(dataset_dir)
    return _parse(path, _read_text(path))


def shipped(dataset_dir: str | Path = DATA) -> dict:
    """The sets the project ships in `dataset_dir` (its committed shipped_datasets.json), if any."""
    path = Path(dataset_dir) / SHIPPED
    return _parse(path, _read_text(path)) if path.is_file() else {}


def _gone(name: str, entry: object, dataset_dir: Path) -> bool:
    """One of our entries whose file does not exist (a user's entries are never judged)."""
    return is_ours(entry) and "file_name" in entry and not (dataset_dir / str(entry["file_name"])).exists()


def sync(dataset_dir: str | Path = DATA) -> Path:
    """dataset_info.json made true: the shipped sets added where missing, our entries whose files are gone
    removed (a user's entries keep their bytes). Writes only when something changes; returns the file."""
    dataset_dir = Path(dataset_dir)
    path = info_path(dataset_dir)
    text = _read_text(path)
    info = _parse(path, text)
    updates: dict[str, dict | None] = {n: None for n, e in info.items() if _gone(n, e, dataset_dir)}
    updates.update(
        {n: e for n, e in shipped(dataset_dir).items() if n not in info and not _gone(n, e, dataset_dir)}
    )
    if not updates or not dataset_dir.is_dir():
        return path
    with locked(dataset_dir):
        text = _read_text(path)
        new = _spliced(text, updates) if text.strip() else _spliced("", updates)
        if new != text:
            atomic_write_text(path, new)
    return path


def _members(text: str) -> tuple[str, list[list], str]:
    """The top-level object as (text before the first member, [[key, member text, text after it, ours]],
    closing text): user entries are written back byte for byte, duplicated keys included."""
    dec = json.JSONDecoder()
    i = text.index("{") + 1
    members: list[list] = []
    ws = json.decoder.WHITESPACE.match
    j = ws(text, i).end()
    head_end = j
    while text[j] != "}":
        key, k_end = json.decoder.scanstring(text, j + 1)
        colon = ws(text, k_end).end()
        value, v_end = dec.raw_decode(text, ws(text, colon + 1).end())
        nxt = ws(text, v_end).end()
        if text[nxt] == ",":
            nxt = ws(text, nxt + 1).end()
        members.append([key, text[j:v_end], text[v_end:nxt], is_ours(value)])
        j = nxt
    if members:
        tail = members[-1][2]
        members[-1][2] = ""
        return text[:head_end], members, tail + text[j:]  # the last member's spacing goes with "}"
    return text[:head_end], members, text[j:]


def _member(name: str, entry: dict) -> str:
    body = json.dumps(entry, indent=2, ensure_ascii=False).replace("\n", "\n  ")
    return f"{json.dumps(name, ensure_ascii=False)}: {body}"


def _spliced(text: str, updates: dict[str, dict | None]) -> str:
    """dataset_info.json with `updates` applied (None removes): only those members' text changes."""
    if not text.strip() or not _members(text)[1]:
        info = {k: v for k, v in updates.items() if v is not None}
        return json.dumps(info, indent=2, ensure_ascii=False) + "\n"
    head, members, tail = _members(text)
    out, done = [], set()
    for key, body, sep, ours in members:
        if key in updates:
            if updates[key] is None and not ours:
                out.append([key, body, sep])  # removing never touches a user's entry
                continue
            if key in done or updates[key] is None:
                continue  # a second copy of a replaced entry, or a removed one
            body = _member(key, updates[key])
            done.add(key)
        out.append([key, body, sep])
    out += [[k, _member(k, e), ""] for k, e in updates.items() if e is not None and k not in done]
    for m in out[:-1]:
        m[2] = m[2] if m[2].startswith(",") else ",\n  "
    if out:
        out[-1][2] = ""
    if not out:
        return "{}\n"
    return head + "".join(b + s for _, b, s in out) + tail


def resolve(name: str, dataset_dir: str | Path = DATA) -> Path:
    """The file of a registered dataset; a clear error listing the registered names otherwise."""
    path = info_path(dataset_dir)
    info = {**shipped(dataset_dir), **_parse(path, _read_text(path))}  # before sync: the rebuild hint
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


KINDS = ("train", "stage", "eval")


def _unit_of_path(rel: object) -> str | None:
    parts = Path(str(rel)).parts if rel else ()
    return parts[1] if len(parts) > 2 and parts[0] == "generated" else None


def owner(name: str, entry: object) -> tuple[str, str] | None:
    """(kind, unit) of one of our entries; None for a user's. Entries written before units were recorded
    get theirs from their files' folder (generated/<unit>/...)."""
    if not is_ours(entry):
        return None
    mark = entry[MARK]
    unit = mark.get("unit") or _unit_of_path(mark.get("manifest")) or _unit_of_path(entry.get("file_name"))
    unit = str(unit or name)
    kind = str(mark.get("kind") or "train")
    return ("stage" if kind == "train" and name != unit else kind), unit


def members(unit: str, dataset_dir: str | Path = DATA) -> dict[str, str]:
    """{name: kind} of our entries that belong to `unit`."""
    info = load_info(dataset_dir)
    return {n: o[0] for n, e in info.items() if (o := owner(n, e)) and o[1] == unit}


def alpaca_entry(file: str | Path, dataset_dir: str | Path = DATA, **meta) -> dict:
    """An Alpaca-format entry for a file inside dataset_dir, marked as ours (meta goes in the marker)."""
    return entry(Path(file).resolve().relative_to(Path(dataset_dir).resolve()).as_posix(), **meta)


SHAREGPT_COLUMNS = {"messages": "conversations"}  # tags: LLaMA-Factory's defaults (from/value, human/gpt)


def entry(rel: str, formatting: str = "alpaca", system: bool = False, **meta) -> dict:
    """An entry for `rel` (a path relative to dataset_dir), marked as ours: Alpaca columns, or with
    `formatting="sharegpt"` a file of whole conversations (plugins.pools.to_records); `system` when its
    rows carry a system prompt."""
    columns = (
        dict(SHAREGPT_COLUMNS)
        if formatting == "sharegpt"
        else {"prompt": "instruction", "query": "input", "response": "output"}
    )
    if system:
        columns["system"] = "system"
    return {
        "file_name": rel,
        "formatting": formatting,
        "columns": columns,
        MARK: {"generated_by": __name__, **meta},
    }


_HELD: dict[str, int] = {}  # folders this process holds the lock on (re-entrant: publish + register)


@contextlib.contextmanager
def locked(dataset_dir: str | Path) -> Iterator[None]:
    """Serialise read-modify-write of dataset_info.json across processes (lock on the folder)."""
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    key = str(dataset_dir.resolve())
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    fd = os.open(dataset_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _HELD[key] = 1
        yield
    finally:
        _HELD.pop(key, None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def check_conflicts(
    claims: dict[str, tuple[str, str]], dataset_dir: str | Path = DATA, force: bool = False
) -> None:
    """Raise before anything is written when a name is a user's entry (and force is off), or one of ours
    of another kind or unit (always: `force` replaces a user's entry, never another unit's).
    `claims`: {name: (kind, unit)} the caller is about to register."""
    info = load_info(dataset_dir)
    taken = [n for n in claims if n in info and not is_ours(info[n])]
    if taken and not force:
        raise RegistryError(
            f"{info_path(dataset_dir)}: {', '.join(taken)} already registered by someone else "
            "(no 'smalldata' marker); pass --force to replace, or --name to pick another name"
        )
    for name, (kind, unit) in claims.items():
        old = owner(name, info.get(name))
        # entries written before units were recorded say only train or eval: a stage reads as train there
        recorded = old is not None and "unit" in info[name][MARK]
        if old is not None and (
            old[1] != unit or (old[0] == "eval") != (kind == "eval") or (recorded and old[0] != kind)
        ):
            what = f"the {old[0]} set" if old[0] != "stage" else "a training set"
            raise RegistryError(
                f"{info_path(dataset_dir)}: {name} is {what} of unit {old[1]!r}, not a {kind} set of {unit!r}: "
                f"pick another name, or remove that unit first: python -m tools.data --remove {old[1]}"
            )


def claims_of(entries: dict[str, dict]) -> dict[str, tuple[str, str]]:
    """{name: (kind, unit)} of entries built by `entry` (their marker says both)."""
    return {n: owner(n, e) or ("train", n) for n, e in entries.items()}


def register(entries: dict[str, dict], dataset_dir: str | Path = DATA, force: bool = False) -> Path:
    """Merge `entries` (name -> entry) into dataset_info.json, atomically; returns the file."""
    dataset_dir = Path(dataset_dir)
    for name, e in entries.items():
        if not isinstance(e, dict) or not ("file_name" in e or "hf_hub_url" in e):
            raise RegistryError(f"entry {name!r}: needs a 'file_name'")
    with locked(dataset_dir):
        check_conflicts(claims_of(entries), dataset_dir, force)
        path = info_path(dataset_dir)
        text = _read_text(path)
        _parse(path, text)
        updates = {}
        for name, e in entries.items():
            e = dict(e)
            e.setdefault(MARK, {"generated_by": __name__})
            if (owner(name, e) or ("",))[0] == "eval":
                e.update(HIDDEN)  # never offered for training by LlamaBoard (see the module's docstring)
            updates[name] = e
        stale = _parse(path, text).items()
        updates.update({n: None for n, old in stale if n not in updates and _gone(n, old, dataset_dir)})
        new = _spliced(text, updates)
        if new == text:
            return path  # nothing changed: the tracked file keeps its mtime
        return atomic_write_text(path, new)


def unregister(names: list[str], dataset_dir: str | Path = DATA) -> list[str]:
    """Remove our own entries (a user's are left alone); returns the names removed. Callers hold the
    lock when the files go in the same step (publish.remove)."""
    dataset_dir = Path(dataset_dir)
    with locked(dataset_dir):
        path = info_path(dataset_dir)
        text = _read_text(path)
        info = _parse(path, text)
        gone = [n for n in names if n in info and is_ours(info[n])]
        if gone:
            atomic_write_text(path, _spliced(text, dict.fromkeys(gone)))
        return gone
