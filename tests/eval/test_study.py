"""A study's evaluation in one process: adapters swapped on one engine give a fresh engine's answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from filelib import atomic_write_json, read_jsonl
from tools.core.paths import Run
from tools.eval import engine as engine_mod
from tools.eval import study
from tools.eval.decoding import DecodingPoint, load_grid
from tools.eval.engine import Engine
from tools.eval.source import resolve_source

PROMPTS = [
    {"id": "a", "instruction": "What is the capital of France?", "input": "", "output": "Paris."},
    {"id": "b", "instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour."},
    {"id": "c", "instruction": "Write a haiku about leaves.", "input": "", "output": "Leaves fall."},
]
TINY = "models/tiny-smollm2"
# LoRA of two ranks on other modules, and another PEFT type: each swap must land on the right weights
ADAPTERS = {
    "lora_r8_all": ("lora", {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}),
    "lora_r4_qv": ("lora", {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}),
    "loha_r4": ("loha", {"r": 4, "alpha": 8, "target_modules": ["q_proj", "o_proj"]}),
}


def make_adapter(tiny_model: Path, out: Path, kind: str, kw: dict, seed: int) -> None:
    """A PEFT adapter with random (not identity) weights, so that it visibly changes the model."""
    import torch
    from peft import LoHaConfig, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    cfg = (
        LoraConfig(init_lora_weights=False, **kw) if kind == "lora" else LoHaConfig(init_weights=False, **kw)
    )
    peft = get_peft_model(model, cfg)
    with torch.no_grad():  # large enough to move a random model's argmax
        for n, p in peft.named_parameters():
            if "lora_" in n or "hada_" in n:
                p.mul_(20.0)
    peft.save_pretrained(out)
    cfg_path = out / "adapter_config.json"
    atomic_write_json(cfg_path, {**json.loads(cfg_path.read_text()), "base_model_name_or_path": TINY})


def write_run(run: Run, base: str = TINY) -> None:
    atomic_write_json(
        run.run_json,
        {"run": run.name, "model_name_or_path": base, "template": "smollm2", "status": "finished"},
    )
    (run.output_dir / "DONE").write_text("")


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("adapters")
    for i, (name, (kind, kw)) in enumerate(ADAPTERS.items()):
        make_adapter(tiny_model, root / name, kind, kw, seed=i)
    return root


@pytest.fixture()
def study_runs(adapters, out_dir) -> list[Run]:
    import shutil

    runs = [Run("tiny", "swap", name) for name in ADAPTERS]
    for run in runs:
        shutil.copytree(adapters / run.variant, run.output_dir)
        write_run(run)
    return [Run.base("tiny"), *runs]


@pytest.fixture()
def dataset_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    atomic_write_json(d / "mini.json", PROMPTS)
    atomic_write_json(d / "dataset_info.json", {"mini_eval": {"file_name": "mini.json"}})
    return d


def answers_and_nll(engine: Engine) -> tuple[list, list]:
    point = DecodingPoint.parse("greedy_rp1.5", max_new_tokens=12)
    encoded = [engine.encode(p)[0] for p in PROMPTS]
    gen = engine.generate(encoded, point, seed=0)
    return [(g["answer"], g["new_tokens"]) for g in gen], engine.answer_nll(
        PROMPTS, [p["output"] for p in PROMPTS]
    )


# ------------------------------------------------------------------------------------------- fast
def test_top_k_is_a_grid_axis_and_reaches_generate(tmp_path, monkeypatch):
    grid = tmp_path / "k.yaml"
    grid.write_text(
        "greedy: true\ntemperature: [0.7]\ntop_p: [0.9]\ntop_k: [0, 20, 50]\ndefaults: {seed: 1}\n"
    )
    monkeypatch.setattr("tools.eval.decoding.GRIDS", tmp_path)
    points = load_grid("k")
    assert [p.name for p in points] == ["greedy", "t0.7_p0.9_s1", "t0.7_p0.9_k20_s1", "t0.7_p0.9_k50_s1"]
    assert [DecodingPoint.parse(p.name, seed=1) for p in points[1:]] == points[1:]

    # what the engine hands to transformers' generate
    import torch

    seen = []

    class FakeModel:
        def generate(self, **kw):
            seen.append(kw)
            return torch.cat([kw["input_ids"], torch.full((len(kw["input_ids"]), 2), 7)], 1)

    eng = Engine.__new__(Engine)
    eng.model, eng.device, eng.pad_id, eng.stop_ids, eng.compute_s = FakeModel(), "cpu", 0, [2], 0.0
    eng.tokenizer = type("T", (), {"decode": staticmethod(lambda ids, **_: "x" * len(ids))})()
    for p in points:
        eng.generate([[5, 6]], p, 0)
    assert [kw["top_k"] for kw in seen] == [None, 0, 20, 50]
    assert seen[2]["do_sample"] is True and seen[2]["top_p"] == 0.9

    for bad in ("top_k: [-1]", "top_k: [0.5]", "top_k: []"):
        grid.write_text(f"temperature: [0.7]\ntop_p: [0.9]\n{bad}\n")
        with pytest.raises(ValueError, match="top_k"):
            load_grid("k")
    grid.write_text("temperature: [0.7]\ntop_p: [0.9]\ntop_k: [5]\ndefaults: {top_k: 3}\n")
    with pytest.raises(ValueError, match="both an axis and a default"):
        load_grid("k")


def test_runs_of_another_base_are_refused_before_any_work(out_dir, dataset_dir, capsys):
    mine, other = Run("tiny", "swap", "mine"), Run("tiny", "swap", "other")
    for run, base in ((mine, TINY), (other, "models/smollm2-135m-instruct")):
        run.output_dir.mkdir(parents=True)
        atomic_write_json(run.output_dir / "adapter_config.json", {"base_model_name_or_path": base})
        (run.output_dir / "adapter_model.safetensors").write_bytes(b"")
        write_run(run, base)
    rc = study.main(
        ["--runs", mine.name, other.name, "--testset", "mini_eval", "--dataset-dir", str(dataset_dir)]
    )
    assert rc == 2 and "smollm2-135m-instruct" in capsys.readouterr().err
    assert not (mine.output_dir / "eval").exists() and not (other.output_dir / "eval").exists()


def test_auto_batch_fills_the_prompt_set_within_memory(monkeypatch):
    import torch

    eng = Engine.__new__(Engine)
    cfg = type("C", (), dict(num_hidden_layers=32, num_key_value_heads=32, head_dim=128, hidden_size=4096,
                             num_attention_heads=32, vocab_size=32000))()  # fmt: skip
    eng.base = type("M", (), {"config": cfg})()
    eng.dtype, eng.device = torch.bfloat16, torch.device("cpu")
    monkeypatch.setattr("psutil.virtual_memory", lambda: type("V", (), {"available": 80 * 2**30})())
    assert engine_mod.auto_batch_size(eng, 20, 300) == 20  # a small set: one batch
    # LLaMA-2-7B's KV cache at 1536 tokens is 0.8 GB a sequence: 40 GB of 80 hold 53
    assert engine_mod.auto_batch_size(eng, 150, 1536) == 53
    assert engine_mod.auto_batch_size(eng, 150, 1536, scoring=True) == 35  # plus float32 logits


# ------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_swapped_adapters_answer_as_a_fresh_engine_per_run(study_runs):
    sources = [resolve_source(r) for r in study_runs]
    order = [1, 2, 0, 3, 1, 2]  # LoRA -> other LoRA -> base -> LoHa -> back to the first, then the second
    shared = Engine(sources[order[0]])
    swapped = {}
    for i in order:
        swapped.setdefault(i, []).append(answers_and_nll(shared.use(sources[i])))
    fresh = {i: answers_and_nll(Engine(sources[i])) for i in set(order)}
    for i, results in swapped.items():
        for res in results:
            assert res == fresh[i], f"{sources[i].run}: swapped engine differs from a fresh one"
    # and the adapters really change the model (else this test could not fail)
    nlls = [fresh[i][1] for i in range(4)]
    assert len({json.dumps(n) for n in nlls}) == 4


@pytest.mark.slow
def test_study_writes_every_file_once_per_process_and_resumes(
    study_runs, dataset_dir, tiny_model, monkeypatch, capsys
):
    loads = {"engine": 0, "judge": 0}
    real_engine, real_factory = study.Engine, study.Study.offline_judge

    def count_engine(*a, **k):
        loads["engine"] += 1
        return real_engine(*a, **k)

    def count_judge(self, path):
        loads["judge"] += 1
        return real_factory.__wrapped__(self, path)

    monkeypatch.setattr(study, "Engine", count_engine)
    monkeypatch.setattr(study.Study, "offline_judge", __import__("functools").cache(count_judge))
    names = [r.name for r in study_runs]
    argv = [
        "--runs",
        *names,
        "--testset",
        "mini_eval",
        "--dataset-dir",
        str(dataset_dir),
        "--max-new-tokens",
        "6",
    ]
    argv += ["--judge", "offline", "--offline-model", str(tiny_model), "--no-similarity"]

    # killed while scoring the third run: the first two are complete, the third has answers only
    real_compute = study.compute
    calls = []

    def kill_on_third(run, *a, **k):
        calls.append(run)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_compute(run, *a, **k)

    monkeypatch.setattr(study, "compute", kill_on_third)
    with pytest.raises(KeyboardInterrupt):
        study.main(argv)
    monkeypatch.setattr(study, "compute", real_compute)
    assert study_runs[1].scores("mini_eval", "greedy").exists()
    assert not study_runs[2].metrics("mini_eval", "greedy").exists()
    assert study.main([*argv, "--timings", str(dataset_dir / "t.json")]) == 0
    assert loads == {"engine": 2, "judge": 2}  # once per process
    for run in study_runs:
        for f in ("predictions", "metrics", "judgments", "scores"):
            assert getattr(run, f)("mini_eval", "greedy").exists(), (run, f)
        rows = list(read_jsonl(run.predictions("mini_eval", "greedy")))
        assert [r["id"] for r in rows] == ["a", "b", "c"] and rows[0]["run"] == run.name
        assert json.loads(run.metrics("mini_eval", "greedy").read_text())["ppl_reference"] > 1
        s = json.loads(run.scores("mini_eval", "greedy").read_text())
        assert s["n"] == 3 and s["offline"] is True
    side = json.loads((study_runs[1].eval_dir("mini_eval", "greedy") / "generation.json").read_text())
    assert side["batch_size"] == 3 and side["source"]["adapter"] == str(study_runs[1].output_dir)
    t = json.loads((dataset_dir / "t.json").read_text())
    assert 0 < t["compute_s"] < t["process_wall_s"] and t["runs"] == 4

    # a re-run finds everything done: nothing loaded, nothing rewritten but the judge's summary
    loads.update(engine=0, judge=0)
    mtime = study_runs[2].predictions("mini_eval", "greedy").stat().st_mtime_ns
    by_study = [
        "--study",
        "swap",
        "--model",
        "tiny",
        *argv[1 + len(names) :],
    ]  # the base and every finished run
    capsys.readouterr()
    assert study.main(by_study) == 0 and loads == {"engine": 0, "judge": 0}
    assert "evaluated 4 run(s)" in capsys.readouterr().out
    assert study_runs[2].predictions("mini_eval", "greedy").stat().st_mtime_ns == mtime


def test_study_runs_are_the_base_and_the_finished_runs(out_dir):
    done, running = Run("tiny", "swap", "r8"), Run("tiny", "swap", "r4")
    for run in (done, running):
        run.output_dir.mkdir(parents=True)
        (run.output_dir / "adapter_model.safetensors").write_bytes(b"")
    write_run(done)
    (done.output_dir.parent / ".r16.stale-20260101").mkdir()  # a set-aside run is no run
    assert study.study_runs("tiny", "swap") == [Run.base("tiny"), done]
    assert study.study_runs("tiny", "swap", base=False) == [done]
    with pytest.raises(study.GenerateError, match="no finished run"):
        study.study_runs("tiny", "other", base=False)


def test_heldout_pool_gives_every_run_a_general_perplexity_and_is_added_to_old_metrics(
    study_runs, dataset_dir, capsys
):
    """The forgetting guard in the study evaluation: `--heldout POOL` scores each run's perplexity on rows of
    a general pool; metrics computed before without it are recomputed, not left without the column."""
    general = [
        {"id": f"g{i}", "instruction": f"Name a colour number {i}.", "output": "Blue."} for i in range(4)
    ]
    atomic_write_json(dataset_dir / "general.json", general)
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    atomic_write_json(
        dataset_dir / "dataset_info.json", {**info, "general_heldout": {"file_name": "general.json"}}
    )
    runs = study_runs[:2]  # the base and one adapter
    argv = ["--runs", *[r.name for r in runs], "--testset", "mini_eval", "--dataset-dir", str(dataset_dir)]
    argv += ["--max-new-tokens", "4", "--judge", "none", "--no-similarity"]
    assert study.main(argv) == 0
    assert all("ppl_heldout" not in json.loads(r.metrics("mini_eval", "greedy").read_text()) for r in runs)
    assert study.main([*argv, "--heldout", "general_heldout", "--heldout-n", "3"]) == 0
    out = capsys.readouterr().out
    ppl = []
    for r in runs:
        m = json.loads(r.metrics("mini_eval", "greedy").read_text())
        assert (
            m["heldout"]["dataset"] == "general_heldout" and m["heldout"]["n"] == 3 and m["ppl_heldout"] > 1
        )
        ppl.append(m["ppl_heldout"])
    assert ppl[0] != ppl[1] and "ppl general_heldout" in out  # the adapter moves it: a real measurement


@pytest.mark.slow  # lm-eval scores the tiny model and its adapter
def test_zeroshot_tasks_score_every_run_once_through_lm_eval(study_runs, dataset_dir, capsys, monkeypatch):
    """The forgetting guard's second measure: `--zeroshot python_mc` runs lm-eval on each run's model (the
    adapter attached), once per run whatever the decoding points; tasks that need the hub are recorded as
    skipped when it is out of reach, never as a score; metrics without the tasks asked for are redone."""
    from tools.eval import zeroshot

    monkeypatch.setattr(zeroshot, "hub_reachable", lambda *a, **k: False)
    calls = []
    real = zeroshot.zero_shot

    def counted(model, tokenizer, tasks, **kw):
        calls.append(type(model).__name__)
        return real(model, tokenizer, tasks, **kw)

    monkeypatch.setattr("tools.eval.metrics.zero_shot", counted)
    runs = study_runs[:2]  # the base and one adapter
    argv = ["--runs", *[r.name for r in runs], "--testset", "mini_eval", "--dataset-dir", str(dataset_dir)]
    argv += [
        "--max-new-tokens",
        "4",
        "--judge",
        "none",
        "--no-similarity",
        "--decoding",
        "greedy",
        "t0.7_p0.9",
    ]
    assert study.main(argv) == 0 and calls == []
    guard = ["--zeroshot", "python_mc", "arc_easy", "--zeroshot-limit", "6"]
    assert study.main([*argv, *guard]) == 0
    assert len(calls) == 2 and calls[1] == "PeftModel" != calls[0]  # one per run (adapter on), not per point
    for r in runs:
        for point in ("greedy", "t0.7_p0.9"):
            m = json.loads(r.metrics("mini_eval", point).read_text())
            assert 0 <= m["zeroshot"]["python_mc"]["acc"] <= 1 and m["zeroshot"]["python_mc"]["n"] == 6
            assert m["zeroshot"]["arc_easy"] == {"skipped": "the Hugging Face hub is not reachable"}
            assert m["zeroshot_limit"] == 6
    assert "python_mc" in capsys.readouterr().out
    assert study.main([*argv, *guard]) == 0 and len(calls) == 2  # done: not computed again
    # another prompt set (the test pass after the dev pass) reuses them: the same models
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    atomic_write_json(dataset_dir / "dataset_info.json", {**info, "mini_dev": {"file_name": "mini.json"}})
    dev = [*argv[:3], "--testset", "mini_dev", *argv[5:]]
    assert study.main([*dev, *guard]) == 0 and len(calls) == 2
    assert json.loads(runs[1].metrics("mini_dev", "greedy").read_text())["zeroshot"] == m["zeroshot"]
    assert study.main([*dev, *guard[:-1], "5"]) == 0 and len(calls) == 4  # another limit: computed anew
    assert study.main([*argv, "--zeroshot-limit", "3"]) == 2  # a limit without tasks: bad input
    assert study.main([*argv, "--zeroshot", "arc_eazy"]) == 2 and len(calls) == 4  # refused before any work
