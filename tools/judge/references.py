"""Which reference answers a score was judged against, and pointing the judge at another file.

A pairwise score means little without its references: HW5's course scores against its own reference
answers (not public: students submit to the course's site), while the references we have for the 150
prompts are Long-Is-More's gpt-3.5 answers. So every scores.json records where its references came
from (the file and its sha256, and a sha256 of the reference texts actually sent), and
`--references FILE` (any shape `plugins.pools.loaders` reads: Alpaca, FastChat/ShareGPT as the course's
`evol_instruct_gt.json` is, OpenAI messages) replaces them, joined by id.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from filelib import sha256_file, sha256_text
from tools.core.paths import DATA

HW5_NOTE = (
    "HW5 test sets carry Long-Is-More's gpt-3.5 answers as references, not the course's own "
    "(not public): the course's number can differ; pass --references FILE if you have its file"
)


class ReferenceError(ValueError):
    pass


def read_references(path: str | Path) -> dict[str, str]:
    """{id: reference answer} from a file of any supported shape; errors name the file and row."""
    from plugins.pools import loaders

    path = Path(path)
    try:
        records = loaders.read_records(path)
        if not records:
            raise ReferenceError(f"{path}: no rows")
        shape = loaders.detect_shape(records[0], path, 0)
        rows = [loaders.normalise(rec, shape, path, i) for i, rec in enumerate(records)]
    except loaders.DataError as e:
        raise ReferenceError(str(e)) from e
    out: dict[str, str] = {}
    for i, r in enumerate(rows):
        rid = r.get("id")
        if rid is None or str(rid) == "":
            raise ReferenceError(f"{path}: row {i}: field 'id' missing (references are joined by id)")
        if not (r.get("output") or "").strip():
            raise ReferenceError(f"{path}: row {i} (id {rid}): the reference answer is empty")
        if str(rid) in out:
            raise ReferenceError(f"{path}: row {i}: id {rid!r} appears twice")
        out[str(rid)] = r["output"]
    return out


def join_references(items: list, refs: dict[str, str], path: Path) -> list:
    """The items with their reference from `refs`; every item's id must be there."""
    missing = [it.id for it in items if it.id not in refs]
    if missing:
        raise ReferenceError(
            f"{path}: no reference for {len(missing)} of the {len(items)} ids judged "
            f"(first: {', '.join(missing[:5])}); the file must cover every id of the predictions"
        )
    return [replace(it, reference=refs[it.id]) for it in items]


def _registered_file(testset: str) -> Path | None:
    info = DATA / "dataset_info.json"
    try:
        entry = json.loads(info.read_text()).get(testset) or {}
    except (OSError, ValueError):
        return None
    return DATA / entry["file_name"] if entry.get("file_name") else None


def provenance(items: list, testset: str, references: Path | None, predictions: Path) -> dict:
    """What scores.json records about the references: file, its sha256, and the texts' own sha256."""
    texts = sha256_text(*[f"{it.id}\t{it.reference or ''}" for it in sorted(items, key=lambda i: i.id)])
    if references is not None:
        return {
            "source": "file",
            "path": str(references),
            "sha256": sha256_file(references),
            "texts_sha256": texts,
            "n": sum(1 for it in items if it.reference),
        }
    reg = _registered_file(testset)
    out = {
        "source": "predictions",
        # the predictions carry the references of the registered test set they were generated from
        "path": str(reg if reg and reg.exists() else predictions),
        "sha256": sha256_file(reg) if reg and reg.exists() else sha256_file(predictions),
        "texts_sha256": texts,
        "n": sum(1 for it in items if it.reference),
    }
    if testset == "hw5" or testset.startswith("hw5_"):
        out["note"] = HW5_NOTE
    return out


def label(prov: dict | None) -> str:
    """A short line for tables: `refs <file name> <sha256[:12]>`."""
    if not prov:
        return "refs: not recorded"
    return f"refs {Path(prov['path']).name} {prov['sha256'][:12]}"
