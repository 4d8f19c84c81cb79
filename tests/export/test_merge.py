"""Merges: PEFT TIES/DARE into new adapter runs scored by the evaluation tools, mergekit on exports, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.export.test_export import fake_finished_run, install, train_tiny_adapter
from tools.core.paths import Run
from tools.export import merge
from tools.export.export import Refused, export_run

A, B = Run("tiny", "t", "a"), Run("tiny", "t", "b")


@pytest.fixture(scope="module")
def trained(tiny_trained, tiny_model, tmp_path_factory) -> Path:
    """Run a is the session's (tests/export/conftest.py: lr 5e-3), copied; run b is trained here at 1e-2."""
    root = tmp_path_factory.mktemp("merge_runs")
    shutil.copytree(tiny_trained / "saves", root / "saves")
    train_tiny_adapter(tiny_model, root / "saves/tiny/lora/t/b", lr=1e-2)
    return root


def test_refusals_name_the_problem_and_write_nothing(out_dir):
    a, b = fake_finished_run(out_dir, A), fake_finished_run(out_dir, B)
    r4 = fake_finished_run(out_dir, Run("tiny", "t", "r4"), rank=4)
    for method in ("linear", "ties", "dare_ties", "dare_linear"):
        with pytest.raises(Refused, match=r"equal LoRA rank.*tiny/t/a r=8.*tiny/t/r4 r=4.*cat"):
            merge.merge_adapters([a, r4], method, "x")
    assert merge.check_sources([a, r4], "cat", None)[1]["rank"] == 4  # cat and svd take unequal ranks

    other = fake_finished_run(out_dir, Run("tiny", "t", "other"), base="models/smollm2-135m-instruct")
    with pytest.raises(Refused, match="different base models.*tiny/t/other: models/smollm2-135m-instruct"):
        merge.merge_adapters([a, other], "ties", "x")
    qlora = fake_finished_run(out_dir, Run("tiny", "t", "q"), resolved_config={"quantization_bit": 4})
    with pytest.raises(Refused, match="quantised base"):
        merge.merge_adapters([a, qlora], "ties", "x")
    (b.done_marker).unlink()
    with pytest.raises(Refused, match="tiny/t/b is not finished"):
        merge.merge_adapters([a, b], "ties", "x")
    with pytest.raises(Refused, match="no output folder"):
        merge.merge_adapters([a, Run("tiny", "t", "nope")], "ties", "x")
    with pytest.raises(Refused, match="at least two runs"):
        merge.merge_adapters([a], "ties", "x")
    with pytest.raises(Refused, match="3 weights for 2 runs"):
        merge.merge_adapters([a, r4], "cat", "x", weights=[1, 1, 1])
    with pytest.raises(Refused, match="exactly two"):
        merge.merge_models([a, r4, other], "slerp", "x")
    with pytest.raises(Refused, match="export first"):
        merge.merge_models([a, r4], "task_arithmetic", "x")
    assert merge.main(["--method", "ties", "--runs", "tiny/t/a", "tiny/t/r4", "--name", "x"]) == 2
    assert not (out_dir / "saves/tiny/lora/merge").exists() and not (out_dir / "exports").exists()


def _score(run: Run, data: Path) -> list[dict]:
    """The evaluation tools, as `make eval` calls them, on two prompts."""
    from tools.eval import generate, metrics

    args = ["--run", str(run), "--testset", "tiny_eval", "--dataset-dir", str(data)]
    assert generate.main([*args, "--max-new-tokens", "6", "--quiet"]) == 0
    assert metrics.main([*args, "--no-ppl", "--no-similarity"]) == 0
    assert json.loads(run.metrics("tiny_eval", "greedy").read_text())["n"] == 2
    return [json.loads(x) for x in run.predictions("tiny_eval", "greedy").read_text().splitlines()]


@pytest.mark.slow
def test_ties_and_dare_make_adapter_runs_the_evaluation_tools_score(trained, out_dir, tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tools.export.export import run_info

    install(trained, out_dir)
    data = tmp_path / "ds"
    data.mkdir()
    rows = [{"id": "q1", "instruction": "Name a colour.", "input": "", "output": "Blue."}]
    rows.append({"id": "q2", "instruction": "What is 2+2?", "input": "", "output": "4"})
    (data / "ev.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(json.dumps({"tiny_eval": {"file_name": "ev.json"}}))

    ties = merge.merge_adapters([A, B], "ties", "pair", density=0.5)
    assert (
        merge.main(["--method", "dare_ties", "--runs", str(A), str(B), "--name", "pair", "--seed", "1"]) == 0
    )
    dare = Run("tiny", "merge", "dare_ties_pair")
    for run, method in ((ties, "ties"), (dare, "dare_ties")):
        assert run.is_finished() and run.output_dir == out_dir / f"saves/tiny/lora/merge/{method}_pair"
        info = json.loads(run.run_json.read_text())
        assert info["status"] == "finished" and info["template"] == "smollm2"
        assert info["hparams"]["method"] == method and info["hparams"]["sources"] == ["tiny/t/a", "tiny/t/b"]
        assert info["hparams"]["density"] == 0.5 and info["hparams"]["weights"] == [1.0, 1.0]
        preds = _score(run, data)
        assert [p["id"] for p in preds] == ["q1", "q2"] and all(p["run"] == str(run) for p in preds)

    # The merged adapter loads with PEFT and moves the base model's logits.
    base = AutoModelForCausalLM.from_pretrained(run_info(ties)["base_path"], dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        merged = PeftModel.from_pretrained(base, str(ties.output_dir))(input_ids=ids).logits
    assert (merged - plain).abs().max() > 1e-3
    # DARE drops at random: seeded, so a repeated merge is identical; another seed is not.
    again = merge.merge_adapters([A, B], "dare_ties", "again", seed=1)
    other = merge.merge_adapters([A, B], "dare_ties", "other", seed=2)
    w1, w2, w3 = (load_file(r.adapter) for r in (dare, again, other))
    assert all(torch.equal(w1[k], w2[k]) for k in w1) and not all(torch.equal(w1[k], w3[k]) for k in w1)


@pytest.mark.slow
def test_mergekit_slerp_and_task_arithmetic_on_exports(trained, out_dir):
    import torch
    from safetensors.torch import load_file

    from tools.export.export import run_info

    install(trained, out_dir)
    for run in (A, B):
        export_run(run)
    assert (
        merge.main(
            ["--method", "task_arithmetic", "--runs", str(A), str(B), "--name", "sum", "--weights", "1", "1"]
        )
        == 0
    )
    slerp = merge.merge_models([A, B], "slerp", "mid", t=0.5)
    ta = Run("tiny", "merge", "task_arithmetic_sum").export_dir
    rec = json.loads((ta / "export.json").read_text())
    assert rec["sources"] == ["tiny/t/a", "tiny/t/b"] and rec["method"] == "task_arithmetic"

    key = "model.layers.0.self_attn.q_proj.weight"
    wa, wb = (load_file(r.export_dir / "model.safetensors")[key] for r in (A, B))
    w0 = load_file(Path(run_info(A)["base_path"]) / "model.safetensors")[key]
    assert not torch.allclose(wa, w0)
    # Task arithmetic adds both task vectors to the base; SLERP lies between the two models.
    assert torch.allclose(load_file(ta / "model.safetensors")[key], w0 + (wa - w0) + (wb - w0), atol=1e-5)
    ws = load_file(slerp / "model.safetensors")[key]
    assert (ws - (wa + wb) / 2).abs().max() < (wa - wb).abs().max() / 2
    assert (slerp / "tokenizer.json").exists() and (slerp / "config.json").exists()
