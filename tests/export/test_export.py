"""Export: the rendered YAML, LLaMA-Factory's export (in this process; the CLI checked against it), the
logit check and its refusals (tiny model)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tools.core import warm
from tools.core.paths import ROOT, llamafactory_cli
from tools.export import export
from tools.export.export import CheckFailed, Refused, Run

RUN = Run("tiny", "t", "a")


def train_tiny_adapter(model: Path, dest: Path, lr: float = 5e-3, steps: int = 4, rank: int = 8) -> Path:
    """A real LoRA run of a few steps with `llamafactory-cli train`, given a run.json and DONE like a sweep's.
    Trained as the sweep's --warm trains: a child of the test process's fork server, which imports
    LLaMA-Factory once for every test that trains (a fresh process where there is no fork)."""
    from tools.models.tiny import TINY_MODEL_DIR
    from tools.train.smoke import doc_rows, write_config

    data = dest.parent / f".{dest.name}-data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "smoke_docs.json").write_text(json.dumps(doc_rows(8)))
    (data / "dataset_info.json").write_text(json.dumps({"smoke_docs": {"file_name": "smoke_docs.json"}}))
    cfg_path = write_config(model, steps, dest, data, lr)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg.update(lora_rank=rank, lora_alpha=2 * rank, report_to="none", per_device_train_batch_size=2)
    cfg_path.write_text(yaml.safe_dump(cfg))
    if warm.available():
        log = data / "train.log"
        with pytest.MonkeyPatch.context() as m:
            m.setenv("SMALLDATA_OUT", str(data))  # a server started here logs there, not in the repo's cache/
            rc = warm.run_module("llamafactory.cli", ["train", str(cfg_path)], log, ROOT).returncode
        out = log.read_text()
    else:
        proc = subprocess.run([*llamafactory_cli(), "train", str(cfg_path)], capture_output=True, text=True)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    assert rc == 0, out[-6000:]
    run = Run.parse(str(dest))
    rel = "models/tiny-smollm2" if Path(model).resolve() == TINY_MODEL_DIR.resolve() else str(model)
    (dest / "run.json").write_text(
        json.dumps(
            {
                "run": run.name,
                "model": run.model,
                "study": run.study,
                "variant": run.variant,
                "model_name_or_path": rel,
                "template": "smollm2",
                "status": "finished",
                "resolved_config": {**cfg, "dataset_dir": str(data)},
                "hparams": {"lora_rank": rank, "learning_rate": lr},
            }
        )
    )
    (dest / "DONE").write_text("done\n")
    return dest


@pytest.fixture()
def trained(tiny_trained) -> Path:
    """The session's tiny run (tests/export/conftest.py); each test copies it into its own root (install)."""
    return tiny_trained


def install(src_root: Path, out_dir: Path) -> None:
    shutil.copytree(src_root / "saves", out_dir / "saves", dirs_exist_ok=True)


def fake_finished_run(
    out_dir: Path, run: Run = RUN, base: str = "models/tiny-smollm2", rank: int = 8, **run_json
) -> Run:
    """Files only (no weights: a safetensors file holding no tensor): enough for rendering and
    refusals, which must not load a model."""
    d = run.output_dir
    d.mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
    (d / "adapter_config.json").write_text(json.dumps({"r": rank, "base_model_name_or_path": base}))
    rj = {"model_name_or_path": base, "template": "smollm2", "status": "finished", **run_json}
    (d / "run.json").write_text(json.dumps(rj))
    (d / "DONE").write_text("")
    return run


def test_export_yaml_is_llamafactory_valid(out_dir):
    from llamafactory.hparams import get_infer_args

    run = fake_finished_run(out_dir)
    info = export.run_info(run)
    text = export.render_config(run, info, run.export_dir)
    assert (
        text.startswith("# Rendered from templates/export.yaml.j2")
        and "python -m tools.export --run tiny/t/a" in text
    )
    model_args, _, finetuning_args, _ = get_infer_args(yaml.safe_load(text))
    assert model_args.adapter_name_or_path == [str(run.output_dir)]
    assert model_args.export_dir == str(run.export_dir) and model_args.infer_dtype == "float32"
    assert model_args.export_quantization_bit is None and finetuning_args.finetuning_type == "lora"


def test_quantised_export_yaml_is_llamafactory_valid(out_dir, tmp_path):
    """GPTQ is a second step on the merged model: no adapter, bits + a calibration file with `text`."""
    from llamafactory.hparams import get_infer_args

    data = tmp_path / "ds"
    data.mkdir()
    (data / "rows.json").write_text(
        json.dumps([{"instruction": "Say hi.", "input": "", "output": "Hi!"}] * 3)
    )
    (data / "dataset_info.json").write_text(json.dumps({"train100": {"file_name": "rows.json"}}))
    run = fake_finished_run(
        out_dir, resolved_config={"dataset": "train100", "dataset_dir": str(data), "bf16": True}
    )
    info = export.run_info(run)
    assert export.default_dtype(info) == "bfloat16"
    cal = export.calibration_file(run, info, 64, tmp_path / "cal.jsonl")
    texts = [json.loads(line)["text"] for line in cal.read_text().splitlines()]
    assert texts and all(len(t) > 64 * 6 for t in texts) and "Say hi." in texts[0]
    text = export.render_config(
        run,
        info,
        export.quantised_dir(run, 4),
        device="auto",
        quantization_bit=4,
        quantization_dataset=str(cal),
    )
    model_args, *_ = get_infer_args(yaml.safe_load(text))
    assert model_args.export_quantization_bit == 4 and model_args.export_quantization_dataset == str(cal)
    assert model_args.adapter_name_or_path is None and model_args.model_name_or_path == str(run.export_dir)
    assert model_args.export_quantization_maxlen == 512 and model_args.export_device == "auto"
    with pytest.raises(Refused, match="calibration dataset"):
        export.render_config(run, info, run.export_dir, quantization_bit=4)
    # Without training rows to calibrate on, the user is told to name a file.
    bare = fake_finished_run(out_dir, Run("tiny", "t", "bare"))
    with pytest.raises(Refused, match="--quant-dataset"):
        export.calibration_file(bare, export.run_info(bare), 64, tmp_path / "x.jsonl")


