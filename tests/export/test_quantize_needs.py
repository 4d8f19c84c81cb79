"""A quantised export checks GPTQ's packages and GPU before it starts: refused with the commands that install
what is missing, nothing merged or written (tools/export/needs.py)."""

from __future__ import annotations

import json

from tools.core.paths import Run
from tools.export import needs
from tools.export.export import main as export


def finished_adapter_run(run: Run) -> None:
    """A run folder as a sweep leaves it (run.json, DONE, an adapter file): enough to be merged."""
    run.output_dir.mkdir(parents=True)
    (run.output_dir / "adapter_model.safetensors").write_bytes(b"")
    (run.output_dir / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    info = {"run": run.name, "status": "finished", "model_name_or_path": "models/tiny-smollm2"}
    (run.output_dir / "run.json").write_text(json.dumps({**info, "template": "smollm2"}))
    (run.output_dir / "DONE").write_text("done\n")


def test_quantize_is_refused_before_anything_is_written(out_dir, monkeypatch, capsys):
    run = Run("tiny", "t", "q")
    finished_adapter_run(run)
    before = sorted(p.relative_to(out_dir) for p in out_dir.rglob("*"))
    monkeypatch.setattr(needs, "_importable", lambda name: name != "optimum")
    monkeypatch.setattr(needs, "_cuda", lambda: False)
    assert export(["--run", run.name, "--quantize", "4"]) == 2
    err = capsys.readouterr().err
    assert "--quantize 4: GPTQ needs optimum>=1.24.0, not installed: make setup-gpu" in err
    assert "gptqmodel" not in err.split("(nothing")[0].split("GPU")[0]  # installed here: not named
    assert "CUDA GPU and there is none here" in err and "nothing was merged or written" in err
    assert (
        sorted(p.relative_to(out_dir) for p in out_dir.rglob("*")) == before
    )  # no export, YAML, calibration
    assert not (out_dir / "exports").exists()


def test_every_missing_need_is_named_at_once(monkeypatch):
    monkeypatch.setattr(needs, "_importable", lambda name: False)
    monkeypatch.setattr(needs, "_cuda", lambda: True)
    problems = needs.quantize_problems(4)
    assert [p.split(",")[0] for p in problems] == [
        "GPTQ needs optimum>=1.24.0",
        "GPTQ needs gptqmodel>=2.0.0",
    ]
    monkeypatch.setattr(needs, "_importable", lambda name: True)
    assert needs.quantize_problems(8) == []
