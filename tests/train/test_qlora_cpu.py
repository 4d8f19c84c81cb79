"""QLoRA on a CPU: bitsandbytes 0.50 runs 4-bit NF4 without CUDA (a pure-torch path), so the T4
profile's quantised setting trains for real here, through llamafactory-cli, on the tiny model."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tools.core.paths import ROOT, Run
from tools.flows import sweep


@pytest.fixture()
def bnb():
    try:
        import bitsandbytes
    except ImportError:
        pytest.skip("bitsandbytes is not installed (make setup-gpu installs the pinned GPU extras)")
    return bitsandbytes


def test_gpu_extras_are_pinned_once_and_installed_as_pinned():
    lock = [x.strip() for x in (ROOT / "requirements-gpu.lock").read_text().splitlines()]
    pins = sorted(x for x in lock if x and not x.startswith("#"))
    assert pins == ["bitsandbytes==0.50.2", "liger-kernel==0.8.5", "optimum==2.3.0"]
    extra = re.search(r"^gpu = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M)
    assert sorted(x.strip().strip('"') for x in extra[1].split(",")) == pins
    dry = subprocess.run(["make", "-n", "-o", "setup", "setup-gpu"], cwd=ROOT, capture_output=True, text=True)
    assert re.search(r"pip install -q -r requirements-gpu.lock", dry.stdout), dry.stdout
    try:
        import bitsandbytes
    except ImportError:
        return
    assert f"bitsandbytes=={bitsandbytes.__version__}" in pins


@pytest.mark.slow
def test_qlora_4bit_trains_on_the_tiny_model_on_cpu(bnb, tiny_model, out_dir, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"instruction": f"Spell {i}.", "input": "", "output": f"It is {i}."} for i in range(6)]
    (data / "q.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(json.dumps({"alpaca_top100": {"file_name": "q.json"}}))
    argv = ["--study", "rank", "--model", "tiny", "--only", "r8", "--no-eval", "--dataset-dir", str(data)]
    argv.append("--warm")  # a child of the test process's fork server
    assert sweep.main([*argv, "--set", "quantization_bit=4"]) == 0, capsys.readouterr().out
    run = Run("tiny", "rank", "r8")
    rec = json.loads(run.run_json.read_text())
    assert rec["status"] == "finished" and rec["resolved_config"]["quantization_bit"] == 4
    log = Path(rec["log"]).read_text()
    assert "Quantizing model to 4 bit with bitsandbytes" in log and "device: cpu" in log
    assert (run.output_dir / "adapter_model.safetensors").stat().st_size > 0
    # the estimate beside the measured peak: the 4-bit bill is below the fp32 one
    assert rec["memory_estimate"]["quantization_bit"] == 4
