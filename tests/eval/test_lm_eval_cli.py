"""The shipped lm-eval task runs through lm-eval's own CLI from the repo root (issue 32): its data file is
found beside the YAML, not in the working directory. Tiny model, 4 questions, offline."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lm_eval() -> list[str]:
    exe = Path(sys.executable).with_name("lm_eval")
    if not exe.exists():
        pytest.skip("lm-eval's CLI is not installed in this venv")
    return [sys.executable, str(exe)]  # not exec'd: a moved venv's scripts keep an old #! line


@pytest.mark.slow  # lm-eval's CLI in a fresh process
@pytest.mark.parametrize("where", ["root", "elsewhere"])
def test_lm_eval_cli_runs_the_shipped_task(tiny_model, tmp_path, where):
    import subprocess

    cwd = ROOT if where == "root" else tmp_path
    include = "templates/zeroshot" if where == "root" else str(ROOT / "templates/zeroshot")
    out = tmp_path / "out"
    cmd = [
        *_lm_eval(),
        "--model", "hf",
        "--model_args", f"pretrained={tiny_model},dtype=float32",
        "--include_path", include,
        "--tasks", "python_mc",
        "--limit", "4",
        "--device", "cpu",
        "--batch_size", "4",
        "--output_path", str(out),
    ]  # fmt: skip
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "ds"),
    }
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "FileNotFoundError" not in p.stderr
    results = [json.loads(f.read_text()) for f in out.rglob("results_*.json")]
    assert results, p.stdout[-2000:]
    task = results[0]["results"]["python_mc"]
    assert 0.0 <= task["acc,none"] <= 1.0
    assert results[0]["n-samples"]["python_mc"]["effective"] == 4
    shutil.rmtree(tmp_path / "ds", ignore_errors=True)


def test_our_own_zeroshot_still_reads_the_task_config():
    from tools.eval.zeroshot import local_task_config

    cfg = local_task_config("python_mc")
    assert "custom_dataset" not in cfg
    assert Path(cfg["dataset_kwargs"]["data_files"]["test"]).is_file()
