"""filelib.collector: every command, the fork server's children and the test workers run with the young
generation raised (the older ones as CPython sets them)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

from filelib import collector
from tools.core.paths import ROOT


def test_a_command_runs_with_the_young_generation_raised(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import gc\nfrom filelib import run_main\nrun_main(lambda: print(*gc.get_threshold()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(probe)], env=env, capture_output=True, text=True, check=True)
    default = subprocess.run(
        [sys.executable, "-c", "import gc; print(*gc.get_threshold())"],
        capture_output=True,
        text=True,
        check=True,
    )
    young, middle, old = map(int, out.stdout.split())
    assert young == collector.YOUNG and [middle, old] == list(map(int, default.stdout.split()))[1:]


def test_this_test_process_runs_with_it_too():
    assert gc.get_threshold()[0] == collector.YOUNG
