"""Generation: decoding points, sources, bad input, and real LLaMA-Factory generation on the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from filelib import atomic_write_json, read_jsonl
from tools.core.paths import ROOT, Run
from tools.eval import generate as gen
from tools.eval.decoding import DecodingPoint, load_grid
from tools.eval.prompts import user_message

PROMPTS = [
    {
        "id": "p1",
        "instruction": "What is the capital of France?",
        "input": "",
        "output": "Paris is the capital.",
    },
    {"id": "p2", "instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"id": "p3", "instruction": "Name a primary colour.", "input": "", "output": ""},
    {
        "id": "p4",
        "instruction": "Write a haiku about leaves falling in a park.",
        "input": "",
        "output": "Leaves",
    },
    {"id": "p5", "instruction": "What is 2+2?", "input": "", "output": "4"},
]
FIELDS = {
    "id",
    "instruction",
    "input",
    "prompt",
    "answer",
    "reference",
    "decoding",
    "gen",
    "point",
    "prompt_type",
    "new_tokens",
    "truncated",
    "seconds",
    "run",
}


@pytest.fixture()
def dataset_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    atomic_write_json(d / "mini.json", PROMPTS)
    # the same ids in another order with other references: a join by position would show
    refs = [{**r, "output": f"ref of {r['id']}"} for r in reversed(PROMPTS) if r["id"] != "p4"]
    atomic_write_json(d / "mini_refs.json", refs)
    atomic_write_json(
        d / "dataset_info.json",
        {"mini_eval": {"file_name": "mini.json"}, "mini_refs": {"file_name": "mini_refs.json"}},
    )
    return d


def write_run(
    run: Run, base: str = "models/tiny-smollm2", adapter_base: str | None = None, done=True
) -> None:
    """A run folder as the sweep leaves it (minimal run.json per tools/CONTRACTS.md)."""
    out = run.output_dir
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        run.run_json,
        {
            "run": run.name,
            "model": run.model,
            "study": run.study,
            "variant": run.variant,
            "model_name_or_path": base,
            "template": "smollm2",
            "status": "finished" if done else "running",
        },
    )
    if adapter_base is not None:
        atomic_write_json(out / "adapter_config.json", {"base_model_name_or_path": adapter_base})
        (out / "adapter_model.safetensors").write_bytes(b"")
    if done:
        (out / "DONE").write_text("")


# ------------------------------------------------------------------------------------------- fast
def test_decoding_names_round_trip_and_hw5_grid():
    pts = load_grid("hw5")
    names = [p.name for p in pts]
    assert names[0] == "greedy" and len(pts) == 10
    assert {"t0.7_p0.8", "t1.0_p0.9", "t1.3_p0.95"} <= set(names)
    for p in pts:
        assert DecodingPoint.parse(p.name, max_new_tokens=p.max_new_tokens) == p
    p = DecodingPoint.sampled(1.3, 0.95, top_k=50, repetition_penalty=1.1, seed=7)
    assert p.name == "t1.3_p0.95_k50_rp1.1_s7" and DecodingPoint.parse(p.name) == p
    assert DecodingPoint.parse("t0.7_p0.9", seed=3).name == "t0.7_p0.9_s3"
    assert DecodingPoint.parse("greedy").generate_kwargs()["do_sample"] is False
    with pytest.raises(ValueError, match="write it as 't0.7_p0.9'"):
        DecodingPoint.parse("t0.70_p0.9")
    with pytest.raises(ValueError, match="grids: .*hw5"):
        load_grid("nope")


def test_unregistered_prompt_set_lists_the_registered_ones(dataset_dir, out_dir, capsys):
    with pytest.raises(gen.GenerateError, match="mini_eval"):
        gen.load_prompts("hw5_nope", dataset_dir)
    rc = gen.main(["--run", "tiny/base/base", "--testset", "hw5_nope", "--dataset-dir", str(dataset_dir)])
    assert rc == 2 and "hw5_nope" in capsys.readouterr().err
    assert not (out_dir / "saves").exists()


def test_references_join_by_id_and_bad_rows(dataset_dir, tmp_path):
    rows = gen.load_prompts("mini_eval", dataset_dir)
    assert [r["reference"] for r in rows][:3] == ["Paris is the capital.", "Bonjour", None]
    joined = {
        r["id"]: r["reference"] for r in gen.load_prompts("mini_eval", dataset_dir, references="mini_refs")
    }
    assert joined == {"p1": "ref of p1", "p2": "ref of p2", "p3": "ref of p3", "p4": None, "p5": "ref of p5"}
    assert user_message(rows[1]) == "Translate to French.\nGood morning"
    atomic_write_json(dataset_dir / "mini.json", [PROMPTS[0], {"id": "x", "instruction": ""}])
    with pytest.raises(ValueError, match=r"mini.json: row 1: field 'instruction' is empty"):
        gen.load_prompts("mini_eval", dataset_dir)


def test_missing_unfinished_and_foreign_adapter_runs_are_refused(out_dir, capsys):
    with pytest.raises(gen.GenerateError, match="no output folder"):
        gen.resolve_source("tiny/rank/r8")
    write_run(Run("tiny", "rank", "r4"), done=False)
    with pytest.raises(gen.GenerateError, match="not finished .*'running'"):
        gen.resolve_source("tiny/rank/r4")
    write_run(Run("tiny", "rank", "r16"), adapter_base="meta-llama/Llama-2-7b-hf")
    with pytest.raises(gen.GenerateError, match="adapter of another base model"):
        gen.resolve_source("tiny/rank/r16")
    rc = gen.main(["--run", "tiny/rank/r16", "--testset", "demo_eval"])
    assert rc == 2 and "Llama-2-7b-hf" in capsys.readouterr().err
    assert not (Run("tiny", "rank", "r16").output_dir / "eval").exists()
    # the same base spelled differently (absolute path vs repo-relative) is the same model
    write_run(Run("tiny", "rank", "r32"), adapter_base=str(ROOT / "models/tiny-smollm2"))
    src = gen.resolve_source("tiny/rank/r32")
    assert (
        src.kind == "adapter"
        and src.template == "smollm2"
        and src.adapter == Run("tiny", "rank", "r32").output_dir
    )


# ------------------------------------------------------------------------------------------- slow
@pytest.fixture(scope="module")
def trained_run(tiny_model, tmp_path_factory) -> Path:
    """A real LoRA run of the tiny model (4 steps), with run.json and DONE; trained as the sweep's --warm
    trains (tests/export/test_export.py: train_tiny_adapter; tools.train.smoke's own fresh process is
    tests/core/test_foundation.py's)."""
    from tests.export.test_export import train_tiny_adapter

    root = tmp_path_factory.mktemp("lfout")
    out = train_tiny_adapter(tiny_model, root / "saves/tiny/lora/evaltest/r8", lr=1e-2, steps=4)
    shutil.rmtree(out.parent / ".r8-data")
    run = Run("tiny", "evaltest", "r8")
    atomic_write_json(
        out / "run.json",
        {"run": run.name, "model": "tiny", "study": "evaltest", "variant": "r8", "status": "finished"},
    )
    (out / "DONE").write_text("")
    return out


# The tests of the trained run on one worker: it is trained once, not once per worker (~18 s of CPU each).
ON_THE_TRAINED_RUNS_WORKER = pytest.mark.xdist_group("evaltest_trained_run")


@pytest.fixture()
def adapter_run(trained_run, out_dir) -> Run:
    """A private copy of the trained run under this test's SMALLDATA_OUT."""
    run = Run("tiny", "evaltest", "r8")
    shutil.copytree(trained_run, run.output_dir)
    return run


def _answers(path: Path) -> dict[str, str]:
    return {r["id"]: r["answer"] for r in read_jsonl(path)}


@pytest.mark.slow
@ON_THE_TRAINED_RUNS_WORKER
def test_two_points_write_contract_rows_and_rerun_does_nothing(adapter_run, dataset_dir, monkeypatch):
    common = [
        "--run",
        adapter_run.name,
        "--testset",
        "mini_eval",
        "--dataset-dir",
        str(dataset_dir),
        "--quiet",
    ]
    argv = [*common, "--decoding", "greedy", "t1.3_p0.95", "--max-new-tokens", "12", "--batch-size", "2"]
    argv += ["--references", "mini_refs"]
    assert gen.main(argv) == 0
    greedy = adapter_run.predictions("mini_eval", "greedy")
    rows = list(read_jsonl(greedy))
    assert [r["id"] for r in rows] == ["p1", "p2", "p3", "p4", "p5"]
    assert all(set(r) == FIELDS for r in rows)
    assert rows[0]["reference"] == "ref of p1" and rows[3]["reference"] is None
    assert rows[0]["gen"] == DecodingPoint.greedy(max_new_tokens=12).as_gen()
    assert rows[0]["prompt"].endswith(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert all(0 < r["new_tokens"] <= 12 and r["run"] == adapter_run.name for r in rows)
    sampled = list(read_jsonl(adapter_run.predictions("mini_eval", "t1.3_p0.95")))
    assert sampled[0]["gen"]["temperature"] == 1.3 and sampled[0]["gen"]["do_sample"] is True
    side = json.loads(gen.sidecar_path(greedy).read_text())
    assert side["source"]["kind"] == "adapter" and side["n_without_reference"] == 1
    assert side["source"]["model_name_or_path"] == str((ROOT / "models/tiny-smollm2").resolve())
    assert side["tokens_per_s"] > 0 and side["peak_mem_mb"] > 0
    assert not gen.partial_path(greedy).exists()

    # a finished point is left alone: no model is even loaded
    before = greedy.stat().st_mtime_ns
    monkeypatch.setattr(gen, "open_engine", lambda *a, **k: pytest.fail("model loaded for a finished point"))
    assert gen.main(argv) == 0
    assert greedy.stat().st_mtime_ns == before
    # ... but another budget for the same point is refused rather than mixed in
    assert gen.main([*common, "--decoding", "greedy", "--max-new-tokens", "8"]) == 2


@pytest.mark.slow
@ON_THE_TRAINED_RUNS_WORKER
def test_a_policy_decodes_each_prompt_type_with_its_point_and_records_it(adapter_run, dataset_dir):
    argv = ["--run", adapter_run.name, "--testset", "mini_eval", "--dataset-dir", str(dataset_dir), "--quiet"]
    assert gen.main([*argv, "--decoding", "bytype_recipe", "--max-new-tokens", "6", "--batch-size", "2"]) == 0
    path = adapter_run.predictions("mini_eval", "bytype_recipe")
    rows = {r["id"]: r for r in read_jsonl(path)}
    types = {i: r["prompt_type"] for i, r in rows.items()}
    assert types == {"p1": "open", "p2": "open", "p3": "open", "p4": "writing", "p5": "math"}
    assert all(set(r) == FIELDS and r["decoding"] == "bytype_recipe" for r in rows.values())
    assert rows["p5"]["point"] == "greedy" and rows["p5"]["gen"]["do_sample"] is False
    assert rows["p4"]["point"] == "t0.7_p0.9" and rows["p4"]["gen"]["temperature"] == 0.7
    assert rows["p1"]["gen"]["repetition_penalty"] == 1.1 and rows["p1"]["gen"]["max_new_tokens"] == 6
    side = json.loads(gen.sidecar_path(path).read_text())
    assert side["policy"] and side["prompt_types"] == {"coding": 0, "math": 1, "writing": 1, "open": 3}
    assert side["gen"]["math"]["decoding"] == "greedy"
    # a finished policy point is left alone; the same name with another budget is refused
    assert gen.main([*argv, "--decoding", "bytype_recipe", "--max-new-tokens", "6"]) == 0
    assert gen.main([*argv, "--decoding", "bytype_recipe", "--max-new-tokens", "9"]) == 2


@pytest.mark.slow
@ON_THE_TRAINED_RUNS_WORKER
def test_decoding_settings_are_applied(adapter_run, dataset_dir):
    source = gen.resolve_source(adapter_run)
    engine = gen.Engine(source)  # loaded once for all the points
    prompts = gen.load_prompts("mini_eval", dataset_dir)

    def run(name: str, force=False) -> dict[str, str]:
        point = DecodingPoint.parse(name, max_new_tokens=10)
        path = gen.generate_point(engine, source, "mini_eval", prompts, point, 5, force=force, progress=False)
        return _answers(path)

    # the tiny random model repeats "\n" greedily; a repetition penalty makes greedy say something
    plain = run("greedy")
    rp = run("greedy_rp1.5")
    assert rp != plain and all(a.strip() for a in rp.values())
    assert run("greedy_rp1.5", force=True) == rp
    hot = run("t1.3_p0.95")
    assert run("t1.3_p0.95", force=True) == hot  # same seed: same text
    other = run("t1.3_p0.95_s7")
    assert sum(hot[k] != other[k] for k in hot) >= 4  # another seed: other text


@pytest.mark.slow
@ON_THE_TRAINED_RUNS_WORKER
def test_killed_generation_resumes_where_it_stopped(adapter_run, dataset_dir, tmp_path, monkeypatch):
    point = DecodingPoint.parse("t1.3_p0.95", max_new_tokens=10)

    def kill_after_first_batch(k):
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        gen.generate(adapter_run, "mini_eval", [point], 2, None, dataset_dir, on_batch=kill_after_first_batch)
    final = adapter_run.predictions("mini_eval", point.name)
    part = gen.partial_path(final)
    assert not final.exists() and len(list(read_jsonl(part))) == 2
    with open(part, "a") as f:
        f.write('{"id": "p9", "answ')  # torn line of a writer killed mid-append
    loaded = []
    real_open = gen.open_engine
    monkeypatch.setattr(gen, "open_engine", lambda *a, **k: loaded.append(1) or real_open(*a, **k))
    gen.generate(adapter_run, "mini_eval", [point], 2, None, dataset_dir, progress=False)
    resumed = _answers(final)
    assert list(resumed) == ["p1", "p2", "p3", "p4", "p5"] and not part.exists()

    # the same answers as a run that was never interrupted (batches are seeded by their number)
    assert loaded == [1]
    src = adapter_run.output_dir
    monkeypatch.setenv("SMALLDATA_OUT", str(tmp_path / "clean"))
    shutil.copytree(
        src,
        adapter_run.output_dir,
        ignore=shutil.ignore_patterns("eval"),
    )
    (clean,) = gen.generate(adapter_run, "mini_eval", [point], 2, None, dataset_dir, progress=False)
    assert _answers(clean) == resumed


@pytest.mark.slow
def test_merged_model_folder_and_limit(tiny_model, dataset_dir, out_dir):
    argv = ["--model-path", str(tiny_model), "--run", "tiny/export/r8", "--template", "smollm2"]
    argv += [
        "--testset",
        "mini_eval",
        "--dataset-dir",
        str(dataset_dir),
        "--limit",
        "2",
        "--max-new-tokens",
        "4",
    ]
    assert gen.main([*argv, "--quiet"]) == 0
    path = Run("tiny", "export", "r8").predictions("mini_eval", "greedy")
    assert [r["id"] for r in read_jsonl(path)] == ["p1", "p2"]
    assert json.loads(gen.sidecar_path(path).read_text())["source"]["kind"] == "merged"
    # a later call without the limit adds the missing prompts to the same file
    assert gen.main([*argv[:-4], "--max-new-tokens", "4", "--quiet"]) == 0
    assert len(list(read_jsonl(path))) == 5


@pytest.mark.slow
def test_base_run_reads_the_profile(dataset_dir, out_dir):
    src = gen.resolve_source("tiny/base/base")
    assert src.kind == "base" and src.adapter is None and src.template == "smollm2"
    (path,) = gen.generate(
        "tiny/base/base", "mini_eval", [DecodingPoint.greedy(max_new_tokens=4)], 8, 2, dataset_dir
    )
    assert len(list(read_jsonl(path))) == 2
