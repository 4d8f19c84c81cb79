"""glibc's mmap threshold in a training child (tools/train/trainer.py): not fixed by the project (a fixed
128 KiB threshold doubles a CPU step; tools.train.measure fixes it itself to measure the peak the bill bounds),
but a value the user exports reaches the child and takes effect there. Checked on the allocator itself: after a
4 MB block is freed, glibc's default threshold has grown to 4 MB and 1 MB blocks come from the heap; with the
user's 128 KiB each is a mapping of its own (mallinfo2's hblks) once the heap's free space is used (a warm child
inherits its server's heap, free space included), in a fresh child and in a warm one alike."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools.core import warm
from tools.core.runinfo import run_child
from tools.train.measure import MMAP_THRESHOLD
from tools.train.trainer import MMAP_THRESHOLD_ENV, child_env

PROBE = """import ctypes
libc = ctypes.CDLL("libc.so.6")
names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
libc.mallinfo2.restype = type("MI", (ctypes.Structure,), {"_fields_": [(n, ctypes.c_size_t) for n in names]})
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(4 << 20))
info = libc.mallinfo2()
before, free_mb = info.hblks, info.fordblks >> 20
blocks = [libc.malloc(1 << 20) for _ in range(free_mb + 16)]
print("mmapped blocks:", libc.mallinfo2().hblks - before, "of", len(blocks))
"""
CPU = {"memory_estimate": {"device": "cpu", "total_mb": 1600.0}}
GPU = {"memory_estimate": {"device": "cuda", "total_mb": 18_000.0}}
BASE = {"PATH": "/usr/bin:/bin", "TENSORBOARD_LOGGING_DIR": "/tmp/one-folder-for-all"}


USER = {**BASE, MMAP_THRESHOLD_ENV: str(MMAP_THRESHOLD)}


def test_the_threshold_is_never_set_by_the_project_and_always_passed_from_the_user():
    for job in (CPU, GPU):
        env = child_env(job, BASE)
        assert MMAP_THRESHOLD_ENV not in env
        assert env["TOKENIZERS_PARALLELISM"] == "false" and "TENSORBOARD_LOGGING_DIR" not in env
        assert child_env(job, {**BASE, MMAP_THRESHOLD_ENV: "65536"})[MMAP_THRESHOLD_ENV] == "65536"
    tracked = child_env({**CPU, "env": {"MLFLOW_RUN_ID": "abc"}}, USER)
    assert tracked["MLFLOW_RUN_ID"] == "abc" and tracked[MMAP_THRESHOLD_ENV] == "131072"


def mmapped(log: Path) -> int:
    (line,) = [x for x in log.read_text().splitlines() if x.startswith("mmapped blocks:")]
    return int(line.split()[2])


def test_a_fresh_child_gets_the_users_threshold(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    for name, base, mapped in (("user", USER, True), ("default", BASE, False)):
        log = tmp_path / f"{name}.log"
        res = run_child([sys.executable, str(probe)], log, tmp_path, child_env(CPU, base))
        assert res.returncode == 0, log.read_text()
        assert (mmapped(log) >= 16) if mapped else (mmapped(log) == 0), (name, log.read_text())


@pytest.mark.slow  # the fork server imports LLaMA-Factory
@pytest.mark.skipif(not warm.available(), reason="warm starts need Linux's fork")
def test_a_warm_child_gets_it_too(tmp_path):
    """The fork server's allocator started without the variable; the child applies its own."""
    pkg = tmp_path / "probe"
    pkg.mkdir()
    (pkg / "alloc_probe.py").write_text(PROBE)
    sys.path.insert(0, str(pkg))  # the server imports by name; the child sees the same path
    try:
        for name, base, mapped in (("user", USER, True), ("default", BASE, False)):
            log = tmp_path / f"{name}.log"
            env = {**child_env(CPU, base), "PYTHONPATH": str(pkg)}
            res = warm.run_module("alloc_probe", [], log, tmp_path, env)
            assert res.returncode == 0, log.read_text()
            assert (mmapped(log) >= 16) if mapped else (mmapped(log) == 0), (name, log.read_text())
    finally:
        sys.path.remove(str(pkg))
