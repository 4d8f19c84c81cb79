"""The leakage guard: training rows that repeat a dev or test prompt, exactly or reworded, are caught
before training, warned about with their ids and recorded in the subset's manifest."""

from __future__ import annotations

import json

from plugins.publishing import resolve
from plugins.selection import leakage
from tools.data import main

TEST = [
    {"id": "t1", "instruction": "Explain the difference between weather and climate.", "input": ""},
    {
        "id": "t2",
        "instruction": "Describe the water cycle in detail, including evaporation, condensation, "
        "precipitation and collection, and explain why it matters for agriculture.",
        "input": "",
    },
]


def test_exact_and_near_duplicates_are_caught_and_others_are_not():
    rows = [
        {"id": "a", "instruction": "  explain the DIFFERENCE between weather and climate!", "input": ""},
        {  # reworded ending, same long runs of words: a near-duplicate
            "id": "b",
            "instruction": "Describe the water cycle in detail, including evaporation, condensation, "
            "precipitation and collection, and say why farmers care.",
            "input": "",
        },
        {"id": "c", "instruction": "Write a haiku about autumn leaves.", "input": ""},
        {"id": "d", "instruction": "Explain the difference between a list and a tuple.", "input": ""},
    ]
    found = leakage.check(rows, {"demo_eval": TEST})
    assert [(f["id"], f["eval_id"], f["kind"]) for f in found] == [("a", "t1", "exact"), ("b", "t2", "near")]
    assert 0.5 <= found[1]["shared_share"] < 1
    s = leakage.summary(found, {"demo_eval": TEST})
    assert s["n_overlapping_rows"] == 2 and s["checked_against"] == {"demo_eval": 2}


def test_kept_leaked_rows_are_warned_and_recorded_by_the_data_pipeline(tmp_path, out_dir, capsys):
    pool = [
        {
            "id": f"r{i}",
            "instruction": f"Write the number {i} in words, please.",
            "input": "",
            "output": f"{i}",
        }
        for i in range(12)
    ]
    # planted: a copy of one of the shipped test prompts (demo_eval) and of a dev prompt (demo_dev)
    pool.append(
        {"id": "leak_test", "instruction": "Explain why the sky is blue.", "input": "", "output": "x"}
    )
    pool.append(
        {"id": "leak_dev", "instruction": "Explain why we have seasons on Earth.", "input": "", "output": "x"}
    )
    src = tmp_path / "pool.json"
    src.write_text(json.dumps(pool))
    ddir = tmp_path / "data"
    argv = ["--source", src, "--strategy", "length", "--n", 14, "--eval", "demo", "--dataset-dir", ddir]
    # dropped by default (tests/data/test_leak_guard.py); kept here on request, so warned and recorded
    assert main([str(a) for a in [*argv, "--no-plot", "--keep-leaked"]]) == 0
    out = capsys.readouterr().out
    assert "warning: leakage: 2 row(s) of alpaca_top14 repeat a dev/test prompt" in out
    assert (
        "leak_test~demo_eval:demo_eval_18 (exact)" in out and "leak_dev~demo_dev:demo_dev_07 (exact)" in out
    )
    m = json.loads((ddir / "generated/alpaca_top14/alpaca_top14.manifest.json").read_text())
    assert m["leakage"]["checked_against"] == {"demo_eval": 20, "demo_dev": 8}
    assert {(o["id"], o["set"]) for o in m["leakage"]["overlaps"]} == {
        ("leak_test", "demo_eval"),
        ("leak_dev", "demo_dev"),
    }
    info = json.loads((ddir / "dataset_info.json").read_text())
    assert info["demo_dev"]["smalldata"]["role"] == "dev" and info["demo_eval"]["smalldata"]["role"] == "test"
    # the report shows it
    from tools.report.data import leakage_lines

    lines = leakage_lines(ddir / "generated", ["alpaca_top14_easy", "alpaca_top14_medium"])  # its stages
    assert len(lines) == 1 and "2 training row(s) of alpaca_top14 repeat a dev/test prompt" in lines[0]
    # a later selection without --eval still checks against the registered dev and test sets
    assert (
        main(
            [
                str(a)
                for a in [
                    "--source",
                    src,
                    "--n",
                    3,
                    "--name",
                    "other",
                    "--dataset-dir",
                    ddir,
                    "--no-plot",
                    "--strategy",
                    "random",
                ]
            ]
        )
        == 0
    )
    m2 = json.loads((ddir / "generated/other/other.manifest.json").read_text())
    assert m2["leakage"]["checked_against"] == {"demo_eval": 20, "demo_dev": 8}


def test_hw5_dev_is_disjoint_from_hw5_test(tmp_path, shared_data, capsys):
    ddir = tmp_path / "data"
    assert main(["--eval", "hw5", "--dataset-dir", str(ddir), "--shared", str(shared_data)]) == 0
    info = json.loads((ddir / "dataset_info.json").read_text())
    assert (
        info["hw5_dev"]["smalldata"]["role"] == "dev"
        and len(json.loads(resolve("hw5_dev", ddir).read_text())) == 150
    )
    dev = json.loads((ddir / info["hw5_dev"]["file_name"]).read_text())
    test = json.loads((ddir / info["hw5_test"]["file_name"]).read_text())
    assert not {r["id"] for r in dev} & {r["id"] for r in test}
    assert all(r["output"] for r in dev)
    assert leakage.check(dev, {"hw5_test": test}) == []
