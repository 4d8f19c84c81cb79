"""The data of the python_mc task, found beside this file (not from the working directory), so that
`lm_eval --include_path templates/zeroshot --tasks python_mc` runs from any folder. lm-eval calls it
through the task's `custom_dataset: !function python_mc_data.load`, resolved relative to the YAML."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(data_files: dict | None = None, **_metadata):
    """A DatasetDict of the task's splits; relative data file names are read from this folder."""
    import datasets

    files = data_files or {"test": "python_mc.jsonl"}
    files = {split: str(HERE / name) for split, name in files.items()}
    return datasets.load_dataset("json", data_files=files)
