"""Pruned models: structured pruning with different widths per layer, the pickle opt-in, the safe format,
the HF folder for uniform widths, the launcher's config handling and the recovery study's rendering."""

from __future__ import annotations

import json

import pytest
import yaml

from plugins.launchers import PROJECT_KEYS, pruned, split_config
from plugins.launchers import launch_main as launcher_main
from tools.core.paths import ROOT


def _logits(model, tokenizer, text="def reverse(s): return s[::-1]"):
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture()
def tiny_pruned(tiny_model):
    """The tiny model pruned non-uniformly: (model, tokenizer, info)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tools.models.prune import prune

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    info = prune(model, mlp_ratio=0.3, head_ratio=0.5, skip_first=0, skip_last=0)
    return model, AutoTokenizer.from_pretrained(tiny_model), info


def test_pruning_removes_different_amounts_per_layer(tiny_pruned):
    model, tokenizer, info = tiny_pruned
    widths = pruned.layer_widths(model)
    assert widths[0]["intermediate_size"] != widths[1]["intermediate_size"]  # 128 - 19, 128 - 58
    assert [w["intermediate_size"] for w in widths] == [109, 70]
    assert all(w["num_key_value_heads"] == 1 and w["num_attention_heads"] == 2 for w in widths)
    assert pruned.uniform_widths(model) is None
    assert info["params_after"] == pruned.param_count(model) < info["params_before"]
    out = model.generate(tokenizer("x", return_tensors="pt").input_ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] >= 2  # the narrower layers run end to end, cache included


def test_a_pickle_loads_only_with_the_opt_in(tiny_pruned, tmp_path):
    model, tokenizer, _ = tiny_pruned
    path = pruned.save_pickle(model, tokenizer, tmp_path / "pruned_model.bin")
    with pytest.raises(pruned.PrunedModelError, match="runs code from the file.*--trust-pickle"):
        pruned.load(path)
    again, tok, kind = pruned.load(path, trust_pickle=True)
    assert kind == "pickle" and pruned.layer_widths(again) == pruned.layer_widths(model)
    assert (_logits(again, tok) - _logits(model, tokenizer)).abs().max() == 0


def test_the_safe_format_rebuilds_each_layer_width_and_the_logits(tiny_pruned, tmp_path):
    model, tokenizer, _ = tiny_pruned
    folder = pruned.save_safe(model, tokenizer, tmp_path / "safe")
    man = json.loads((folder / pruned.MANIFEST).read_text())
    assert man["layers"] == pruned.layer_widths(model) and not (folder / "config.json").exists()
    again, tok, kind = pruned.load(folder)  # no flag needed: tensors and JSON only
    assert kind == "safe"
    assert (_logits(again, tok) - _logits(model, tokenizer)).abs().max() < 1e-5
    man["layers"][0]["intermediate_size"] += 1
    (folder / pruned.MANIFEST).write_text(json.dumps(man))
    with pytest.raises(Exception, match="size mismatch|does not match"):
        pruned.load(folder)


def test_uniform_widths_also_give_a_plain_hf_folder(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tools.models.prune import prune_layer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for layer in model.model.layers:
        prune_layer(layer, drop_groups=1, drop_channels=32)
    assert pruned.uniform_widths(model) == {
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 96,
    }
    hf = pruned.save_hf(model, tokenizer, tmp_path / "hf")
    assert json.loads((hf / "config.json").read_text())["intermediate_size"] == 96
    plain = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    assert (_logits(plain, tokenizer) - _logits(model, tokenizer)).abs().max() < 1e-5
    assert model.config.intermediate_size == 128  # the module's own config is left as it was


def test_the_launcher_refuses_a_pickle_without_the_flag(tiny_pruned, tmp_path, capsys):
    model, tokenizer, _ = tiny_pruned
    path = pruned.save_pickle(model, tokenizer, tmp_path / "pruned_model.bin")
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"model_name_or_path": str(path), "launcher": "plugins.launchers"}))
    assert launcher_main([str(cfg)]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    cfg.write_text(yaml.safe_dump({"model_name_or_path": str(tmp_path), "trust_pickle": True}))
    assert launcher_main([str(cfg)]) == 2
    assert "is not pruned" in capsys.readouterr().err


def test_our_keys_are_split_from_llamafactorys():
    lf, ours = split_config(
        {
            "model_name_or_path": "m",
            "launcher": "plugins.launchers",
            "trust_pickle": True,
            "peft_type": "vera",
        }
    )
    assert lf == {"model_name_or_path": "m"} and set(ours) == set(PROJECT_KEYS)


def test_the_recovery_study_renders_the_issue_defaults():
    from tools.train.configs import render_study

    (gpu,) = render_study("recovery", "llama2_7b")
    c = gpu.config
    assert gpu.run.variant == "alpaca_cleaned" and c["dataset"] == "alpaca_cleaned" and c["val_size"] == 2000
    assert (c["lora_rank"], c["lora_alpha"], c["lora_dropout"], c["learning_rate"]) == (8, 16, 0.05, 1e-4)
    assert c["lora_target"].split(",") == [f"{m}_proj" for m in ("q", "k", "v", "o", "gate", "up", "down")]
    assert c["per_device_train_batch_size"] * c["gradient_accumulation_steps"] == 64
    assert (c["num_train_epochs"], c["cutoff_len"], c["train_on_prompt"], c["template"]) == (
        2,
        256,
        False,
        "alpaca",
    )
    assert c["model_name_or_path"] == "saves/llama2_7b/pruned/pruned_model.bin"
    assert c["launcher"] == "plugins.launchers" and c["trust_pickle"] is True
    assert "python -m plugins.launchers experiments/recovery/" in gpu.text
    (cpu,) = render_study("recovery", "smollm2_135m")
    assert cpu.run.variant == "demo_recovery" and cpu.config["dataset"] == "demo_recovery"
    # The rank study's keys, plus only the pruned model's launcher keys and its validation split (in place
    # of the dev set the other studies validate on).
    (rank,) = render_study("rank", "llama2_7b", only=["r8"])
    extra = {"launcher", "trust_pickle", "val_size"}
    assert set(c) - set(rank.config) == extra and set(rank.config) - set(c) == {"eval_dataset"}


def test_the_trainer_starts_the_launcher_a_config_names():
    from tools.train.trainstats import train_command

    cfg = {"launcher": "plugins.launchers"}
    assert train_command(cfg, ["llamafactory-cli"], "python", ROOT / "c.yaml")[1:3] == [
        "-m",
        "plugins.launchers",
    ]
    assert train_command({}, ["llamafactory-cli"], "python", ROOT / "c.yaml")[:2] == [
        "llamafactory-cli",
        "train",
    ]
    assert train_command({"peft_type": "vera"}, ["llamafactory-cli"], "python", ROOT / "c.yaml")[1:3] == [
        "-m",
        "plugins.launchers",
    ]
    with pytest.raises(ValueError, match="the one launcher is plugins.launchers"):
        train_command({"launcher": "os; rm -rf /"}, ["llamafactory-cli"], "python", ROOT / "c.yaml")


def test_llamafactorys_own_loader_gets_the_module_from_a_safe_folder(tiny_pruned, tmp_path, monkeypatch):
    """The seam: LLaMA-Factory's load_tokenizer/load_model, unchanged, return the pruned module with LoRA."""
    import llamafactory.model.loader as loader
    from llamafactory.hparams import get_train_args

    from plugins.launchers import install

    for name in ("AutoTokenizer", "AutoProcessor", "AutoConfig", "AutoModelForCausalLM"):
        monkeypatch.setattr(loader, name, getattr(loader, name))  # restored after the test
    model, tokenizer, _ = tiny_pruned
    folder = pruned.save_safe(model, tokenizer, tmp_path / "safe")
    install(folder)  # the safe format needs no opt-in
    cfg = {"model_name_or_path": str(folder), "stage": "sft", "do_train": True, "finetuning_type": "lora"}
    cfg.update(lora_target="all", dataset="demo_eval", dataset_dir=str(ROOT / "data"), template="alpaca")
    model_args, _, _, finetuning_args, _ = get_train_args({**cfg, "output_dir": str(tmp_path / "out")})
    tok = loader.load_tokenizer(model_args)["tokenizer"]
    lf_model = loader.load_model(tok, model_args, finetuning_args, is_trainable=True)
    assert pruned.layer_widths(lf_model.base_model.model) == pruned.layer_widths(model)
    trainable = {
        n.split(".")[-4] for n, p in lf_model.named_parameters() if p.requires_grad
    }  # q_proj.lora_A.default.weight
    assert trainable == {f"{m}_proj" for m in "q k v o gate up down".split()}
