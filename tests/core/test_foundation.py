"""The foundation: base model from the GGUF, tiny model, run paths, atomic files, a real smoke run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from filelib import append_jsonl, atomic_dir, atomic_write_json, read_jsonl
from tools.core.paths import ROOT, Run


def test_run_paths_follow_llamafactory_names(out_dir):
    run = Run.parse("smollm2_135m/rank/r8")
    assert run.config == ROOT / "experiments/rank/smollm2_135m_lora_sft_r8.yaml"
    assert run.output_dir == out_dir / "saves/smollm2_135m/lora/rank/r8"
    assert (
        run.predictions("demo_eval", "greedy") == run.output_dir / "eval/demo_eval/greedy/predictions.jsonl"
    )
    assert Run.parse(str(run.config)) == run
    assert Run.parse(str(run.output_dir)) == run
    with pytest.raises(ValueError, match="a run is named"):
        Run.parse("just-a-name")
    with pytest.raises(ValueError, match="bad variant"):
        Run("m", "s", "../etc")


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "half.bin").write_text("x")
        raise RuntimeError("killed")
    assert not final.exists() and list(tmp_path.iterdir()) == []


def test_jsonl_append_resumes_after_torn_line(tmp_path):
    path = tmp_path / "a.jsonl"
    append_jsonl(path, {"id": 1})
    with open(path, "a") as f:
        f.write('{"id": 2, "ans')  # a writer killed mid-line
    assert [r["id"] for r in read_jsonl(path)] == [1]
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}


def test_tiny_model_is_seeded_and_uses_real_tokenizer(tiny_model):
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert cfg.num_hidden_layers == 2 and cfg.vocab_size == len(tok) == 49152
    assert tok.eos_token == "<|im_end|>"
    assert tok.convert_tokens_to_ids("<|im_end|>") == cfg.eos_token_id


@pytest.mark.slow
def test_base_model_answers_coherently(base_model):
    from tools.models.base import greedy_answer

    assert json.loads((base_model / "BUILD_COMPLETE.json").read_text())["llamafactory_template"] == "smollm2"
    answer = greedy_answer(base_model, "What is the capital of France?")
    assert "Paris" in answer, answer


def test_llamafactory_has_the_template_we_use():
    from llamafactory.data.template import TEMPLATES

    tpl = TEMPLATES["smollm2"]
    assert "<|im_end|>" in tpl.stop_words


@pytest.mark.slow
def test_smoke_train_leaves_adapter_and_falling_loss(tiny_model, tmp_path):
    from tbparse import SummaryReader

    out = tmp_path / "smoke"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.train.smoke",
            "--model",
            str(tiny_model),
            "--steps",
            "8",
            "--lr",
            "2e-2",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    scalars = SummaryReader(str(out / "runs")).scalars
    loss = scalars[scalars.tag == "train/loss"].sort_values("step")["value"].tolist()
    assert len(loss) == 8
    # A random model at a high learning rate: the last steps must sit clearly below the first.
    assert sum(loss[-2:]) / 2 < sum(loss[:2]) / 2 - 0.05, loss


def test_a_model_build_waits_for_another_builder_then_finds_it_built(tmp_path, monkeypatch):
    """Two builders of one model (two test workers, two make targets) take turns: the second waits on the
    first's lock, then finds the model built instead of replacing the folder the first is reading."""
    import threading
    import time

    from filelib import build_lock
    from tools.models import tiny

    out, box, started, real = tmp_path / "tiny", {}, [], tiny._build
    monkeypatch.setattr(tiny, "_build", lambda *a: started.append(time.monotonic()) or real(*a))
    with build_lock(out):
        t = threading.Thread(target=lambda: box.update(path=tiny.build(out)), daemon=True)
        t.start()
        t.join(1.0)
        released = time.monotonic()
    t.join(120)
    assert box["path"] == out and (out / "config.json").exists()
    assert started and started[0] >= released  # it began only once the other builder let go
    stamp = (out / "BUILD_COMPLETE.json").stat().st_mtime_ns
    assert tiny.build(out) == out and (out / "BUILD_COMPLETE.json").stat().st_mtime_ns == stamp  # built once
