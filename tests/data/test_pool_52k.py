"""HW5's 52k pool, end to end, without the 52k file: a 52,002-row pool in FastChat's shape (HW5's
fastchat_alpaca_52k.json) made HERE by scaling up the real 2k Alpaca rows of ../shared/data (each copy's
instruction tagged "(variant k)", ids suffixed, so no row is a duplicate) - synthetic, and said so.
It goes through selection, every strategy (IFD on a prefiltered candidate set, as on a CPU), the
curriculum, registration, and the chained curriculum trains on its stages (tiny model). The hub path
runs for real, offline: the pool is put in a Hugging Face datasets cache the way an online
`load_dataset("kciree/fastchat_alpaca_52k")` leaves it, then loaded by name through tools.data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from plugins.pools import load_rows
from plugins.publishing import load_info, resolve
from plugins.selection import Context, score, top_n
from tools.bench.data import make_pool
from tools.core.paths import Run
from tools.data import main as data_main
from tools.data.cli import load_source
from tools.flows import sweep

HUB_NAME = "kciree/fastchat_alpaca_52k"  # HW5's pool on the hub (data README); here only in a local cache
STUDY_52K = [
    "--all-strategies",
    "--eval",
    "hw5",
    "--no-plot",
    "--ifd-candidates",
    "12",
    "--ifd-max-tokens",
    "48",
    "--diversity-candidates",
    "300",
]


@pytest.fixture(scope="module")
def pool_52k(tmp_path_factory, shared_data) -> Path:
    path = tmp_path_factory.mktemp("pool") / "fastchat_alpaca_52k.json"
    note = make_pool(path, 52_002)
    assert "52002 rows" in note and "the real 2k Alpaca rows" in note
    return path


def test_ties_are_broken_by_id_not_by_file_order(shared_data):
    rows = load_source("hw5", None, shared_data)[0]
    ratings = np.array([r["score"] for r in rows])
    assert (ratings == 4.5).sum() == 1238  # the issue counted 1,250 before the 28 duplicates are dropped
    pick = [rows[i]["id"] for i in top_n(rows, score(rows, "rating", Context()), 100)[0]]
    rev = rows[::-1]
    assert [rev[i]["id"] for i in top_n(rev, score(rev, "rating", Context()), 100)[0]] == pick
    tied = [i for i in pick if i in {r["id"] for r in rows if r["score"] == 4.5}]
    assert tied == sorted(tied)


@pytest.mark.slow
def test_a_52k_pool_through_every_strategy_the_curriculum_and_the_chain(
    pool_52k, shared_data, tiny_model, out_dir, tmp_path, capsys
):
    ddir = tmp_path / "data"
    args = ["--source", pool_52k, "--n", 100, "--dataset-dir", ddir, "--model", tiny_model, *STUDY_52K]
    assert data_main([str(a) for a in args]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "load: " + str(pool_52k) + ": 52002 rows, 0 duplicates dropped" in out
    # prefiltered on a CPU, and the manifest says so; the pool is what the leakage guard left of the 52,002
    assert re.search(r"IFD on 12 of 5\d{4} rows", out), out
    m = json.loads((ddir / "generated/alpaca_top100/alpaca_top100.manifest.json").read_text())
    counts = m["curriculum"]["counts"]
    assert sum(counts.values()) == 100 and min(counts.values()) >= 33  # thirds: never an empty stage
    info = load_info(ddir)
    for s in ("random_s0", "rating", "hw5_default", "length", "long_is_more", "complexity", "ifd", "mix"):
        assert len(load_rows(resolve(f"alpaca_top100_by_{s}", ddir))) == 100
        assert info[f"alpaca_top100_by_{s}"]["smalldata"]["kind"] == "train"
    ifd = json.loads(
        (ddir / "generated/alpaca_top100_by_ifd/alpaca_top100_by_ifd.manifest.json").read_text()
    )["ifd"]
    assert ifd["prefiltered"] and ifd["candidates"] == 12 and 51_000 <= ifd["pool"] <= 52_002
    # diversity on a cut-down budget too (its default: test_diversity_quota, and the quota command of
    # tests/docs/test_commands_run.py on the demo pool)
    div = json.loads(
        (ddir / "generated/alpaca_top100_by_diversity/alpaca_top100_by_diversity.manifest.json").read_text()
    )["diversity"]
    assert div["candidates"] == 300 and div["prefilter"] == "hw5_default" and 51_000 <= div["pool"] <= 52_002
    assert len(load_rows(resolve("hw5_test", ddir))) == 150
    # the chained curriculum (stage1_easy -> stage2_easy_medium -> stage3_all) trains on these stages
    only = "stage1_easy,stage2_easy_medium,stage3_all"
    argv = [
        "--study",
        "curriculum",
        "--model",
        "tiny",
        "--only",
        only,
        "--no-eval",
        "--warm",
        "--dataset-dir",
        str(ddir),
    ]
    assert sweep.main(argv) == 0, capsys.readouterr().out
    recs = {v: json.loads(Run("tiny", "curriculum", v).run_json.read_text()) for v in only.split(",")}
    assert all(r["status"] == "finished" for r in recs.values())
    s2, s3 = recs["stage2_easy_medium"]["resolved_config"], recs["stage3_all"]["resolved_config"]
    assert s2["adapter_name_or_path"] == str(Run("tiny", "curriculum", "stage1_easy").output_dir)
    assert s3["adapter_name_or_path"] == str(Run("tiny", "curriculum", "stage2_easy_medium").output_dir)
    assert s3["dataset"] == "alpaca_top100_easy,alpaca_top100_medium,alpaca_top100_hard"


def put_in_datasets_cache(
    hf_home: Path, name: str, data_file: Path | dict[str, Path], config: str = "default"
) -> Path:
    """What an online `datasets.load_dataset(name[, config])` leaves behind, made from local files (one
    file for a `train` split, or {split: file}): the hub snapshot (hub/datasets--org--name/snapshots/
    <commit>/ + refs/main) and the prepared Arrow cache (datasets/org___name/<config>/0.0.0/<hash>/).
    datasets 4.0 reads the second when offline."""
    from datasets.data_files import DataFilesDict
    from datasets.packaged_modules.json.json import Json, JsonConfig

    files = data_file if isinstance(data_file, dict) else {"train": data_file}
    commit = "5eb1a9b0" * 5
    repo = hf_home / "hub" / f"datasets--{name.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for split, f in files.items():
        (snap / f"{split}{f.suffix}").symlink_to(f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    patterns = {split: [str(snap / f"{split}{f.suffix}")] for split, f in files.items()}

    class HubJson(Json):  # the builder the hub path picks for a repo of JSON files
        BUILDER_CONFIGS = [JsonConfig(name=config, data_files=DataFilesDict.from_patterns(patterns))]

    builder = HubJson(
        cache_dir=str(hf_home / "datasets"),
        dataset_name=name.split("/")[1],
        repo_id=name,
        hash=commit[:16],
        config_name=config,
    )
    builder.download_and_prepare()
    return Path(builder.cache_dir)


@pytest.mark.slow
def test_the_hub_path_offline_from_a_populated_cache(pool_52k, tmp_path, monkeypatch, capsys):
    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hf_home / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_home / "datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    cached = put_in_datasets_cache(hf_home, HUB_NAME, pool_52k)
    assert cached.is_relative_to(hf_home / "datasets" / "kciree___fastchat_alpaca_52k" / "default")
    ddir = tmp_path / "d"
    assert data_main(["--source", HUB_NAME, "--dataset-dir", str(ddir), "--no-plot"]) == 0, (
        capsys.readouterr().err
    )
    assert f"load: {HUB_NAME}: 52002 rows, 0 duplicates dropped" in capsys.readouterr().out
    m = json.loads((ddir / "generated/alpaca_top100/alpaca_top100.manifest.json").read_text())
    assert m["source"]["kind"] == "hub" and m["source"]["files"][0]["path"] == f"hf://{HUB_NAME}"
    # the same rows as the file itself gives
    fdir = tmp_path / "f"
    assert data_main(["--source", str(pool_52k), "--dataset-dir", str(fdir), "--no-plot"]) == 0
    assert (
        json.loads((fdir / "generated/alpaca_top100/alpaca_top100.manifest.json").read_text())["ids"]
        == m["ids"]
    )
