"""The memory bill per method (tools/train/memory.py, tools/train/structure.py): trainable parameters counted
on the meta device by LLaMA-Factory's own setup, optimizer state by optimizer, disk by kept checkpoint;
preflight refuses what does not fit and bills what only has a config at hand; on CPU the bill bounds each
method's measured peak (tools.train.measure) from above, within 1.5x."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tools.core import warm
from tools.core.paths import ROOT
from tools.flows import preflight as pf
from tools.train.billtable import measure_data
from tools.train.configs import render_study, variant_names
from tools.train.measure import measure_run
from tools.train.memory import PUBLISHED, bill, checkpoints, disk_mb
from tools.train.preflight import run_model_config

LLAMA2_7B = PUBLISHED["meta-llama/Llama-2-7b-hf"]
NO_GPU = {"cuda": False, "bf16": False, "gpu_mb": None, "gpu_name": None, "ram_mb": 24_000}
H100 = {"cuda": True, "bf16": True, "gpu_mb": 81_559, "gpu_name": "NVIDIA H100 80GB HBM3", "ram_mb": 200_000}
# What LLaMA-Factory prints ("trainable params: ...") for each method of the study on LLaMA-2-7B.
TRAINABLE_7B = {
    "lora": 19_988_480,
    "dora": 21_348_352,  # + one magnitude per output column
    "adalora": 29_985_408,  # starts at rank 12 (+ the singular values)
    "vera": 1_417_216,  # two scaling vectors per layer, not LoRA r256's 640M
    "loha": 39_976_960,
    "lokr": 1_331_200,
    "oft": 17_649_664,
    "freeze": 404_766_720,  # the last 2 of 32 layers
    "full": 6_738_415_616,
    "llama_pro": 1_619_066_880,  # the 8 new blocks of the expanded 40-layer model
}


def method_configs(profile: str) -> dict[str, dict]:
    return {r.run.variant: r.config for r in render_study("method", profile)}


def bills_7b() -> dict[str, dict]:
    out = {}
    for variant, cfg in method_configs("llama2_7b").items():
        mc, pruned, _ = run_model_config(cfg, "meta-llama/Llama-2-7b-hf", LLAMA2_7B)
        out[variant] = bill(cfg, mc, "cuda", model_path=pruned)
    return out


def test_the_tiny_variants_are_the_ones_rendered():
    assert (
        TINY_VARIANTS == [r.run.variant for r in render_study("method", "tiny")] and len(TINY_VARIANTS) > 10
    )


def test_each_method_is_billed_from_its_own_structure():
    b = bills_7b()
    assert {v: b[v]["trainable"] for v in TRAINABLE_7B} == TRAINABLE_7B
    for v in ("rslora", "pissa", "loraplus", "neftune", "qlora"):  # LoRA's shapes
        assert b[v]["trainable"] == TRAINABLE_7B["lora"]
    gb = {v: x["total_mb"] / 1024 for v, x in b.items()}
    # full fine-tuning: fp32 weights, gradients and two AdamW moments (16 bytes a parameter): > 80 GB
    assert gb["full"] > 100 and b["full"]["optimizer"] / 1024 > 50
    # GaLore / APOLLO: the same fp32 weights and gradients, moments of rank-16 projections only
    assert 50 < gb["galore"] < 62 and b["galore"]["optimizer"] < b["full"]["optimizer"] / 20
    # BAdam: half-precision weights, one decoder layer active (its fp32 copy, gradient and moments)
    assert b["badam"]["trainable_active"] == 202_383_360 and gb["badam"] < 25
    # QLoRA: NF4 base weights; the adapters all near LoRA's bill
    assert gb["qlora"] < gb["lora"] / 1.8
    assert all(abs(gb[v] - gb["lora"]) < 1.0 for v in ("dora", "vera", "loha", "lokr", "oft", "adalora"))
    assert b["lora"]["gradient_checkpointing"] and b["full"]["optimizer_kind"] == "adamw"
    no_ckpt = bill(dict(method_configs("llama2_7b")["lora"], disable_gradient_checkpointing=True), LLAMA2_7B)
    assert no_ckpt["activations"] > 4 * b["lora"]["activations"]


def test_preflight_refuses_a_full_fine_tune_of_a_7b_on_one_80gb_gpu(out_dir, hf_cache):
    put_in_cache(hf_cache, "meta-llama/Llama-2-7b-hf", LLAMA2_7B)
    rep = pf.preflight("method", "llama2_7b", only=["lora", "full"], dev=H100)
    checks = {name: (ok, detail) for name, ok, detail in rep.checks}
    assert checks["model"][0], checks["model"]
    assert not rep.ok and not checks["memory"][0]
    assert "too big: full ~10" in checks["memory"][1] and "lora ~" not in checks["memory"][1]
    fits = pf.preflight("method", "llama2_7b", only=["lora", "galore", "badam"], dev=H100)
    assert [ok for name, ok, _ in fits.checks if name == "memory"] == [True]  # (disk: this machine's)


def test_disk_counts_every_kept_checkpoint_and_whole_models():
    cfgs = method_configs("llama2_7b")
    full, lora = cfgs["full"], cfgs["lora"]
    assert full["save_total_limit"] is None and checkpoints(full) == (
        3,
        "one per epoch, all kept (save_total_limit: null)",
    )
    assert checkpoints(dict(full, save_total_limit=1))[0] == 1
    assert checkpoints({"save_strategy": "steps", "save_steps": 10, "max_steps": 35}) == (
        4,
        "one per 10 steps, all kept (save_total_limit: null)",
    )
    # full: the fp32 model (27 GB) and its AdamW state (54 GB) per checkpoint, plus the final model
    assert disk_mb(full, LLAMA2_7B) / 1024 > 3 * 75 + 25
    assert disk_mb(dict(full, save_total_limit=1), LLAMA2_7B) / 1024 < 120
    assert 200 < disk_mb(lora, LLAMA2_7B) < 1000  # an 80 MB adapter and its state, three times


def test_the_bill_is_shown_when_only_the_config_is_at_hand(out_dir, hf_cache, tmp_path):
    shaped = tmp_path / "llama2-7b-shaped"  # a folder with config.json only (no weights)
    shaped.mkdir()
    (shaped / "config.json").write_text(json.dumps(LLAMA2_7B))
    rep = pf.preflight("rank", "llama2_7b", {"model_name_or_path": str(shaped)}, ["r8"], dev=H100)
    checks = {name: (ok, detail) for name, ok, detail in rep.checks}
    assert not checks["model"][0] and "holds config.json but no weights" in checks["model"][1]
    assert 15 < rep.bills["r8"]["total_mb"] / 1024 < 20
    assert any(line.startswith("preflight memory r8: ") for line in rep.lines())
    # in the Hugging Face cache: config.json only
    put_in_cache(hf_cache, "meta-llama/Llama-2-7b-hf", LLAMA2_7B, weights=False)
    rep = pf.preflight("rank", "llama2_7b", only=["r8"], dev=H100)
    (model,) = [(ok, d) for n, ok, d in rep.checks if n == "model"]
    assert not model[0] and "hf download meta-llama/Llama-2-7b-hf" in model[1]
    assert rep.bills["r8"]["trainable"] == TRAINABLE_7B["lora"]


def test_nothing_at_hand_still_bills_the_published_config(out_dir, hf_cache):
    rep = pf.preflight("method", "llama2_7b", only=["vera"], dev=H100)
    assert not rep.ok and rep.bills["vera"]["trainable"] == TRAINABLE_7B["vera"]
    assert any(n == "bill" and "as published" in d for n, ok, d in rep.checks)


def test_the_recovery_study_is_billed_on_the_pruned_model(out_dir, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from plugins.launchers import param_count, save_pickle
    from tools.models.prune import prune

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    prune(model, mlp_ratio=0.5, head_ratio=0.5, skip_first=0, skip_last=0)
    save_pickle(
        model, AutoTokenizer.from_pretrained(tiny_model), out_dir / "saves/tiny/pruned/pruned_model.bin"
    )
    rep = pf.preflight("recovery", "tiny", only=["demo_recovery"], dev=NO_GPU)
    b = rep.bills["demo_recovery"]
    assert b["params"] - b["trainable"] == param_count(model)  # the pruned widths, not the 2-layer original
    unpruned = param_count(AutoModelForCausalLM.from_pretrained(tiny_model))
    assert param_count(model) < unpruned


def test_a_forked_child_maps_its_parents_file_pages_again(monkeypatch):
    """A forked child holds no page-table entry of its parent's file mappings until it faults them in;
    refault_as maps them before a warm measurement's baseline (by madvise, or page by page where the kernel
    lacks MADV_POPULATE_READ: both give the child its parent's file-backed resident set)."""
    from tools.train import measure

    def rss_file_mb() -> float:
        (line,) = [x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("RssFile:")]
        return int(line.split()[1]) / 1024

    parent = rss_file_mb()
    for advice in (measure.MADV_POPULATE_READ, 9999):  # 9999: an advice no kernel knows (EINVAL)
        monkeypatch.setattr(measure, "MADV_POPULATE_READ", advice)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its file pages before and after, then out without pytest's exit
            before = rss_file_mb()
            mapped = measure.refault_as(os.getppid())
            os.write(write, json.dumps([before, rss_file_mb(), mapped]).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            before, after, mapped = json.loads(f.read())
        os.waitpid(pid, 0)
        assert before < 0.5 * parent and after > 0.9 * parent and mapped > 0.5 * parent, (
            advice, parent, before, after, mapped,
        )  # fmt: skip


# ------------------------------------------------------------------------------------ helpers
def put_in_cache(hub: Path, repo: str, config: dict, weights: bool = True) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = hub / f"models--{repo.replace('/', '--')}"
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(config))
    if weights:
        (snap / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)


