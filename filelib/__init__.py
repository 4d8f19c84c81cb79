"""The file library, the lowest layer: every package may import it; it imports nothing of the project's.

- `atomic`: whole files and folders written under a temporary name and renamed into place;
- `jsonl`: append-only JSONL that survives a killed writer;
- `hashing`: sha256 of files and strings.
"""

from filelib.atomic import atomic_dir, atomic_write_json, atomic_write_jsonl, atomic_write_text
from filelib.hashing import sha256_file, sha256_text
from filelib.jsonl import append_jsonl, read_jsonl

__all__ = [
    "append_jsonl",
    "atomic_dir",
    "atomic_write_json",
    "atomic_write_jsonl",
    "atomic_write_text",
    "read_jsonl",
    "sha256_file",
    "sha256_text",
]