def test_refusals_write_nothing(out_dir):
    with pytest.raises(Refused, match="no output folder"):
        export.export_run(Run("tiny", "t", "missing"))
    run = fake_finished_run(out_dir)
    (run.done_marker).unlink()
    with pytest.raises(Refused, match="not finished.*DONE"):
        export.export_run(run)
    qlora = fake_finished_run(out_dir, Run("tiny", "t", "qlora"), resolved_config={"quantization_bit": 4})
    with pytest.raises(Refused, match="4-bit quantised base"):
        export.export_run(qlora)
    assert export.main(["--run", "tiny/t/qlora"]) == 2
    moved = fake_finished_run(out_dir, Run("tiny", "t", "moved"), model_name_or_path="org/other-model")
    with pytest.raises(Refused, match="adapter of another base model"):
        export.export_run(moved)
    stacked = fake_finished_run(
        out_dir,
        Run("tiny", "t", "stacked"),
        resolved_config={"adapter_name_or_path": "saves/x", "create_new_adapter": True},
    )
    with pytest.raises(Refused, match="stacks a new adapter"):
        export.export_run(stacked)
    quant_base = out_dir / "gptq-base"
    quant_base.mkdir()
    (quant_base / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "gptq"}}))
    onq = fake_finished_run(out_dir, Run("tiny", "t", "onq"), base=str(quant_base))
    with pytest.raises(Refused, match="is quantised"):
        export.export_run(onq, full_precision_base=True)
    assert not (out_dir / "exports").exists()


@pytest.mark.slow
def test_export_merges_and_passes_logit_check(trained, out_dir, monkeypatch):
    install(trained, out_dir)
    assert export.main(["--study", "t", "--model", "tiny"]) == 0  # every finished run of the study
    final = RUN.export_dir
    rec = json.loads((final / "export.json").read_text())
    check = rec["check"]
    assert check["passed"] and check["max_abs_diff"] <= check["tolerance"] == export.TOLERANCE["float32"]
    # The adapter moves logits far beyond the tolerance, so agreement is evidence, not an accident.
    assert check["check_is_informative"] and check["adapter_effect"] > 100 * check["tolerance"]
    assert check["prompts"] == export.CHECK_PROMPTS and rec["dtype"] == "float32"
    assert (final / "model.safetensors").exists() and (final / "export.yaml").exists()
    assert yaml.safe_load((RUN.output_dir / "export.yaml").read_text())["export_dir"] == str(final)
    assert [p.name for p in final.parent.iterdir()] == ["a"]  # no temporary folder left beside it

    # Exporting again is a no-op while the adapter is unchanged.
    def boom(*a, **k):
        raise AssertionError("re-exported an unchanged run")

    monkeypatch.setattr(export, "llamafactory_export", boom)
    assert export.export_run(RUN)["adapter_sha256"] == rec["adapter_sha256"]
    assert export.main(["--run", str(RUN)]) == 0


@pytest.mark.slow
def test_corrupted_adapter_is_caught_and_leaves_nothing(trained, out_dir, monkeypatch):
    """The adapter changes between merging and checking: the check fails, exports/ stays empty."""
    import torch
    from safetensors.torch import load_file, save_file

    install(trained, out_dir)
    real = export.llamafactory_export

    def merge_then_tamper(config, export_dir, log):
        real(config, export_dir, log)
        weights = load_file(RUN.adapter)
        save_file({k: v * 3 if "lora_B" in k else v for k, v in weights.items()}, RUN.adapter)
        assert any("lora_B" in k and torch.count_nonzero(v) for k, v in weights.items())

    monkeypatch.setattr(export, "llamafactory_export", merge_then_tamper)
    with pytest.raises(CheckFailed, match="differs from base\\+adapter"):
        export.export_run(RUN)
    assert not (out_dir / "exports").exists()


@pytest.mark.slow
def test_export_in_a_warm_process_matches_the_cli(trained, out_dir, monkeypatch):
    """Where LLaMA-Factory is imported already (a warm child), its export runs in the process: the same
    merged weights as `llamafactory-cli export` in a child, and the same logit check."""
    import sys

    from safetensors.torch import load_file

    install(trained, out_dir)
    with monkeypatch.context() as m:
        m.delitem(sys.modules, "llamafactory.train.tuner", raising=False)
        export.export_run(RUN)
    log = RUN.adapter_dir / "export.log"
    assert log.read_text().startswith("$ ") and "llamafactory-cli" in log.read_text().splitlines()[0]
    by_cli = load_file(RUN.export_dir / "model.safetensors")
    import llamafactory.train.tuner  # noqa: F401

    rec = export.export_run(RUN, force=True)
    assert "in this process" in log.read_text().splitlines()[0] and rec["check"]["passed"]
    here = load_file(RUN.export_dir / "model.safetensors")
    assert by_cli.keys() == here.keys() and all((by_cli[k] == here[k]).all() for k in here)
