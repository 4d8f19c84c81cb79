"""Loaders and registry: every shape, HW5's preamble, the real files, and every kind of broken input."""

from __future__ import annotations

import json

import pytest

from plugins.pools import DataError, load_rows, load_table, split_preamble
from plugins.publishing import RegistryError, alpaca_entry, load_info, register, resolve
from tools.core.paths import DATA

PRE = "Below is an instruction that describes a task. Write a response that appropriately completes the request. "
PRE_IN = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. "
)


def write(tmp_path, name, obj) -> str:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_every_shape_normalises_to_the_same_row(tmp_path):
    want = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
    files = {
        "a.json": [{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "id": "x"}],
        "s.json": [
            {
                "id": "x",
                "conversations": [
                    {
                        "from": "human",
                        "value": f"{PRE_IN}### Instruction: Add the numbers. ### Input: 2 and 3",
                    },
                    {"from": "gpt", "value": "5"},
                ],
            }
        ],
        "o.jsonl": '{"id": "x", "messages": [{"role": "system", "content": "be brief"}, '
        '{"role": "user", "content": "Add the numbers.", "x": 1}, {"role": "assistant", "content": "5"}], '
        '"input": "ignored"}\n',
    }
    for name, obj in files.items():
        rows = load_rows(write(tmp_path, name, obj))
        assert rows[0]["id"] == "x" and rows[0]["output"] == "5"
        assert rows[0]["instruction"] == want["instruction"]
    assert load_rows(tmp_path / "s.json")[0]["input"] == "2 and 3"
    assert load_table(tmp_path / "o.jsonl").shape == "openai"


def test_prompt_only_files_and_forcing_a_shape(tmp_path):
    p = write(
        tmp_path, "p.json", [{"Instruction": "Name a colour.", "idx": 3}, {"Instruction": "Name a fruit."}]
    )
    t = load_table(p)
    assert t.shape == "prompt" and [r["id"] for r in t.rows] == ["3", "p-00001"]
    assert all(r["output"] == "" for r in t.rows)
    a = write(tmp_path, "a.json", [{"instruction": "Q", "output": "A", "reference": "R"}])
    assert load_rows(a, shape="prompt")[0]["output"] == "A"
    with pytest.raises(DataError, match="unknown shape 'csv'"):
        load_rows(a, shape="csv")


def test_preamble_parsing():
    assert split_preamble(f"{PRE}### Instruction: Say hi.") == ("Say hi.", "")
    assert split_preamble(f"{PRE_IN}### Instruction: Sum.\n### Input: 1, 2\n\n### Response:") == (
        "Sum.",
        "1, 2",
    )
    assert split_preamble("Plain question?") == ("Plain question?", "")


def test_real_files(shared_data):
    hw5 = load_table(shared_data / "hw5/test_set_evol_instruct_150.json")
    assert hw5.shape == "prompt" and len(hw5.rows) == 150
    assert not any(r["instruction"].startswith("Below is") for r in hw5.rows)
    pool = load_table(shared_data / "long_is_more/filtered_alpaca_1k_score.json")
    assert pool.shape == "sharegpt" and len(pool.rows) == 1000 and not pool.duplicates
    with_input = [r for r in pool.rows if r["input"]]
    assert with_input and "### Input" not in with_input[0]["instruction"]
    assert all(r["score"] in (4.5, 5.0) for r in pool.rows)


def test_shipped_eval_set_is_registered():
    rows = load_rows(resolve("demo_eval"))
    assert 16 <= len(rows) <= 24 and all(r["id"] and r["output"] for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)
    assert resolve("demo_eval") == DATA / "demo_eval.json"


