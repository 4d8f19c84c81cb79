"""A whole JSON file holding one object (run.json, trainer_state.json, adapter_config.json, ...)."""

from __future__ import annotations

import json
from pathlib import Path

_STRICT = object()


def read_json_object(path: str | Path, default=_STRICT) -> dict:
    """The object in a JSON file. Without `default`: ValueError naming the file when it is not UTF-8, not
    JSON or not an object (OSError as raised). With `default`: that value for any of these, or a missing
    file (a file still being written, or never written, reads as absent)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError:
        if default is _STRICT:
            raise
        return default
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        problem = f"{path}: not UTF-8 text (byte {e.start})"
    except json.JSONDecodeError as e:
        problem = f"{path}: broken JSON ({e.msg}, line {e.lineno})"
    else:
        if isinstance(data, dict):
            return data
        problem = f"{path}: expected a JSON object, found {type(data).__name__}"
    if default is _STRICT:
        raise ValueError(problem)
    return default