# ------------------------------------------------------------------------------------ slow: measured
# The embedded SmolLM2-135M at a CPU-cheap shape (2 steps of 2 rows x 128 tokens), the methods whose
# memory differs most: an adapter, the whole model with AdamW, projected states, one block at a time.
SMOL = {"max_steps_cap": 2, "cutoff_len": 128, "per_device_train_batch_size": 2}
SMOL |= {"gradient_accumulation_steps": 1, "save_steps": 1}
SMOL_VARIANTS = ["lora", "full", "galore", "badam", "vera", "freeze"]
TINY_VARIANTS = variant_names("method", "tiny")  # at collection: nothing rendered


def measured(
    profile: str, variant: str, overrides: dict | None, tmp_path: Path, model_path=None, warm_start=True
) -> tuple:
    """(the config's bill, the run's measurement, its "trainable params" line) for one method, trained in a
    process of its own: a child of the test process's warm fork server, which reads what a fresh process
    reads (test_a_warm_measurement_reads_what_a_fresh_process_reads), or a fresh one."""
    data = measure_data(tmp_path / "data")
    (r,) = render_study("method", profile, overrides, [variant])
    cfg = dict(r.config, dataset_dir=str(data), output_dir=str(tmp_path / "out" / variant))
    from tools.core.profiles import resolve_model_path

    cfg["model_name_or_path"] = str(model_path or resolve_model_path(str(cfg["model_name_or_path"])))
    for k in ("do_eval", "eval_dataset", "eval_strategy", "per_device_eval_batch_size"):
        cfg.pop(k, None)
    path = tmp_path / f"{variant}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / f"{variant}.json"
    returncode, output = measure_run(path, out, warm_start=warm_start)
    assert returncode == 0, output[-3000:]
    mc = json.loads((Path(cfg["model_name_or_path"]) / "config.json").read_text())
    logged = [line for line in output.splitlines() if "trainable params:" in line]
    return bill(cfg, mc, "cpu"), json.loads(out.read_text()), logged[-1] if logged else ""


