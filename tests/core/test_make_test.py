"""`make test` / `make test-fast` read TEST_WORKERS: a bad value is refused in one line, exit 2, before
pytest starts (a 0 or a word would otherwise end in a shell arithmetic error or an unasked one-process run)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tools.core.paths import ROOT


@pytest.mark.parametrize("workers", ["0", "abc", "-1", "2x", ""])
def test_a_bad_worker_count_is_refused_before_pytest_starts(workers):
    res = subprocess.run(
        ["make", "--no-print-directory", "-o", "setup", "test-fast", f"TEST_WORKERS={workers}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"make: TEST_WORKERS={workers}: the number of test processes, a whole number from 1" in res.stderr
    assert "passed" not in res.stdout and "make test-fast:" not in res.stdout  # pytest never ran


def test_loadgroup_keeps_a_group_on_one_worker(tmp_path):
    """`make test` keeps the tests that share a Ray cluster, lm-eval's index, a trained run or an API server
    on one worker (`xdist_group`, `--dist loadgroup`). pytest 9.2 changed how a test's id is stored and
    xdist 3.8's grouping silently stopped (pytest-dev/pytest-xdist#1386): run a group of 6 on 2 workers here."""
    (tmp_path / "test_grouped.py").write_text(
        "import os, pytest\n"
        "@pytest.mark.xdist_group('one')\n"
        "@pytest.mark.parametrize('i', range(6))\n"
        "def test_member(i):\n"
        "    with open(os.environ['WORKERS_SEEN'], 'a') as f:\n"
        "        f.write(os.environ['PYTEST_XDIST_WORKER'] + '\\n')\n"
    )
    seen = tmp_path / "workers.txt"
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup",
         "-o", "addopts=", str(tmp_path / "test_grouped.py")],
        cwd=tmp_path,
        env={**os.environ, "WORKERS_SEEN": str(seen)},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert res.returncode == 0 and "6 passed" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    workers = seen.read_text().split()
    assert len(workers) == 6 and len(set(workers)) == 1, workers
