"""Warm starts (tools.core.warm): a child forked from a server that imported LLaMA-Factory once behaves as
a fresh process would: its own exit status, environment, folder and log, and the same trained weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from filelib.collector import YOUNG
from tools.core import warm
from tools.core.paths import ROOT, Run
from tools.flows import sweep

pytestmark = pytest.mark.skipif(not warm.available(), reason="warm starts need Linux's fork")


def write_module(folder: Path, body: str) -> str:
    (folder / "warm_probe.py").write_text(body)
    return "warm_probe"


NAP_S = 0.5  # each probe child sleeps this long before it exits


@pytest.mark.slow  # the fork server imports LLaMA-Factory
def test_a_warm_child_has_its_own_status_env_folder_and_log(tmp_path):
    pkg = tmp_path / "probe"
    pkg.mkdir()
    name = write_module(
        pkg,
        "import os, sys, time\n"
        "print('out', os.environ['PROBE'], os.getcwd(), sys.argv[1:])\n"
        f"time.sleep({NAP_S})\n"
        "print('err line', file=sys.stderr)\n"
        "raise SystemExit(int(sys.argv[1]))\n",
    )
    env = {"PROBE": "yes", "PYTHONPATH": str(pkg), "PATH": "/usr/bin:/bin"}
    sys.path.insert(0, str(pkg))  # the server imports by name; the child sees the same path
    try:
        ok = warm.run_module(name, ["0"], tmp_path / "a.log", tmp_path, env)
        bad = warm.run_module(name, ["3"], tmp_path / "b.log", pkg, env)
    finally:
        sys.path.remove(str(pkg))
    assert ok.returncode == 0 and bad.returncode == 3
    log = (tmp_path / "a.log").read_text()
    assert "(warm start)" in log and f"out yes {tmp_path} ['0']" in log and "err line" in log
    assert f"out yes {pkg} ['3']" in (tmp_path / "b.log").read_text()
    assert ok.peak_rss_mb and ok.peak_rss_mb > 10
    # the wall time is the child's own run, measured: at least the nap each child took (a lower bound
    # only, so a loaded machine cannot fail it)
    assert ok.wall_s >= NAP_S and bad.wall_s >= NAP_S, (ok.wall_s, bad.wall_s)


@pytest.mark.slow  # the fork server imports LLaMA-Factory
def test_a_crash_is_a_failed_status_with_its_traceback_in_the_log(tmp_path):
    pkg = tmp_path / "probe"
    pkg.mkdir()
    name = write_module(pkg, "raise RuntimeError('boom in the child')\n")
    sys.path.insert(0, str(pkg))
    try:
        res = warm.run_module(name, [], tmp_path / "c.log", tmp_path, {"PYTHONPATH": str(pkg)})
    finally:
        sys.path.remove(str(pkg))
    assert res.returncode == 1 and "RuntimeError: boom in the child" in (tmp_path / "c.log").read_text()


@pytest.mark.slow  # the fork server imports LLaMA-Factory
def test_a_script_runs_warm_with_its_folder_and_pythonpath_on_the_path(tmp_path):
    """`python script.py ...` (llama.cpp's converters): the script's folder first on the path and the
    child's PYTHONPATH after it, as a fresh interpreter sets them up, though the server read neither."""
    (tmp_path / "scripts").mkdir(), (tmp_path / "lib").mkdir()
    (tmp_path / "scripts" / "beside.py").write_text("WHO = 'beside'\n")
    (tmp_path / "lib" / "fromenv.py").write_text("WHO = 'fromenv'\n")
    script = tmp_path / "scripts" / "probe.py"
    script.write_text(
        "import sys, beside, fromenv\n"
        "print('ran', __name__, beside.WHO, fromenv.WHO, sys.argv[1:], sys.path[0])\n"
        "raise SystemExit(int(sys.argv[1]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "lib")}
    for code in (0, 4):
        log = tmp_path / f"s{code}.log"
        res = warm.run_command([sys.executable, str(script), str(code)], log, tmp_path, env)
        text = log.read_text()
        assert res.returncode == code and "(warm start)" in text, text
        assert f"ran __main__ beside fromenv ['{code}'] {tmp_path / 'scripts'}" in text, text


@pytest.mark.slow  # the fork server imports LLaMA-Factory
def test_a_warm_child_runs_on_its_own_omp_num_threads(tmp_path):
    """The server read OMP_NUM_THREADS when torch loaded; a child given another count runs on it, as a fresh
    process started with it would (two counts, so one of them differs from the server's)."""
    pkg = tmp_path / "probe"
    pkg.mkdir()
    name = write_module(pkg, "import torch\nprint('threads', torch.get_num_threads())\n")
    sys.path.insert(0, str(pkg))
    try:
        for want, given in (("1", "1"), ("2", "2"), ("2", " 2,1")):  # libgomp's list: its first entry
            env = {**os.environ, "PYTHONPATH": str(pkg), "OMP_NUM_THREADS": given}
            res = warm.run_module(name, [], tmp_path / f"t{want}.log", tmp_path, env)
            assert res.returncode == 0 and f"threads {want}\n" in (tmp_path / f"t{want}.log").read_text()
    finally:
        sys.path.remove(str(pkg))


@pytest.mark.slow  # the fork server imports LLaMA-Factory
def test_a_child_finds_the_model_loaders_imports_done_and_the_servers_heap_frozen(tmp_path):
    """LLaMA-Factory's loader asks three auto classes for their model configs (every family's configuration
    module imported: 1.6-1.8 s a job); the server asked first, so a child's question imports nothing, the
    server's objects are out of the child's collections, and the collector is on in the child, set as every
    command sets it (filelib.collector)."""
    pkg = tmp_path / "probe"
    pkg.mkdir()
    name = write_module(
        pkg,
        "import gc, sys\n"
        "from transformers import AutoModelForImageTextToText, AutoModelForSeq2SeqLM, AutoModelForTextToWaveform\n"
        "before = set(sys.modules)\n"
        "for auto in (AutoModelForImageTextToText, AutoModelForSeq2SeqLM, AutoModelForTextToWaveform):\n"
        "    auto._model_mapping.keys()\n"
        "print('new modules', len(set(sys.modules) - before), 'frozen', gc.get_freeze_count(), gc.isenabled(), gc.get_threshold()[0])\n",
    )
    sys.path.insert(0, str(pkg))
    try:
        res = warm.run_module(name, [], tmp_path / "j.log", tmp_path, {**os.environ, "PYTHONPATH": str(pkg)})
    finally:
        sys.path.remove(str(pkg))
    log = (tmp_path / "j.log").read_text()
    assert res.returncode == 0, log
    (line,) = [x.split() for x in log.splitlines() if x.startswith("new modules ")]
    assert int(line[2]) == 0 and int(line[4]) > 100_000 and line[5] == "True", log
    assert int(line[6]) == YOUNG, log  # the collector as every command sets it (filelib.collector)


@pytest.mark.slow
def test_warm_and_fresh_training_give_the_same_weights(out_dir, tiny_model, tmp_path):
    """The same run trained by a fresh `llamafactory-cli` and by a warm child: identical adapters and losses."""
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"instruction": f"Say {i}.", "input": "", "output": f"{i} it is."} for i in range(8)]
    (data / "alpaca_top100.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(
        json.dumps({"alpaca_top100": {"file_name": "alpaca_top100.json"}})
    )
    common = ["--study", "rank", "--model", "tiny", "--no-eval", "--dataset-dir", str(data)]
    assert sweep.main([*common, "--only", "r4"]) == 0
    fresh = Run("tiny", "rank", "r4").output_dir
    moved = tmp_path / "fresh_r4"
    fresh.rename(moved)
    assert sweep.main([*common, "--only", "r4", "--warm"]) == 0
    log = (fresh / "train.log").read_text()
    assert "(warm start)" in log and "llamafactory-cli train" in log
    a = load_file(moved / "adapter_model.safetensors")
    b = load_file(fresh / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    rec_fresh = json.loads((moved / "run.json").read_text())
    rec_warm = json.loads((fresh / "run.json").read_text())
    assert rec_warm["status"] == "finished" and rec_warm["peak_rss_mb"] > 100
    assert rec_warm["final_loss"] == rec_fresh["final_loss"] and (fresh / "DONE").exists()


@pytest.mark.slow  # the fork server imports LLaMA-Factory
def test_the_callers_stdout_reaches_the_child_when_kept(tmp_path):
    """A fork server's child inherits the server's streams: the caller's stdout must travel with the job."""
    pkg = tmp_path / "probe"
    pkg.mkdir()
    name = write_module(pkg, "print('status line for the user')\n")
    out = tmp_path / "caller_stdout.txt"
    sys.path.insert(0, str(pkg))
    saved = os.dup(1)
    try:
        with open(out, "w") as f:
            os.dup2(f.fileno(), 1)  # the caller's stdout is this file now
            res = warm.run_module(
                name, [], tmp_path / "d.log", tmp_path, {"PYTHONPATH": str(pkg)}, keep_stdout=True
            )
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        sys.path.remove(str(pkg))
    assert res.returncode == 0 and out.read_text() == "status line for the user\n"
    assert "status line" not in (tmp_path / "d.log").read_text()


@pytest.mark.slow  # a command's process and its fork server
def test_a_job_does_not_import_its_callers_main_module_again(tmp_path):
    """multiprocessing has a child import its parent's `__main__` before the target runs; a job runs its
    own module by name, so a command's module (`python -m tools.flows.demo`, say) is not imported a second
    time in each of its jobs. The server here preloads nothing: the mechanism, not LLaMA-Factory."""
    pkg = tmp_path / "probe"
    pkg.mkdir()
    (pkg / "caller_probe.py").write_text(
        "import os, sys\n"
        "from pathlib import Path\n"
        "with open(os.environ['PROBE_FILE'], 'a') as f:\n"
        "    f.write(f'caller imported as {__name__}\\n')\n"
        "if __name__ == '__main__':\n"
        "    from tools.core import warm\n"
        "    warm.PRELOAD = []\n"
        "    res = warm.run_module('job_probe', [], Path(sys.argv[1]), Path.cwd(), dict(os.environ))\n"
        "    raise SystemExit(res.returncode)\n"
    )
    (pkg / "job_probe.py").write_text("print('job ran', __name__)\n")
    probe, log = tmp_path / "imports.txt", tmp_path / "job.log"
    env = {**os.environ, "PYTHONPATH": f"{pkg}{os.pathsep}{ROOT}", "PROBE_FILE": str(probe)}
    env["SMALLDATA_OUT"] = str(tmp_path / "out")
    proc = subprocess.run(
        [sys.executable, "-m", "caller_probe", str(log)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert probe.read_text() == "caller imported as __main__\n"
    text = log.read_text()
    assert "job ran __main__" in text and "Warning" not in text, text
