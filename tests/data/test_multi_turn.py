"""Conversations of several exchanges are kept whole (issue 32): read into `turns`, published in
LLaMA-Factory's sharegpt form through `python -m tools.data`, loaded by LLaMA-Factory's own data loader
with every turn, and refused with a count by a strategy that scores single question-answer pairs."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

from plugins.pools import load_rows, load_table
from tools.core.runinfo import command_of
from tools.data.cli import main as data_main

ROOT = Path(__file__).resolve().parents[2]
FOUR = [
    {"from": "system", "value": "You are terse."},
    {"from": "human", "value": "What is a list in Python?"},
    {"from": "gpt", "value": "A mutable sequence."},
    {"from": "human", "value": "And a tuple?"},
    {"from": "gpt", "value": "An immutable sequence."},
    {"from": "human", "value": "Which one is hashable?"},
    {"from": "gpt", "value": "A tuple of hashable items."},
    {"from": "human", "value": "Give an example."},
    {"from": "gpt", "value": "hash((1, 2)) works; hash([1, 2]) raises TypeError."},
]
LIMA = ["How do I reverse a string?", "Use s[::-1].", "And a list?", "Use lst.reverse() or lst[::-1]."]
POOL = [
    {"id": "four", "conversations": FOUR},
    {"id": "lima", "conversations": LIMA},
    {
        "id": "s1",
        "conversations": [{"from": "human", "value": "Name a prime."}, {"from": "gpt", "value": "7."}],
    },
    {
        "id": "s2",
        "conversations": [
            {"from": "human", "value": "Capital of France?"},
            {"from": "gpt", "value": "Paris."},
        ],
    },
]


def _pool(tmp_path: Path) -> Path:
    p = tmp_path / "pool.json"
    p.write_text(json.dumps(POOL))
    return p


def test_conversations_are_read_whole_and_counted(tmp_path, caplog):
    t = load_table(_pool(tmp_path), require_answer=True)
    rows = {r["id"]: r for r in t.rows}
    assert t.multi_turn == 2
    assert [x["value"] for x in rows["four"]["turns"]] == [x["value"] for x in FOUR[1:]]
    assert rows["four"]["system"] == "You are terse."
    assert [x["value"] for x in rows["lima"]["turns"]] == LIMA
    assert [x["from"] for x in rows["lima"]["turns"]] == ["human", "gpt", "human", "gpt"]
    assert "turns" not in rows["s1"]  # one exchange stays a plain row
    with caplog.at_level(logging.WARNING):
        load_rows(_pool(tmp_path))
    assert "2 rows are conversations of several exchanges" in caplog.text


def test_tools_data_publishes_them_whole_and_llamafactory_trains_every_turn(tmp_path, tiny_model):
    ddir = tmp_path / "data"
    cmd = [*command_of(data_main), "--source", str(_pool(tmp_path)), "--strategy", "random", "--n", "4"]
    cmd += ["--name", "mt_demo", "--dataset-dir", str(ddir), "--no-plot"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    info = json.loads((ddir / "dataset_info.json").read_text())
    assert info["mt_demo"]["formatting"] == "sharegpt"
    assert info["mt_demo"]["columns"] == {"messages": "conversations", "system": "system"}
    published = json.loads((ddir / info["mt_demo"]["file_name"]).read_text())
    manifest = json.loads((ddir / info["mt_demo"]["smalldata"]["manifest"]).read_text())
    assert manifest["multi_turn"] == 2  # counted where the set is described
    four = next(r for r in published if r["id"] == "four")
    assert four["conversations"] == FOUR[1:] and four["system"] == "You are terse."

    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = dict(
        model_name_or_path=str(tiny_model), stage="sft", do_train=True, finetuning_type="lora",
        dataset="mt_demo", dataset_dir=str(ddir), template="smollm2", cutoff_len=1024,
        output_dir=str(tmp_path / "out"), report_to="none", overwrite_cache=True,
    )  # fmt: skip
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tm = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tm["tokenizer"], data_args)
    ds = get_dataset(template, model_args, data_args, training_args, "sft", **tm)["train_dataset"]
    texts = [tm["tokenizer"].decode(ex["input_ids"]) for ex in ds]
    assert len(texts) == 4
    whole = next(t for t in texts if "You are terse." in t)
    for turn in FOUR[1:]:
        assert turn["value"] in whole  # all four exchanges, not the first
    assert whole.count("<|im_start|>assistant") == 4
    lima = next(t for t in texts if LIMA[0] in t)
    assert all(x in lima for x in LIMA)
    # the training labels cover every answer, the last one included
    ex = ds[texts.index(whole)]
    labelled = tm["tokenizer"].decode([i for i in ex["labels"] if i >= 0])
    assert all(turn["value"] in labelled for turn in FOUR[2::2])


def test_a_single_turn_strategy_refuses_with_a_count(tmp_path, capsys):
    ddir = tmp_path / "data"
    args = ["--source", str(_pool(tmp_path)), "--strategy", "length", "--n", "2", "--name", "mt_len"]
    rc = data_main([*args, "--dataset-dir", str(ddir), "--no-plot"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "2 of 4 pool rows are conversations of several exchanges" in err and "--strategy random" in err
    assert not (ddir / "generated" / "mt_len").exists()
