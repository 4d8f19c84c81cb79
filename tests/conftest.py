"""Shared fixtures: the tiny random model, the embedded base model, the real data in ../shared.

Every test that writes outputs gets its own SMALLDATA_OUT (saves/, exports/, reports/, cache/)
so tests never touch the repo's own folders or each other's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tools.core.paths import ROOT

SHARED_DATA = Path(os.environ.get("SMALLDATA_SHARED", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """SmolLM2's architecture and real tokenizer, 2 layers of 64: built in seconds, seeded."""
    from tools.models.tiny import build

    return build()


@pytest.fixture(scope="session")
def base_model() -> Path:
    """The embedded SmolLM2-135M-Instruct (built from the GGUF on first use, ~20 s)."""
    from tools.models.base import BASE_MODEL_DIR, build

    return build(BASE_MODEL_DIR)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: the real HW5 and Long-Is-More files; skip where this clone has none."""
    if not (SHARED_DATA / "hw5").is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA} (a fresh clone has no ../shared)")
    return SHARED_DATA


@pytest.fixture()
def out_dir(tmp_path, monkeypatch) -> Path:
    """An isolated output root: saves/, exports/, reports/ and cache/ go here for this test."""
    monkeypatch.setenv("SMALLDATA_OUT", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="session")
def tiny_api(tiny_model, tmp_path_factory) -> str:
    """A real `llamafactory-cli api` serving the tiny model on a loopback port, for the whole session:
    the judge's and the refinement's endpoint tests share it (one server start, ~15 s)."""
    from tools.judge.serve import serve_local

    with serve_local(tiny_model, "smollm2", log_path=tmp_path_factory.mktemp("srv") / "serve.log") as url:
        yield url
