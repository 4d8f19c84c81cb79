"""Leakage prevented, not only warned about (issue #30): pool rows that repeat a registered dev or test
prompt are dropped before selection on every path that writes a training set, and listed in the
manifest with the prompt each matched; `--keep-leaked` keeps them, flagged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from plugins.publishing import resolve
from tools.core.paths import ROOT
from tools.data import main as data_main
from tools.data.mix import main as mix_main

SHIPPED = ROOT / "data"


@pytest.fixture()
def ddir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    shutil.copy(SHIPPED / "demo_eval.json", d / "demo_eval.json")
    (d / "dataset_info.json").write_text("{}\n")
    assert data_main(["--dataset-dir", str(d), "--no-plot", "--eval", "demo"]) == 0  # demo_eval, demo_dev
    return d


def pool_with_test_prompts(tmp_path: Path, n: int = 60) -> tuple[Path, list[str]]:
    """A pool of long answers where two rows are verbatim (one reworded) demo_eval prompts."""
    test = json.loads((SHIPPED / "demo_eval.json").read_text())
    rows = [
        {"id": f"pool_{i}", "instruction": f"Describe topic number {i} in detail.", "input": "", "output": "word " * (50 + i)}
        for i in range(n)
    ]  # fmt: skip
    rows.append(
        {"id": "leak_exact", "instruction": test[0]["instruction"], "input": "", "output": "word " * 500}
    )
    rows.append(
        {
            "id": "leak_case",
            "instruction": test[1]["instruction"].upper() + "!",
            "input": "",
            "output": "w " * 499,
        }
    )
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(rows))
    return path, [test[0]["id"], test[1]["id"]]


def manifest(ddir: Path, name: str) -> dict:
    return json.loads((ddir / "generated" / name / f"{name}.manifest.json").read_text())


def test_selection_drops_pool_rows_that_repeat_a_test_prompt(ddir, tmp_path, capsys):
    pool, eval_ids = pool_with_test_prompts(tmp_path)
    assert (
        data_main(
            [
                "--dataset-dir",
                str(ddir),
                "--no-plot",
                "--source",
                str(pool),
                "--strategy",
                "length",
                "--n",
                "10",
            ]
        )
        == 0
    )
    chosen = {r["id"] for r in json.loads(resolve("alpaca_top10", ddir).read_text())}
    assert not {"leak_exact", "leak_case"} & chosen  # the longest rows: they would have been chosen first
    guard = manifest(ddir, "alpaca_top10")["leak_guard"]
    assert guard["policy"] == "dropped before selection"
    dropped = {r["id"]: r["matches"][0] for r in guard["dropped"]}
    assert set(dropped) == {"leak_exact", "leak_case"}
    assert {m["eval_id"] for m in dropped.values()} == set(eval_ids) and dropped["leak_exact"][
        "set"
    ] == "demo_eval"
    assert "leakage: 2 row(s) of the" in capsys.readouterr().out


def test_keep_leaked_keeps_them_and_says_so(ddir, tmp_path):
    pool, _ = pool_with_test_prompts(tmp_path)
    argv = [
        "--dataset-dir",
        str(ddir),
        "--no-plot",
        "--source",
        str(pool),
        "--strategy",
        "length",
        "--n",
        "10",
    ]
    assert data_main([*argv, "--keep-leaked"]) == 0
    chosen = {r["id"] for r in json.loads(resolve("alpaca_top10", ddir).read_text())}
    assert {"leak_exact", "leak_case"} <= chosen
    m = manifest(ddir, "alpaca_top10")
    assert m["leak_guard"]["policy"] == "kept (--keep-leaked)" and len(m["leak_guard"]["kept"]) == 2
    assert m["leakage"]["n_overlapping_rows"] == 2  # the chosen rows' own check still shows them


def test_the_general_mix_never_adds_a_test_prompt(ddir, tmp_path, capsys):
    pool, _ = pool_with_test_prompts(tmp_path, n=200)
    assert data_main(["--dataset-dir", str(ddir), "--no-plot", "--source", "demo", "--n", "20"]) == 0
    argv = ["--dataset", "alpaca_top20", "--general", str(pool), "--share", "0.5", "--heldout-n", "5"]
    assert mix_main([*argv, "--dataset-dir", str(ddir)]) == 0
    mixed = {r["id"] for r in json.loads(resolve("alpaca_top20_mix", ddir).read_text())}
    m = manifest(ddir, "alpaca_top20_mix")
    listed = {r["id"] for r in m["leak_guard"]["dropped"]}
    assert not {"leak_exact", "leak_case"} & mixed and listed <= {"leak_exact", "leak_case"}
    assert all(r not in mixed for r in listed)


def test_hw5s_default_top_100_no_longer_carries_a_test_prompt(tmp_path, shared_data):
    """The real case: on the real 2k pool, HW5's default top 100 held hw5_test's identity_16675 verbatim."""
    d = tmp_path / "data"
    d.mkdir()
    (d / "dataset_info.json").write_text("{}\n")
    argv = [
        "--dataset-dir",
        str(d),
        "--no-plot",
        "--source",
        "hw5",
        "--eval",
        "hw5",
        "--data-dir",
        str(shared_data),
    ]
    assert data_main(argv) == 0
    chosen = {r["id"] for r in json.loads(resolve("alpaca_top100", d).read_text())}
    # pool row identity_48727 is hw5_test's identity_16675 word for word: chosen by HW5's default before
    assert "identity_48727" not in chosen and len(chosen) == 100
    dropped = {r["id"]: r["matches"] for r in manifest(d, "alpaca_top100")["leak_guard"]["dropped"]}
    assert {"set": "hw5_test", "eval_id": "identity_16675", "kind": "exact", "shared_share": 1.0} in dropped[
        "identity_48727"
    ]
    assert len(dropped) == 4  # 3 exact test prompts and 1 near dev prompt in the 2k pool
