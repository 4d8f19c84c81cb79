"""The method study's whole family trains: LLaMA-Factory's own methods and the PEFT types of plugins.launchers.

Each variant is rendered from templates/studies/method.yaml for the tiny profile and trained by the sweep's
own trainer as `--warm` trains (a real `llamafactory-cli train`, or `python -m plugins.launchers` for a
`peft_type`, forked from one process that imported LLaMA-Factory once for the test session), STEPS
steps at cutoff 128 on one batch of two rows, at a constant learning rate above zero from the first step
(no warm-up: the study's `warmup_steps: 0.1` of 2 steps made the first step run at 0), so each method shows
that it learns: its logged loss on its training rows falls below the first, and the trained model's logits
move by more than LOGIT_MOVE from the base's. The adapters of the other types (AdaLoRA, VeRA, LoHa, LoKr,
OFT) are then loaded by generation and merged by export, unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plugins.launchers import launch, peft_types
from tools.core.paths import Run
from tools.flows import sweep
from tools.train import trainable_params
from tools.train.configs import render_study, skipped_variants, variant_names

ADAPTER_TYPES = {"adalora": "ADALORA", "vera": "VERA", "loha": "LOHA", "lokr": "LOKR", "oft": "OFT"}
FULL_MODEL = ("freeze", "full", "galore", "apollo", "badam", "llama_pro")
TINY_VARIANTS = variant_names("method", "tiny")  # at collection: nothing rendered
STEPS = 6
# One learning rate for every method on the random tiny model (the study's 1e-5 for whole-model methods
# protects a pretrained model; here it would take hundreds of steps to show), constant, no warm-up.
LEARN = {"warmup_steps": 0, "max_steps_cap": STEPS, "learning_rate": 1.0e-3, "lr_scheduler_type": "constant"}
# VeRA trains only scaling vectors (its paper uses ~10x LoRA's rates); AdaLoRA's update B.E.A starts from E = 0.
LEARN_RATE = {"vera": 1.0e-2, "adalora": 5.0e-3}
LOGIT_MOVE = 1e-3  # the least largest |logit change| on a training row that a trained method must show
ROWS = [
    {"instruction": f"Write {i} in words.", "input": "", "output": f"It is {i}, just {i}."} for i in range(2)
]


@pytest.fixture()
def method_data(tmp_path) -> Path:
    """The method study's dataset name over 2 tiny rows (one batch: every step sees the same rows, so its
    logged losses compare), so the test needs no `make data`."""
    d = tmp_path / "data"
    d.mkdir()
    rows = ROWS
    (d / "alpaca_top100.json").write_text(json.dumps(rows))
    (d / "dataset_info.json").write_text(json.dumps({"alpaca_top100": {"file_name": "alpaca_top100.json"}}))
    return d


# ------------------------------------------------------------------------------------ fast
def test_every_method_renders_with_its_why_and_only_its_own_keys():
    rendered = {r.run.variant: r for r in render_study("method", "llama2_7b")}
    assert {"adalora", "vera", "loha", "lokr", "oft", "freeze", "full", "galore", "apollo", "badam"} <= set(
        rendered
    )
    for name, r in rendered.items():
        assert "#   this variant: `" + name + "`" in r.text  # each variant's own why heads its file
    assert rendered["adalora"].config["peft_type"] == "adalora"
    assert (
        "python -m plugins.launchers experiments/method/llama2_7b_lora_sft_vera.yaml" in rendered["vera"].text
    )
    assert "peft_type" not in rendered["lora"].config and "llamafactory-cli train" in rendered["lora"].text
    assert rendered["oft"].config["finetuning_type"] == "oft" and "use_rslora" not in rendered["oft"].config
    full = rendered["galore"].config
    assert full["finetuning_type"] == "full" and full["use_galore"] and full["optim"] == "adamw_torch"
    assert "lora_rank" not in full and full["learning_rate"] == 1.0e-5
    assert rendered["freeze"].config["freeze_trainable_layers"] == 2
    pro = rendered["llama_pro"]
    assert pro.config["model_name_or_path"] == "models/llama2_7b_pro8" and pro.config["use_llama_pro"]
    assert pro.config["freeze_trainable_layers"] == 8 and "--blocks 8 --out models/llama2_7b_pro8" in pro.text
    assert "llama_pro" in skipped_variants("method", "llama2_7b_t4") and "loha" in skipped_variants(
        "method", "llama2_7b_t4"
    )
    assert rendered["badam"].config["use_badam"] and rendered["apollo"].config["use_apollo"]
    assert "qlora" in skipped_variants("method", "tiny")


def test_the_launcher_strips_peft_type_and_refuses_bad_ones(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stage: sft\nfinetuning_type: lora\npeft_type: vera\nlora_rank: 8\n")
    args, kind = launch.prepare(cfg, ["lora_rank=16"])
    assert kind == "vera" and "peft_type" not in args and args["lora_rank"] == 16
    cfg.write_text("finetuning_type: lora\npeft_type: ia3\n")
    assert launch.main([str(cfg)]) == 2
    assert "peft_type = 'ia3': use one of lora, adalora, vera, loha, lokr" in capsys.readouterr().err
    cfg.write_text("finetuning_type: full\npeft_type: loha\n")
    assert launch.main([str(cfg)]) == 2
    assert "needs finetuning_type: lora" in capsys.readouterr().err


def test_lora_config_becomes_each_type_with_its_targets_rank_and_schedule():
    from peft import LoraConfig, TaskType

    lora = LoraConfig(task_type=TaskType.CAUSAL_LM, r=8, lora_alpha=16, target_modules={"q_proj", "v_proj"})
    ada = peft_types.convert_config(lora, "adalora", total_step=10)
    assert (ada.init_r, ada.target_r, ada.total_step, ada.tinit, ada.tfinal) == (12, 8, 10, 1, 2)
    assert sorted(ada.target_modules) == ["q_proj", "v_proj"]
    assert peft_types.convert_config(lora, "vera").save_projection is True
    assert peft_types.convert_config(lora, "lokr").alpha == 16
    assert peft_types.convert_config(lora, "lora") is lora
    assert peft_types.adalora_schedule(2) == {"tinit": 0, "tfinal": 1, "deltaT": 1}


def test_the_tests_learn_from_the_first_step():
    """Rendered with LEARN, each method's first step has a learning rate above zero (the study's
    `warmup_steps: 0.1` of a 2-step run warmed up over the whole first step)."""
    for r in render_study("method", "tiny", LEARN):
        cfg = r.config
        assert (
            cfg["warmup_steps"] == 0 and cfg["learning_rate"] > 0 and cfg["lr_scheduler_type"] == "constant"
        )
        assert cfg["max_steps"] == STEPS


def test_learning_is_read_from_the_run_log(tmp_path):
    from tools.train.trainstats import learning, step_stats

    (tmp_path / "trainer_log.jsonl").write_text(
        "\n".join(json.dumps({"current_steps": i + 1, "loss": x}) for i, x in enumerate([10.78, 10.5, 9.9]))
    )
    assert learning(tmp_path) == {"first_loss": 10.78, "final_loss": 9.9, "learned": True}
    assert step_stats(tmp_path)["learned"] is True
    (tmp_path / "trainer_log.jsonl").write_text('{"loss": 10.7795}\n{"loss": 10.7795}\n')
    assert learning(tmp_path)["learned"] is False  # the same loss twice: nothing learned
    assert learning(tmp_path / "nowhere") == {}


def logit_change(run: Run, base_path: Path, full_model: bool) -> float:
    """The largest |logit change| the trained run makes on its training rows, against its base model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_path)
    ids = tok([f"{r['instruction']} {r['output']}" for r in ROWS], return_tensors="pt", padding=True)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
    if full_model:
        trained = AutoModelForCausalLM.from_pretrained(run.output_dir, dtype=torch.float32).eval()
    else:
        fresh = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        trained = PeftModel.from_pretrained(fresh, run.output_dir).eval()
    with torch.no_grad():
        return float((trained(**ids).logits - base(**ids).logits).abs().max())


