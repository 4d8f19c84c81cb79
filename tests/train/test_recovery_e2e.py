"""Recovery of a pruned model, end to end on the tiny model: LoRA through LLaMA-Factory (the launcher),
resumed after a kill, merged, reloaded with the same logits; evaluated through lm-eval; one table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from plugins.launchers import pruned
from tools.core.paths import ROOT, Run
from tools.flows import sweep
from tools.train import last_checkpoint

RUN = Run("tiny", "recovery", "demo_recovery")


@pytest.fixture()
def recovery_setup(out_dir, tiny_model, tmp_path):
    """The recovery data in a private dataset_dir, and the tiny model pruned non-uniformly where the study looks."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tools.data.recovery import register_recovery_data
    from tools.models.prune import prune

    data = tmp_path / "data"
    register_recovery_data(dataset_dir=data)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    prune(model, mlp_ratio=0.3, head_ratio=0.5, skip_first=0, skip_last=0)
    path = out_dir / "saves" / "tiny" / "pruned" / "pruned_model.bin"
    pruned.save_pickle(model, AutoTokenizer.from_pretrained(tiny_model), path)
    return data, path


def _args(data) -> list[str]:
    return ["--study", "recovery", "--model", "tiny", "--no-eval", "--dataset-dir", str(data)] + [
        "--set",
        "max_steps_cap=3",
        "--set",
        "val_size=4",
    ]


@pytest.mark.slow
def test_a_pruned_model_trains_resumes_merges_and_reloads(recovery_setup, capsys):
    data, path = recovery_setup
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.flows.sweep", *_args(data)],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    try:
        while not last_checkpoint(RUN.output_dir):
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.time() < deadline, "timed out waiting for the first checkpoint"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and the launcher it started
        proc.wait()
    assert not RUN.is_finished()

    assert sweep.main([*_args(data), "--warm"]) == 0  # the resume: a warm child
    assert "resumed from checkpoint-" in capsys.readouterr().out
    rec = json.loads(RUN.run_json.read_text())
    assert rec["status"] == "finished" and rec["resumed_from"].startswith(str(RUN.output_dir / "checkpoint-"))
    assert rec["resolved_config"]["launcher"] == "plugins.launchers"
    assert json.loads((RUN.output_dir / "trainer_state.json").read_text())["global_step"] == 3
    assert "eval_loss" in json.loads(
        (RUN.output_dir / "all_results.json").read_text()
    )  # the validation split
    adapter = json.loads((RUN.output_dir / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == sorted(f"{m}_proj" for m in "q k v o gate up down".split())

    from tools.export.pruned import export_pruned

    record = export_pruned(RUN)
    assert record["passed"] and record["format"] == "pickle" and record["hf"].startswith("not written")
    assert record["adapter_effect"] > record["tolerance"]  # the check can tell an adapter from none
    # Reloaded from the export, the merged model gives the pruned module + adapter's logits.
    import torch
    from peft import PeftModel

    merged, tok, kind = pruned.load(RUN.export_dir / "pruned_model.bin", trust_pickle=True)
    base, _, _ = pruned.load(path, trust_pickle=True)
    with_adapter = PeftModel.from_pretrained(base, str(RUN.export_dir / "lora_adapter")).eval()
    ids = tok("def f(x): return x * 2", return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (merged.eval()(input_ids=ids).logits - with_adapter(input_ids=ids).logits).abs().max()
    assert kind == "pickle" and diff < 1e-4
    assert pruned.layer_widths(merged) == pruned.layer_widths(base)


@pytest.mark.slow
def test_one_stage_is_scored_through_lm_eval_on_the_local_task(recovery_setup, tmp_path):
    data, path = recovery_setup
    out = tmp_path / "pruned.json"
    cmd = [sys.executable, "-m", "tools.eval.recovery", "--model", str(path), "--stage", "pruned"]
    cmd += ["--out", str(out), "--dataset-dir", str(data), "--max-tokens", "512", "--new-tokens", "4"]
    refused = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--trust-pickle" in refused.stderr and not out.exists()
    done = subprocess.run([*cmd, "--trust-pickle"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["params"] == pruned.param_count(pruned.load(path, trust_pickle=True)[0])
    assert res["perplexity"]["local:demo_recovery_heldout"] > 1
    assert res["zero_shot"]["python_mc"]["n"] == 24 and 0 <= res["zero_shot"]["python_mc"]["acc"] <= 1
    assert res["speed"]["tokens_per_s"] > 0 and res["speed"]["new_tokens"] == 4 and res["peak_mem_mb"] > 0