@pytest.mark.parametrize(
    "name,content,pattern",
    [
        (
            "u.json",
            [{"question_text": "q", "answer_text": "a"}],
            r"u\.json: row 0: unknown shape; keys found: \['answer",
        ),
        ("b.json", '[{"instruction": "q", "output": "a"},', r"b\.json: broken JSON: line 1 column"),
        (
            "b.jsonl",
            '{"instruction": "q", "output": "a"}\n{"instruction": "q2", "out\n',
            r"b\.jsonl: line 2: broken",
        ),
        (
            "e.json",
            [{"instruction": "q", "output": "a"}, {"instruction": "q2", "output": "  "}],
            r"e\.json: row 1: field 'output' is empty",
        ),
        (
            "n.json",
            [{"instruction": "q", "output": "a"}, {"instruction": ["q"], "output": "a"}],
            r"n\.json: row 1: field 'instruction' must be a string, found list",
        ),
        (
            "g.json",
            [
                {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
                {"conversations": [{"from": "human", "value": "q2"}, {"from": "gpt", "value": 3}]},
            ],
            r"g\.json: row 1: field 'conversations\[1\]\.value' must be a string, found int",
        ),
        (
            "s.json",
            [{"instruction": "q", "output": "a", "score": "high"}],
            r"s\.json: row 0: field 'score' must be a number",
        ),
        ("z.json", [], r"z\.json: empty pool"),
        ("w.json", "", r"w\.json: the file is empty"),
    ],
)
def test_broken_input_names_file_row_field(tmp_path, name, content, pattern):
    with pytest.raises(DataError, match=pattern):
        load_rows(write(tmp_path, name, content), require_answer=True)


def test_evaluation_sets_may_lack_answers(tmp_path):
    rows = [{"id": "a", "instruction": "q", "input": "", "output": ""}]
    assert load_rows(write(tmp_path, "e.json", rows))[0]["output"] == ""
    with pytest.raises(DataError, match=r"e\.json: row 0: field 'output' is empty"):
        load_rows(tmp_path / "e.json", require_answer=True)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.json: file not found"):
        load_rows(tmp_path / "nope.json")


def test_duplicates_are_reported_and_dropped(tmp_path):
    rows = [
        {"id": "a", "instruction": "Q", "input": "", "output": "first"},
        {"id": "b", "instruction": "Q ", "input": "", "output": "second"},
        {"id": "a", "instruction": "Other", "input": "", "output": "x"},
    ]
    t = load_table(write(tmp_path, "d.json", rows))
    assert [r["output"] for r in t.rows] == ["first", "x"]
    assert t.duplicates == [{"id": "b", "row": 1, "duplicate_of": "a"}]
    assert [r["id"] for r in t.rows] == ["a", "a#2"]  # a different row under a used id is renamed


def test_registry_merges_refuses_user_entries_and_resolves(tmp_path):
    (tmp_path / "mine.json").write_text("[]")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"user_set": {"file_name": "u.json"}}))
    register({"ours": alpaca_entry(tmp_path / "mine.json", tmp_path)}, tmp_path)
    register({"ours": alpaca_entry(tmp_path / "mine.json", tmp_path, n=2)}, tmp_path)  # ours: replaced
    info = load_info(tmp_path)
    assert info["user_set"] == {"file_name": "u.json"} and info["ours"]["smalldata"]["n"] == 2
    before = (tmp_path / "dataset_info.json").read_text()
    with pytest.raises(RegistryError, match="user_set already registered by someone else"):
        register({"user_set": alpaca_entry(tmp_path / "mine.json", tmp_path)}, tmp_path)
    assert (tmp_path / "dataset_info.json").read_text() == before
    register({"user_set": alpaca_entry(tmp_path / "mine.json", tmp_path)}, tmp_path, force=True)
    assert resolve("user_set", tmp_path) == tmp_path / "mine.json"
    with pytest.raises(RegistryError, match="'nope' is not registered.*registered: ours, user_set"):
        resolve("nope", tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
    (tmp_path / "mine.json").unlink()
    with pytest.raises(RegistryError, match=r"ours: its file .*mine\.json does not exist \(run `make data`"):
        resolve("ours", tmp_path)


def test_llamafactory_parses_our_entries(tmp_path):
    import shutil

    from llamafactory.data.parser import get_dataset_list
    from llamafactory.webui.common import load_dataset_info

    from plugins.publishing.registry import SHIPPED, sync

    # dataset_info.json is generated (git-ignored): a fresh clone has the shipped sets only once a tool syncs
    for f in (SHIPPED, "demo_eval.json", "demo_dev.json"):
        shutil.copy(DATA / f, tmp_path / f)
    sync(tmp_path)
    attrs = get_dataset_list(["demo_eval"], str(tmp_path))
    assert attrs[0].load_from == "file" and attrs[0].prompt == "instruction" and attrs[0].response == "output"
    assert "demo_eval" in [
        k for k, v in load_dataset_info(str(tmp_path)).items() if not v.get("ranking", False)
    ]
