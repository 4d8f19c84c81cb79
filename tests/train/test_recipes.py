"""The recipes study: per-stage epochs and learning rates in a chain, response-only loss, its datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.core.paths import Run
from tools.flows import evaluation as evaluate_module
from tools.flows import sweep
from tools.train.configs import load_study, render_study

CHAIN = ("r512_stage1", "r512_stage2", "r512_stage3")


def test_each_stage_renders_its_own_epochs_and_learning_rate_and_continues_the_last():
    for model in ("llama2_7b", "smollm2_135m"):
        cfg = {r.run.variant: r for r in render_study("recipes", model)}
        got = [(cfg[v].config["num_train_epochs"], cfg[v].config["learning_rate"]) for v in CHAIN]
        assert got == [(4, 1.0e-4), (3, 2.0e-5), (1, 5.0e-6)]
        assert "adapter_name_or_path" not in cfg["r512_stage1"].config
        assert cfg["r512_stage2"].config["adapter_name_or_path"] == f"saves/{model}/lora/recipes/r512_stage1"
        assert cfg["r512_stage3"].parent == "r512_stage2"
        assert {cfg[v].config["lora_rank"] for v in CHAIN} == {96} and cfg["r512_stage1"].config[
            "lora_alpha"
        ] == 192
        assert cfg["r512_stage1"].config["train_on_prompt"] is False
        assert cfg["r512p_stage3"].config["train_on_prompt"] is True
        assert "# Loss on the response only" in cfg["r512_stage1"].text
        r475 = cfg["r475"].config
        assert (r475["lora_rank"], r475["lora_alpha"], r475["learning_rate"], r475["num_train_epochs"]) == (
            12,
            16,
            2.0e-4,
            15,
        )
        assert "alpha = 16, set directly" in cfg["r475"].text


def test_the_recipe_datasets_are_what_make_data_registers():
    from plugins.selection import STUDY_STRATEGIES
    from tools.data import study_selections

    named = study_selections()
    assert named["quota_60_20_20"] == "quota:60*length_window,20*complexity,20*diversity"
    registered = {f"alpaca_top100_by_{s}" for s in [*STUDY_STRATEGIES, *named]}
    used = {r.config["dataset"] for r in render_study("recipes", "llama2_7b")}
    assert used <= registered
    assert load_study("recipes")["selections"] == {"quota_60_20_20": named["quota_60_20_20"]}


def test_the_sweep_evaluates_each_run_with_its_decoding_list(out_dir, monkeypatch):
    jobs = {j["variant"]: j for j in sweep.plan("recipes", "tiny", out_dir / "cfg")}
    assert jobs["r512_stage3"]["decoding"] == ["greedy", "bytype_recipe"]
    assert jobs["r475"]["decoding"] == ["greedy", "bytype_greedy_1024"]
    calls = []

    class Done:
        returncode = 0
        wall_s = 0.0

    monkeypatch.setattr(evaluate_module, "run_child", lambda cmd, log, cwd: calls.append(cmd[2:]) or Done())
    run = Run("tiny", "recipes", "r475")
    sweep.evaluate(
        [run],
        "demo_eval",
        "recipes",
        decodings={run.name: jobs["r475"]["decoding"]},
        reporter=None,
    )
    # one evaluation process for the run, with its own decoding list (a point and a policy)
    assert [c[0] for c in calls] == ["tools.eval.study"]
    assert calls[0][calls[0].index("--testset") + 2 :] == ["--decoding", "greedy", "bytype_greedy_1024"]


@pytest.fixture()
def recipe_data(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    rows = [
        {"instruction": f"Write the number {i} in words.", "input": "", "output": f"It is {i}."}
        for i in range(8)
    ]
    (d / "q.json").write_text(json.dumps(rows))
    (d / "dataset_info.json").write_text(
        json.dumps({"alpaca_top100_by_quota_60_20_20": {"file_name": "q.json"}})
    )
    return d


@pytest.mark.slow
def test_the_chain_trains_on_the_tiny_model_each_stage_at_its_own_rate(out_dir, tiny_model, recipe_data):
    argv = ["--study", "recipes", "--model", "tiny", "--only", ",".join(CHAIN), "--no-eval"]
    assert sweep.main([*argv, "--dataset-dir", str(recipe_data), "--warm"]) == 0
    peaks = []
    for i, v in enumerate(CHAIN):
        run = Run("tiny", "recipes", v)
        rec = json.loads(run.run_json.read_text())
        assert rec["status"] == "finished" and (run.output_dir / "adapter_model.safetensors").exists()
        if i:
            assert rec["resolved_config"]["adapter_name_or_path"] == str(
                Run("tiny", "recipes", CHAIN[i - 1]).output_dir
            )
        logs = [json.loads(x) for x in (run.output_dir / "trainer_log.jsonl").read_text().splitlines()]
        peaks.append(max(x["lr"] for x in logs if "lr" in x))
    want = (1.0e-4, 2.0e-5, 5.0e-6)
    assert all(0 < p <= w for p, w in zip(peaks, want, strict=True)) and peaks[0] > peaks[1] > peaks[2]
