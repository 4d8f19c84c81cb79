"""A data run publishes its set as one unit: killed at any moment, or racing another run, the
registered set is always whole (issue 18). Real `python -m tools.data` processes, real SIGKILLs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from filelib import sha256_file
from plugins.publishing import is_ours, load_info, resolve
from tools.core.paths import ROOT

STAGES = ("easy", "medium", "hard")


def make_pool(path: Path, n: int = 300) -> Path:
    words = [" ".join(["word"] * (i * 7 % 150 + 1)) for i in range(n)]
    rows = [
        {"instruction": f"Task {i}? " + "context " * 20, "input": "", "output": words[i], "score": i % 7}
        for i in range(n)
    ]
    path.write_text(json.dumps(rows))
    return path


def data_cmd(pool: Path, ddir: Path, strategy: str, name: str = "sub", n: int = 30) -> list[str]:
    args = ["--source", pool, "--n", n, "--no-plot", "--dataset-dir", ddir, "--strategy", strategy]
    return [sys.executable, "-m", "tools.data", *map(str, [*args, "--name", name])]


def rows(path: Path) -> list[dict]:
    return json.loads(path.read_text())  # a stage may be empty: not a pool, so not load_rows


def assert_consistent(ddir: Path) -> dict[str, str]:
    """Every registered file exists, each manifest's hashes match the registered files, the stages add
    up to the subset. Returns {subset: strategy} of what is registered."""
    info = load_info(ddir)
    units: dict[str, str] = {}
    for name, entry in info.items():
        if not is_ours(entry):
            continue
        file = resolve(name, ddir)  # raises when the file is missing
        manifest = json.loads((ddir / entry["smalldata"]["manifest"]).read_text())
        assert manifest["files"][name]["sha256"] == sha256_file(file), f"{name}: manifest and file disagree"
        units[manifest["name"]] = manifest["strategy"]
    for unit in units:
        subset = sorted(r["id"] for r in rows(resolve(unit, ddir)))
        stages = sorted(r["id"] for s in STAGES for r in rows(resolve(f"{unit}_{s}", ddir)))
        assert stages == subset, f"{unit}: the stages do not add up to the subset"
    return units


def start_until_selected(cmd: list[str]) -> tuple[subprocess.Popen, float]:
    """Start a run and return once it has selected its rows (what follows is writing and publishing)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "data: select:" in line:
            break
    return proc, time.perf_counter()


@pytest.mark.slow  # real data runs, started and killed
def test_a_kill_at_any_moment_leaves_the_old_set_or_the_new(tmp_path):
    pool, ddir = make_pool(tmp_path / "pool.json", 4000), tmp_path / "data"
    proc, t0 = start_until_selected(data_cmd(pool, ddir, "random_s0", n=2000))
    proc.communicate()
    window = time.perf_counter() - t0  # from "selected" to the end: writing, publishing, registering
    assert proc.returncode == 0 and assert_consistent(ddir) == {"sub": "random_s0"}
    rng = random.Random(18)
    strategies = {"random_s0"}
    for i in range(1, 16):
        strategy = f"random_s{i}"
        proc, _ = start_until_selected(data_cmd(pool, ddir, strategy, n=2000))
        time.sleep(rng.uniform(0, 1.1) * window)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        strategies.add(strategy)
        units = assert_consistent(ddir)
        assert set(units) == {"sub"} and units["sub"] in strategies
    # a run after the kills cleans up after them and leaves one version
    subprocess.run(data_cmd(pool, ddir, "length"), cwd=ROOT, check=True, capture_output=True)
    assert assert_consistent(ddir) == {"sub": "length"}
    gen = sorted(p.name for p in (ddir / "generated").iterdir())
    assert len(gen) == 2 and gen[0] == "sub" and gen[1].startswith("sub."), gen
    assert os.readlink(ddir / "generated" / "sub") == gen[1]


@pytest.mark.slow  # real data runs, started and killed
def test_two_runs_registering_at_once(tmp_path):
    pool, ddir = make_pool(tmp_path / "pool.json"), tmp_path / "data"
    (ddir).mkdir()
    (ddir / "dataset_info.json").write_text('{"mine": {"file_name": "m.json", "n": 1.50}}\n')
    cmds = [
        data_cmd(pool, ddir, "random_s1", "a"),
        data_cmd(pool, ddir, "random_s2", "a"),
        data_cmd(pool, ddir, "length", "b"),
    ]
    procs = [
        subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for c in cmds
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    units = assert_consistent(ddir)
    assert units["a"] in {"random_s1", "random_s2"} and units["b"] == "length"
    assert (ddir / "dataset_info.json").read_text().startswith('{"mine": {"file_name": "m.json", "n": 1.50},')
    left = sorted(p.name for p in (ddir / "generated").iterdir())
    assert len(left) == 4 and not [n for n in left if n.endswith(".partial")], left


@pytest.mark.parametrize("bad", ["../../x", "a/b", ".hidden"])
def test_unit_names_are_path_safe(tmp_path, bad):
    from plugins.publishing import RegistryError, publish

    with pytest.raises(RegistryError, match="use letters"), publish.staging(tmp_path, bad):
        pass
    assert not (tmp_path / "generated").exists() or not list((tmp_path / "generated").iterdir())


def test_a_link_left_by_a_run_killed_before_its_switch_is_removed_by_the_next(tmp_path):
    """The window the kill test hits by chance: the new link made, the process killed before the rename."""
    from plugins.publishing import publish

    gen = tmp_path / "generated"
    for unit in ("sub", "other"):
        with publish.staging(tmp_path, unit) as tmp:
            (tmp / "f.json").write_text("[]")
        publish.commit(tmp_path, unit, tmp, {})
    for left in (".sub.4242.link", ".other.4243.link"):
        os.symlink("nowhere", gen / left)
    with publish.staging(tmp_path, "sub") as tmp:
        (tmp / "f.json").write_text("[1]")
    publish.commit(tmp_path, "sub", tmp, {})
    left = sorted(p.name for p in gen.iterdir())
    # another unit's link is for that unit's next run to clear
    assert [n for n in left if n.endswith(".link")] == [".other.4243.link"], left
    assert len(left) == 5 and json.loads((gen / "sub" / "f.json").read_text()) == [1], left
    publish.remove(tmp_path, "other")
    assert sorted(p.name for p in gen.iterdir() if p.name.startswith((".other", "other"))) == []
