"""The file library, the lowest layer: every package may import it; it imports nothing of the project's.

- `atomic`: whole files and folders written under a temporary name and renamed into place;
- `jsonl`: append-only JSONL that survives a killed writer;
- `jsonfile`: a whole JSON file holding one object, strictly or with a default;
- `hashing`: sha256 of files and strings;
- `ownership`: outputs that never replace what the command did not make (`check_output`, `claim`);
- `boundary`: the one top-level error boundary of every command (`run_main`);
- `collector`: Python's garbage collector set for processes that import LLaMA-Factory's stack.
"""

from filelib.atomic import (
    atomic_dir,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    build_lock,
    check_place,
)
from filelib.boundary import run_main
from filelib.collector import tune as tune_collector
from filelib.hashing import sha256_file, sha256_text
from filelib.jsonfile import read_json_object
from filelib.jsonl import append_jsonl, read_jsonl
from filelib.ownership import OwnershipError, check_output, claim

__all__ = [
    "OwnershipError",
    "append_jsonl",
    "atomic_dir",
    "atomic_write_json",
    "atomic_write_jsonl",
    "atomic_write_text",
    "build_lock",
    "check_output",
    "check_place",
    "claim",
    "read_json_object",
    "read_jsonl",
    "run_main",
    "sha256_file",
    "sha256_text",
    "tune_collector",
]
