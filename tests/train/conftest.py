"""Fixtures shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty, offline Hugging Face hub cache under tmp_path (HF_HOME, HF_HUB_CACHE, and the constant
    huggingface_hub read at import); a test puts a repo in it laid out as `hf download` leaves it."""
    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hub))
    return hub