def check_bound(b: dict, m: dict, logged: str) -> None:
    assert "increase_mb" in m, m  # a warm child that could not map its server's pages says why
    inc, seen = m["increase_mb"], f"{b}; measured {m}"  # (a warm child's server_pages_mb among them)
    assert b["run_mb"] >= inc, f"billed {b['run_mb']} MB < measured {inc} MB: {seen}"
    assert b["run_mb"] <= 1.5 * inc, f"billed {b['run_mb']} MB > 1.5 x measured {inc} MB: {seen}"
    assert f"trainable params: {b['trainable']:,} " in logged, (b["trainable"], logged)


@pytest.mark.slow
@pytest.mark.skipif(not warm.available(), reason="no fork server here (SMALLDATA_WARM=0, or not Linux)")
def test_a_warm_measurement_reads_what_a_fresh_process_reads(tiny_model, tmp_path):
    """The bills below are measured in children of the warm fork server (4-6 s a tiny run, against 17-22 s
    for a process that imports LLaMA-Factory first). A child maps the server's file pages before its baseline;
    without that it counts 70-80 MB of library pages as the run's (tiny LoRA 314 against 235 MB). Fresh and
    warm differed by 0.3-4.4 MB on the tiny model's LoRA, full and BAdam and SmolLM2's LoRA and full (fresh
    runs of one config differ by up to 7 MB among themselves); 5% is the tolerance."""
    (tmp_path / "fresh").mkdir(), (tmp_path / "warm").mkdir()
    fresh = measured("tiny", "full", None, tmp_path / "fresh", warm_start=False)[1]
    child = measured("tiny", "full", None, tmp_path / "warm")[1]
    assert "server_pages_mb" not in fresh and child["server_pages_mb"] > 100, (fresh, child)
    assert abs(child["increase_mb"] - fresh["increase_mb"]) <= 0.05 * fresh["increase_mb"], (fresh, child)