def test_trainable_params_are_read_from_the_last_loader_line(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "x >> trainable params: 1,000 || all params: 9,000 || trainable%: 11.1111\n"
        "resumed >> trainable params: 36,992 || all params: 3,219,776 || trainable%: 1.1489\n"
    )
    assert trainable_params(log) == {
        "trainable_params": 36992,
        "all_params": 3219776,
        "trainable_pct": 1.1489,
    }
    assert trainable_params(tmp_path / "none.log") == {}


# ------------------------------------------------------------------------------------ slow
@pytest.mark.slow
@pytest.mark.usefixtures("llamafactory_in_process")  # the adapters' exports merge in this process
@pytest.mark.parametrize("variant", TINY_VARIANTS)
def test_every_method_trains_on_the_tiny_model(variant, out_dir, tiny_model, method_data, tmp_path):
    overrides, base_path = dict(LEARN), tiny_model
    overrides["learning_rate"] = LEARN_RATE.get(variant, LEARN["learning_rate"])
    if variant == "llama_pro":  # the expanded model the config names, built here (2 layers + 2 blocks)
        from tools.models.llama_pro import expand

        base_path = expand(str(tiny_model), 2, tmp_path / "tiny_pro2")
        overrides["llama_pro_model"] = str(base_path)
    (job,) = sweep.plan("method", "tiny", dataset_dir=method_data, only=[variant], overrides=overrides)
    job["warm"] = True  # as the sweep's --warm: a child of the test process's fork server, same log
    res = sweep.train_one(job)
    run = Run("tiny", "method", variant)
    assert res["status"] == "finished", run.log.read_text()[-3000:]
    rec = json.loads(run.run_json.read_text())
    assert rec["train_steps"] == STEPS and rec["s_per_step"] > 0 and rec["final_loss"] > 0
    assert 0 < rec["trainable_params"] <= rec["all_params"] and run.is_finished()
    # it learned: the loss on its (only) batch fell from the first step to the last, and the model moved
    assert rec["learned"] and rec["final_loss"] < rec["first_loss"], (rec["first_loss"], rec["final_loss"])
    moved = logit_change(run, Path(base_path), variant in FULL_MODEL)
    assert moved > LOGIT_MOVE, f"{variant}: logits moved by at most {moved:.2e}"
    log = run.log.read_text()
    if variant in FULL_MODEL:  # a whole model, no adapter
        assert run.is_full_model and not run.adapter.exists()
        if variant == "full":
            assert rec["trainable_params"] == rec["all_params"]
            from tools.export.export import main as export

            assert export(["--run", run.name]) == 2  # nothing to merge: said, nothing written
            assert not run.export_dir.exists()
            from tools.eval.generate import main as generate

            argv = ["--run", run.name, "--testset", "demo_eval", "--limit", "1", "--max-new-tokens", "2"]
            assert generate(argv) == 0  # the run folder is loaded as the model itself
            gen = json.loads((run.eval_dir("demo_eval", "greedy") / "generation.json").read_text())
            assert json.dumps(gen).count(str(run.output_dir)) >= 1
        if variant in (
            "freeze",
            "llama_pro",
        ):  # 2 decoder layers (the last / the new ones), not the embeddings
            assert rec["trainable_params"] < rec["all_params"] / 2
        if variant == "llama_pro":
            assert "Set trainable layers: .1.,.3." in log  # LLaMA-Factory found the two new blocks
        return
    adapter = json.loads((run.output_dir / "adapter_config.json").read_text())
    assert adapter["peft_type"] == ADAPTER_TYPES.get(variant, "LORA")  # the adapter names its own type
    if variant in ("adalora", "vera", "loha", "lokr"):
        assert f"plugins.launchers: peft_type {variant}" in log and "-m plugins.launchers" in log
    if variant == "adalora":  # the rank schedule ran: total from the trainer, final allocation saved
        assert adapter["total_step"] == STEPS and adapter["rank_pattern"]
    if variant in ADAPTER_TYPES:  # generation and export load (and merge) them unchanged
        from tools.eval.generate import main as generate
        from tools.export.export import main as export

        argv = ["--run", run.name, "--testset", "demo_eval", "--limit", "2", "--max-new-tokens", "4"]
        assert generate(argv) == 0
        rows = [json.loads(x) for x in run.predictions("demo_eval", "greedy").read_text().splitlines()]
        assert len(rows) == 2 and all("answer" in r for r in rows)
        assert export(["--run", run.name]) == 0
        assert (run.export_dir / "config.json").exists() and (run.export_dir / "export.json").exists()
