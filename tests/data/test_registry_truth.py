"""The registry tells the truth (issue 32): dataset_info.json lists only sets whose files exist (shipped
sets from the committed shipped_datasets.json, generated sets while their files are there), LlamaBoard's
Train dropdown never offers an evaluation set while LLaMA-Factory still trains with it as a dev set, and
`make data`'s command on a clean clone leaves `git status` clean."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from plugins.publishing import pipeline, registry
from tools.core.runinfo import command_of
from tools.data.cli import main as data_main

ROOT = Path(__file__).resolve().parents[2]
EVAL_SETS = ["demo_eval", "demo_dev", "hw5_test", "hw5_dev"]


def _shipped_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    for f in ("shipped_datasets.json", "demo_eval.json", "demo_dev.json"):
        shutil.copy(ROOT / "data" / f, d / f)
    return d


def _dropdown(dataset_dir: Path, stage: str = "Supervised Fine-Tuning") -> list[str]:
    """The names LlamaBoard's Train tab offers for a stage: its own list_datasets."""
    from llamafactory.webui.control import list_datasets

    dd = list_datasets(str(dataset_dir), stage)
    return [c[0] if isinstance(c, tuple) else c for c in dd.choices]


def test_the_committed_registry_names_only_shipped_sets_whose_files_exist():
    tracked = subprocess.run(
        ["git", "ls-files", "data"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    assert "data/dataset_info.json" not in tracked  # generated, ignored by git
    shipped = json.loads((ROOT / "data/shipped_datasets.json").read_text())
    assert sorted(shipped) == ["demo_dev", "demo_eval"]
    assert all(f"data/{e['file_name']}" in tracked for e in shipped.values())


def test_registry_lists_only_existing_sets_and_hides_eval_sets_from_llamaboard(tmp_path, capsys):
    d = _shipped_dir(tmp_path)
    assert sorted(registry.load_info(d)) == ["demo_dev", "demo_eval"]  # written from the shipped file
    assert (d / "dataset_info.json").exists()
    rc = data_main(["--source", "demo", "--n", "12", "--name", "top12", "--dataset-dir", str(d), "--no-plot"])
    assert rc == 0, capsys.readouterr().err
    rows = [
        {"id": f"h{i}", "instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."}
        for i in range(6)
    ]
    pipeline.write_eval(rows, "hw5_test", d, "hw5")
    pipeline.write_eval(rows, "hw5_dev", d, "hw5", role="dev")
    info = json.loads((d / "dataset_info.json").read_text())
    assert set(EVAL_SETS) <= set(info) and "top12" in info
    offered = _dropdown(d)
    assert "top12" in offered and {"top12_easy", "top12_medium", "top12_hard"} <= set(offered)
    assert not set(EVAL_SETS) & set(offered), offered
    assert not set(EVAL_SETS) & set(_dropdown(d, "DPO"))  # nor for a pairwise stage
    # a user's own set is left as it is and offered
    info["mine"] = {"file_name": "mine.json"}
    (d / "mine.json").write_text("[]")
    (d / "dataset_info.json").write_text(json.dumps(info, indent=2))
    assert "mine" in _dropdown(d)
    # generated files gone: their entries go (the user's and the shipped ones stay)
    shutil.rmtree(d / "generated")
    (d / "generated").mkdir()
    left = sorted(registry.load_info(d))
    assert left == ["demo_dev", "demo_eval", "mine"]
    assert sorted(json.loads((d / "dataset_info.json").read_text())) == left
    with pytest.raises(registry.RegistryError, match="top12"):
        registry.resolve("top12", d)


def test_llamafactory_still_validates_on_a_hidden_dev_set(tmp_path, tiny_model):
    """`eval_dataset: demo_dev` in a training config: LLaMA-Factory's loader reads it as SFT data."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    d = _shipped_dir(tmp_path)
    registry.load_info(d)
    args = dict(
        model_name_or_path=str(tiny_model), stage="sft", do_train=True, do_eval=True, finetuning_type="lora",
        dataset="demo_eval", eval_dataset="demo_dev", dataset_dir=str(d), template="smollm2",
        cutoff_len=256, output_dir=str(tmp_path / "o"), report_to="none", overwrite_cache=True,
    )  # fmt: skip
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tm = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tm["tokenizer"], data_args)
    ds = get_dataset(template, model_args, data_args, training_args, "sft", **tm)
    assert len(ds["eval_dataset"]) == 8 and len(ds["train_dataset"]) == 20


def test_make_data_on_a_clean_clone_leaves_git_status_clean(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    make = (ROOT / "Makefile").read_text()
    assert "$(PY) -m tools.data --source $(SOURCE) --strategy $(STRATEGY) --n $(N) $(DATA_ARGS)" in make
    cmd = [*command_of(data_main), "--source", "demo", "--strategy", "hw5_default", "--n", "100"]
    p = subprocess.run(cmd, cwd=clone, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    info = json.loads((clone / "data/dataset_info.json").read_text())
    assert "alpaca_top100" in info and all((clone / "data" / e["file_name"]).exists() for e in info.values())
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True
    ).stdout
    assert status == "", status