@pytest.mark.slow
@pytest.mark.parametrize("variant", TINY_VARIANTS)
def test_the_bill_bounds_the_measured_peak_on_the_tiny_model(variant, tiny_model, tmp_path):
    model = None
    if variant == "llama_pro":
        from tools.models.llama_pro import expand

        model = expand(str(tiny_model), 2, tmp_path / "tiny_pro2")
    check_bound(*measured("tiny", variant, None, tmp_path, model))


@pytest.mark.slow
@pytest.mark.parametrize("variant", SMOL_VARIANTS)
def test_the_bill_bounds_the_measured_peak_on_smollm2(variant, base_model, tmp_path):
    check_bound(*measured("smollm2_135m", variant, SMOL, tmp_path))


def test_the_docs_table_is_generated_with_the_measured_peaks(out_dir, tmp_path, capsys):
    """`python -m tools.train.billtable` (docs/bills.md): a row per method, each profile's bill, and a
    measured run's peak beside the bill of its own config."""
    from tools.train.billtable import main as billtable

    results = tmp_path / "results"
    results.mkdir()
    rec = {"profile": "tiny", "variant": "lora", "measured": {"increase_mb": 245.2}, "bill_run_mb": 271.2}
    (results / "tiny_lora.json").write_text(
        json.dumps({**rec, "load_average": 4.6, "when": "2026-12-06 09:51"})
    )
    out = tmp_path / "table.md"
    argv = ["--only", "lora,full", "--models", "llama2_7b,tiny", "--results", str(results), "--out", str(out)]
    assert billtable(argv) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 19,988,480 | 18.53 GB |" in rows["lora"] and "tiny: 245 MB vs 271 MB (x1.11)" in rows["lora"]
    assert "| 6,738,415,616 | 105.4" in rows["full"] and rows["full"].endswith("| - |")
    assert "| tiny | lora | 245 MB | 271 MB | 1.11 | 4.6 | 2026-12-06 09:51 |" in text


def test_the_docs_table_holds_todays_bills():
    """docs/bills.md's table is the generator's (python -m tools.train.billtable): a change of a term or of the
    overhead that is not regenerated into the page fails here (checked on two rows, every profile)."""
    from tools.train.billtable import MODELS, TableArgs, table

    page = (ROOT / "docs" / "bills.md").read_text().splitlines()
    fresh = table(TableArgs(models=MODELS, only=["lora", "full"], results=ROOT / "no-results")).splitlines()
    for row in fresh[2:]:
        cells = row.split(" | ")[:-1]  # less the measured column, which the page keeps from its runs
        (documented,) = [line for line in page if line.startswith(cells[0] + " | ")]
        assert documented.split(" | ")[:-1] == cells, (documented, row)
