"""`make test` / `make test-fast` read TEST_WORKERS: a bad value is refused in one line, exit 2, before
pytest starts (a 0 or a word would otherwise end in a shell arithmetic error or an unasked one-process run)."""

from __future__ import annotations

import subprocess

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
