"""Evaluation prompt sets: a registered dataset's rows as prompts with their reference answers.

A prompt's user message is built exactly as LLaMA-Factory's Alpaca converter builds it for training.
"""

from __future__ import annotations

import json
from pathlib import Path

from plugins.pools import detect_shape, load_rows, normalise_records, read_records
from plugins.publishing import resolve
from tools.core.paths import DATA


class GenerateError(ValueError):
    """Bad input: a message for the person at the keyboard, nothing written."""


# ------------------------------------------------------------------------------------------- prompts
def resolve_dataset(name: str, dataset_dir: Path = DATA) -> Path:
    """The file of a registered dataset, via plugins.publishing's registry (clear error listing the registered ones)."""
    try:
        return Path(resolve(name, dataset_dir=Path(dataset_dir)))
    except (KeyError, ValueError, FileNotFoundError) as e:
        # keep the registry's message, and make sure the registered names are in it
        info_path = Path(dataset_dir) / "dataset_info.json"
        names = sorted(json.loads(info_path.read_text())) if info_path.exists() else []
        msg = str(e).strip("'\"")
        if names and not all(n in msg for n in names[:3]):
            msg += f"; registered: {', '.join(names)}"
        raise GenerateError(msg) from e


def prompt_rows(path: Path) -> list[dict]:
    """Normalised rows of an evaluation set, where an Alpaca file may leave outputs empty (no reference)."""
    records = read_records(path)
    if not records:
        raise GenerateError(f"{path}: no prompts")
    shape = detect_shape(records[0], path, 0)
    return normalise_records(records, path, "prompt" if shape == "alpaca" else shape).rows


def load_prompts(testset: str, dataset_dir: Path = DATA, references: str | None = None) -> list[dict]:
    """Rows {id, instruction, input, reference}; references joined by id (from `references` if named)."""
    path = resolve_dataset(testset, dataset_dir)
    rows = prompt_rows(path)
    prompts, seen = [], set()
    for i, r in enumerate(rows):
        rid = r.get("id")
        if rid is None or str(rid) == "":
            raise GenerateError(f"{path}: row {i}: field 'id' missing (evaluation sets need ids)")
        if not str(r.get("instruction") or "").strip():
            raise GenerateError(f"{path}: row {i} (id {rid}): field 'instruction' is empty")
        rid = str(rid)
        if rid in seen:
            raise GenerateError(f"{path}: row {i}: id {rid!r} appears twice")
        seen.add(rid)
        prompts.append(
            {
                "id": rid,
                "instruction": r["instruction"],
                "input": r.get("input") or "",
                "reference": r.get("output") or None,
            }
        )
    if references:
        ref_path = resolve_dataset(references, dataset_dir)
        by_id = {
            str(r["id"]): r.get("output") or None for r in load_rows(ref_path) if r.get("id") is not None
        }
        for p in prompts:
            p["reference"] = by_id.get(p["id"])
    return prompts


def user_message(row: dict) -> str:
    """The user turn exactly as LLaMA-Factory's Alpaca converter builds it: instruction, newline, input."""
    return "\n".join(x for x in (row["instruction"], row.get("input") or "") if x)
