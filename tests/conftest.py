"""Shared fixtures: the tiny random model, the embedded base model, HW5's real data (tools/data/sources.py).

Every test that writes outputs gets its own SMALLDATA_OUT (saves/, exports/, reports/, cache/)
so tests never touch the repo's own folders or each other's.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from filelib import tune_collector

# Each worker imports torch, transformers and LLaMA-Factory, and its tests make and drop data by the
# thousand: the collector as every command sets it (filelib.collector; 9.6 -> 3.1 s of collections in a
# 51-s slice of the fast tests).
tune_collector()


@pytest.fixture(scope="session")
def llamafactory_in_process() -> None:
    """LLaMA-Factory's tuner imported in this test process (4 s of CPU once torch and transformers are in),
    so an export runs here as it runs in a warm child (tools/export/export.py) instead of in a
    `llamafactory-cli export` that imports it all again (13-16 s of CPU each). For the tests that export;
    test_export.py checks the CLI's path against this one."""
    import llamafactory.train.tuner  # noqa: F401


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
    """A folder with the real HW5 and Long-Is-More files (hw5/..., long_is_more/...), found as the data
    commands find them: the cache `make fetch-hw5` fills, $SMALLDATA_HW5_DIR, then ../shared/data
    ($SMALLDATA_SHARED); skip where none has them."""
    from tools.data import data_root

    root = data_root()
    if root is None:
        pytest.skip("HW5's real data is not on this machine: `make fetch-hw5` (or set SMALLDATA_HW5_DIR)")
    return root


@pytest.fixture()
def out_dir(tmp_path, monkeypatch) -> Path:
    """An isolated output root: saves/, exports/, reports/ and cache/ go here for this test."""
    monkeypatch.setenv("SMALLDATA_OUT", str(tmp_path))
    return tmp_path


# Session fixtures that start a server per worker: the tests that ask for one run on one worker
# (make test's --dist loadgroup, a group named after the fixture), so the suite starts it once.
ONE_WORKER = ("tiny_api",)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the test ids
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        for fixture in ONE_WORKER:
            if fixture in getattr(item, "fixturenames", ()) and not item.get_closest_marker("xdist_group"):
                item.add_marker(pytest.mark.xdist_group(fixture))

    # Longest first, so that no worker is left alone with a long group at the end: xdist hands out work in
    # this order, and a group (the Ray tests': ~4 minutes on one worker) is one unit. Then the modules with
    # end-to-end tests, then the rest; each module's tests stay together (its fixtures are built once).
    def group(item) -> str | None:
        mark = item.get_closest_marker("xdist_group")
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default")) if mark else None

    def module_of(item) -> str:
        module = getattr(item, "module", None)
        return module.__name__ if module else ""

    slow = [item for item in items if item.get_closest_marker("slow")]
    slow_modules = {module_of(item) for item in slow}
    weight = collections.Counter(group(item) for item in slow)  # a group's end-to-end tests: its length
    order = {id(item): i for i, item in enumerate(items)}

    def rank(item) -> tuple:
        name, module = group(item), module_of(item)
        if name is not None:
            return (0, -weight[name], name, order[id(item)])
        return (1 if module in slow_modules else 2, 0, "", order[id(item)])

    items.sort(key=rank)


@pytest.fixture(scope="session")
def tiny_api(tiny_model, tmp_path_factory) -> str:
    """A real `llamafactory-cli api` serving the tiny model on a loopback port, for the whole session:
    the judge's and the refinement's endpoint tests share it (one server start, ~15 s), on one worker."""
    from tools.judge.serve import serve_local

    with serve_local(tiny_model, "smollm2", log_path=tmp_path_factory.mktemp("srv") / "serve.log") as url:
        yield url
