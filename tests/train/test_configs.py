"""Rendered configs: airtight, valid for LLaMA-Factory 0.9.5, committed fresh; bad input fails cleanly."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from tools.core import profiles
from tools.core.paths import EXPERIMENTS, ROOT
from tools.train import configs, template
from tools.train.configs import (
    ConfigError,
    check,
    load_profile,
    render_run,
    render_study,
)
from tools.train.template import yaml_scalar
from tools.train.validate import validate_config

SECTIONS = ["### model", "### method", "### dataset", "### output", "### train", "### eval"]


def committed_files() -> list[Path]:
    return sorted(p for m in configs.COMMITTED_PROFILES for p in EXPERIMENTS.glob(f"*/{m}_lora_sft_*.yaml"))


def test_profiles_name_model_template_and_description():
    for model in ("smollm2_135m", "llama2_7b", "llama2_7b_t4", "tiny"):
        prof = load_profile(model)
        assert {"model_name_or_path", "template", "description"} <= set(prof)
    assert load_profile("smollm2_135m")["template"] == "smollm2"
    assert load_profile("llama2_7b")["template"] == "llama2"
    t4 = load_profile("llama2_7b_t4")
    assert (t4["quantization_bit"], t4["precision"], t4["per_device_train_batch_size"]) == (4, "fp16", 1)
    assert t4["gradient_accumulation_steps"] == 4
    with pytest.raises(ConfigError, match="unknown profile 'gpt5'.*have: .*llama2_7b"):
        load_profile("gpt5")


def test_every_committed_file_passes_llamafactorys_parser():
    files = committed_files()
    assert len(files) >= 70  # 7 studies x 2 profiles
    for path in files:
        text = path.read_text()
        assert "{{" not in text and "{%" not in text, path
        validate_config(yaml.safe_load(text), str(path))


def test_committed_experiments_are_fresh():
    assert check() == []


def test_a_rendered_file_is_airtight_and_explains_itself():
    run, text = render_run("rank", "llama2_7b", "r16")
    assert run.name == "llama2_7b/rank/r16"
    assert text.startswith("# experiments/rank/llama2_7b_lora_sft_r16.yaml\n")
    assert "templates/train.yaml.j2" in text and "templates/studies/rank.yaml" in text
    assert "python -m tools.train.configs render --study rank --model llama2_7b" in text
    assert [line for line in text.splitlines() if line.startswith("### ")] == SECTIONS
    assert "4 per device x 2 accumulation x 1 device = 8 rows per optimizer step" in text
    assert "100 rows / 8 = 13 steps per epoch" in text
    cfg = yaml.safe_load(text)
    assert (cfg["lora_rank"], cfg["lora_alpha"], cfg["bf16"]) == (16, 32, True)
    assert cfg["output_dir"] == "saves/llama2_7b/lora/rank/r16"
    assert cfg["dataset_dir"] == "data" and cfg["template"] == "llama2"
    assert cfg["learning_rate"] == 2.0e-4 and "learning_rate: 2.0e-4" in text
    assert "<output_dir>/runs/" in text  # where TensorBoard events land, documented


def test_studies_cover_the_issue():
    names = {s: [r.run.variant for r in render_study(s, "llama2_7b")] for s in configs.list_studies()}
    assert names["rank"] == ["r4", "r8", "r16", "r32", "r64"]
    assert names["lr"] == ["lr1e-4", "lr2e-4", "lr5e-4"]
    assert names["target"] == ["qv", "qkvo", "all"]
    # one run at the largest epoch count, a checkpoint and a dev eval loss per epoch (every epoch is a run)
    assert names["epochs"] == ["ep15"]
    ep = render_study("epochs", "llama2_7b")[0].config
    assert (ep["num_train_epochs"], ep["save_strategy"], ep["save_total_limit"]) == (15, "epoch", None)
    assert (ep["do_eval"], ep["eval_dataset"], ep["eval_strategy"]) == (True, "hw5_dev", "epoch")
    assert ep["lr_scheduler_type"] == "constant_with_warmup" and ep["warmup_steps"] == 5
    assert set(names["data"]) >= {"random_s0", "random_s1", "random_s2", "rating", "hw5_default", "length"}
    assert set(names["data"]) >= {"long_is_more", "complexity", "ifd", "mix"}
    assert names["method"] == ["lora", "rslora", "dora", "pissa", "loraplus", "neftune", "qlora"] + [
        "adalora",
        "vera",
        "loha",
        "lokr",
        "oft",
        "freeze",
        "full",
        "galore",
        "apollo",
        "badam",
        "llama_pro",
    ]
    by = {r.run.variant: r.config for r in render_study("method", "llama2_7b")}
    assert by["rslora"]["use_rslora"] and by["dora"]["use_dora"] and by["pissa"]["pissa_init"]
    assert by["loraplus"]["loraplus_lr_ratio"] == 16.0 and by["neftune"]["neftune_noise_alpha"] == 5.0
    assert by["qlora"]["quantization_bit"] == 4 and "quantization_bit" not in by["lora"]
    # QLoRA needs CUDA; PiSSA cannot start from 4-bit weights.
    assert "qlora" not in [r.run.variant for r in render_study("method", "smollm2_135m")]
    assert "pissa" not in [r.run.variant for r in render_study("method", "llama2_7b_t4")]
    data = {r.run.variant: r.config["dataset"] for r in render_study("data", "smollm2_135m")}
    assert data["ifd"] == "alpaca_top100_by_ifd" and data["random_s1"] == "alpaca_top100_by_random_s1"


def test_curriculum_chains_adapters_and_spends_equal_steps():
    rs = {r.run.variant: r for r in render_study("curriculum", "smollm2_135m")}
    assert list(rs) == ["stage1_easy", "stage2_easy_medium", "stage3_all", "ordered", "shuffled"]
    assert (
        rs["stage2_easy_medium"].parent == "stage1_easy" and rs["stage3_all"].parent == "stage2_easy_medium"
    )
    c = {v: r.config for v, r in rs.items()}
    assert c["stage2_easy_medium"]["adapter_name_or_path"] == "saves/smollm2_135m/lora/curriculum/stage1_easy"
    assert "adapter_name_or_path" not in c["stage1_easy"] and "adapter_name_or_path" not in c["ordered"]
    assert c["ordered"]["disable_shuffling"] is True and "disable_shuffling" not in c["shuffled"]
    chain = sum(c[s]["max_steps"] for s in ("stage1_easy", "stage2_easy_medium", "stage3_all"))
    assert chain == c["ordered"]["max_steps"] == c["shuffled"]["max_steps"] == 39  # 3 epochs x 13 steps
    # every stage has its own output folder, so any stage can be rolled back to
    assert len({x["output_dir"] for x in c.values()}) == 5


def test_overrides_for_a_gpu_benchmark(tmp_path):
    """What bench-gpu needs: a LLaMA-2-7B-shaped run with its own model path, rank and step cap."""
    over = {"model_name_or_path": str(tmp_path / "llama2-7b-shaped"), "max_steps_cap": 12, "lora_rank": 128}
    run, text = render_run("rank", "llama2_7b", "r8", over)
    cfg = yaml.safe_load(text)
    assert cfg["model_name_or_path"] == over["model_name_or_path"] and cfg["max_steps"] == 12
    assert (cfg["lora_rank"], cfg["lora_alpha"]) == (128, 256) and "OVERRIDES" in text
    assert configs.main(["render", "--study", "rank", "--model", "llama2_7b", "--set", "lora_rank=8"]) == 2


def test_yaml_scalars_read_back_as_written():
    for v in (2.0e-4, 1.0e-4, 5.0e-4, 0.05, 16.0, 3, True, None, "all", "q_proj,v_proj", "yes", "1e-4"):
        assert yaml.safe_load(f"k: {yaml_scalar(v)}")["k"] == v, v
    assert yaml_scalar(2.0e-4) == "2.0e-4" and yaml_scalar(1.5e-5) == "1.5e-5"


# ------------------------------------------------------------------------------------ bad input
@pytest.fixture()
def tmp_templates(tmp_path, monkeypatch):
    """A copy of templates/ the test may break; the renderer reads it instead of the real one."""
    root = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", root, ignore=shutil.ignore_patterns("judge", "decoding"))
    monkeypatch.setattr(configs, "STUDIES", root / "studies")
    for module in (configs, profiles):
        monkeypatch.setattr(module, "PROFILES", root / "profiles")
    for module in (configs, template):
        monkeypatch.setattr(module, "TRAIN_TEMPLATE", root / "train.yaml.j2")
    return root


def render_cli(tmp_path, *args) -> tuple[int, Path]:
    out = tmp_path / "rendered"
    return configs.main(["render", "--out", str(out), *args]), out


def test_unknown_study_or_profile_writes_nothing(tmp_path, capsys):
    rc, out = render_cli(tmp_path, "--study", "ranks", "--model", "smollm2_135m")
    assert rc == 2 and not out.exists()
    assert "unknown study 'ranks'" in capsys.readouterr().err
    rc, out = render_cli(tmp_path, "--study", "rank", "--model", "llama3")
    assert rc == 2 and not out.exists()
    assert "unknown profile 'llama3'" in capsys.readouterr().err


def test_unknown_key_in_a_study_is_named_with_a_suggestion(tmp_templates, tmp_path, capsys):
    spec = tmp_templates / "studies" / "rank.yaml"
    spec.write_text(spec.read_text().replace("r8: {lora_rank: 8}", "r8: {lora_rnak: 8}"))
    rc, out = render_cli(tmp_path, "--study", "rank", "--model", "smollm2_135m")
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert "rank.yaml (variant r8): unknown key 'lora_rnak' (did you mean 'lora_rank'?)" in err


def test_unknown_key_in_a_profile(tmp_templates):
    prof = tmp_templates / "profiles" / "tiny.yaml"
    prof.write_text(prof.read_text() + "learning_rat: 1.0e-4\n")
    with pytest.raises(ConfigError, match=r"tiny.yaml: unknown key 'learning_rat'"):
        render_study("rank", "tiny")


@pytest.mark.parametrize(
    "variant, message",
    [
        ('r8: {lora_rank: "eight"}', r"lora_rank = 'eight' is a str; it must be int"),
        ("r8: {lora_rank: 8.5}", r"lora_rank = 8.5 is a float; it must be int"),
        ('r8: {lora_rank: 8, use_dora: "yes"}', r"use_dora = 'yes' is a str; it must be bool"),
        ('r8: {lora_rank: 8, step_budget_epochs: "3"}', r"step_budget_epochs = '3' is a str"),
    ],
)
def test_grid_value_of_the_wrong_type(tmp_templates, tmp_path, capsys, variant, message):
    spec = tmp_templates / "studies" / "rank.yaml"
    spec.write_text(spec.read_text().replace("r8: {lora_rank: 8}", variant))
    rc, out = render_cli(tmp_path, "--study", "rank", "--model", "smollm2_135m")
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "rank.yaml (variant r8)" in err
    assert re.search(message, err), err


def test_a_template_that_renders_an_invalid_config(tmp_templates, tmp_path, capsys):
    tpl = tmp_templates / "train.yaml.j2"
    good = tpl.read_text()
    tpl.write_text(good.replace("lora_dropout: {{", "lora_droput: {{"))
    rc, out = render_cli(tmp_path, "--study", "rank", "--model", "smollm2_135m")
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert "LLaMA-Factory rejects this config" in err and "lora_droput" in err
    # a float where LLaMA-Factory wants an int: alpha = 2.5 x rank
    tpl.write_text(good)
    spec = tmp_templates / "studies" / "rank.yaml"
    spec.write_text(spec.read_text().replace("lora_alpha_per_rank: 2", "lora_alpha_per_rank: 2.5"))
    with pytest.raises(ConfigError, match=r"lora_alpha = 10.0 is a float; it must be int"):
        render_study("rank", "smollm2_135m")


def test_check_names_stale_missing_and_leftover_files(tmp_path):
    exp = tmp_path / "experiments"
    shutil.copytree(EXPERIMENTS, exp)
    r8 = exp / "rank" / "smollm2_135m_lora_sft_r8.yaml"
    r8.write_text(r8.read_text().replace("lora_rank: 8", "lora_rank: 9"))
    (exp / "rank" / "smollm2_135m_lora_sft_r16.yaml").unlink()
    (exp / "rank" / "llama2_7b_lora_sft_r7.yaml").write_text("old\n")
    (exp / "rank" / "smollm2_135m_lora_export_r8.yaml").write_text("not ours\n")
    stale = check(exp)
    assert stale == [
        "experiments/rank/llama2_7b_lora_sft_r7.yaml (no longer rendered)",
        "experiments/rank/smollm2_135m_lora_sft_r16.yaml (missing)",
        "experiments/rank/smollm2_135m_lora_sft_r8.yaml (differs)",
    ]
    assert configs.main(["check", "--out", str(exp)]) == 1


def test_any_study_renders_for_any_profile():
    """MODEL=... works for every grid: each profile x study renders and passes the parser."""
    for model in configs.list_profiles():
        for study in configs.list_studies():
            rendered = render_study(study, model)
            skipped = configs.skipped_variants(study, model)
            assert len(rendered) + len(skipped) == len(configs.load_study(study)["variants"])
            for r in rendered:
                assert r.config["output_dir"] == f"saves/{model}/lora/{study}/{r.run.variant}"
    t4 = {r.run.variant: r.config for r in render_study("rank", "llama2_7b_t4")}
    assert t4["r8"]["quantization_bit"] == 4 and t4["r8"]["fp16"] is True
    assert t4["r8"]["per_device_train_batch_size"] == 1 and t4["r8"]["gradient_accumulation_steps"] == 4
    tiny = render_study("epochs", "tiny")
    assert {r.config["max_steps"] for r in tiny} == {2}  # the profile's cap for tests


def test_dataset_names_match_what_the_data_plugin_registers():
    from plugins.selection import STAGES, STUDY_STRATEGIES
    from tools.data import study_selections

    data = {r.run.variant: r.config["dataset"] for r in render_study("data", "smollm2_135m")}
    named = list(study_selections())
    assert list(data) == [*STUDY_STRATEGIES, *named]
    assert all(data[s] == f"alpaca_top100_by_{s}" for s in [*STUDY_STRATEGIES, *named])
    stage3 = render_run("curriculum", "smollm2_135m", "stage3_all")[1]
    assert f"dataset: {','.join(f'alpaca_top100_{s}' for s in STAGES)}\n" in stage3
