"""Fixtures shared by the export tests: one tiny LoRA run, trained once per session by a real
`llamafactory-cli train` (tests/export/test_export.py's train_tiny_adapter, its defaults), which
test_export, test_gguf and test_merge copy into each test's own output root. Training it once instead
of once per module saves two fresh LLaMA-Factory processes; the run itself is the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from filelib import sha256_file


@pytest.fixture(autouse=True)
def exports_in_process(llamafactory_in_process) -> None:
    """Every export test merges in the test process (tests/conftest.py: llamafactory_in_process)."""


@pytest.fixture(scope="session")
def tiny_trained(tiny_model, tmp_path_factory) -> Path:
    """An output root holding saves/tiny/lora/t/a. Tests copy it (install) and never write into it:
    its adapter and run.json are checked unchanged when the session ends."""
    from tests.export.test_export import train_tiny_adapter

    root = tmp_path_factory.mktemp("tiny_trained")
    run = train_tiny_adapter(tiny_model, root / "saves/tiny/lora/t/a")
    kept = {p.name: sha256_file(p) for p in (run / "adapter_model.safetensors", run / "run.json")}
    yield root
    now = {name: sha256_file(run / name) for name in kept}
    assert now == kept, f"a test wrote into the shared run {run}: copy it first (install)"
