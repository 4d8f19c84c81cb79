"""tools.bench.gpu on a machine without a GPU: a refusal (exit 2, one line), not a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tools.bench import gpu
from tools.core.runinfo import command_of

ROOT = Path(__file__).resolve().parents[2]


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU: the benchmark would run")
def test_no_gpu_is_a_one_line_refusal(tmp_path):
    p = subprocess.run(
        [*command_of(gpu.main), "--ranks", "4", "--steps", "1", "--workdir", str(tmp_path / "w")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, p.stderr
    assert "needs a CUDA GPU" in lines[0] and "make bench" in lines[0]
    assert not (tmp_path / "w").exists()  # nothing written before the refusal


def test_no_gpu_in_process(monkeypatch, capsys, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(["--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA GPU" in err
