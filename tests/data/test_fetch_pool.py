"""`make fetch-hw5 ARGS=--pool` without the internet: HW5's 52k pool comes from the Hugging Face hub through
huggingface_hub, so here it comes from a Hugging Face cache populated the way a download leaves it (the pinned
revision's snapshot holding the pinned parquet file), with HF_HUB_OFFLINE=1. The parquet is made HERE from
the real 2k Alpaca rows in the hub copy's shape ({id, conversations: [{role, content}], score}), not the 52k
rows: its size and row count are given in a pin made for the test (the repository's pin is not edited)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tools.data.cli import load_source
from tools.data.fetch import RECORD, fetch
from tools.data.sources import Pins, load_pins, locate

PIN = load_pins().files["fastchat_alpaca_52k"]


def hub_parquet(shared_data: Path, dest: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, seen = [], set()
    for f in ("long_is_more/filtered_alpaca_1k_longest.json", "long_is_more/filtered_alpaca_1k_score.json"):
        for r in json.loads((shared_data / f).read_text()):
            if r["id"] in seen:
                continue
            seen.add(r["id"])
            turns = [
                {"content": t["value"], "role": "user" if t["from"] == "human" else "assistant"}
                for t in r["conversations"]
            ]
            rows.append({"id": r["id"], "conversations": turns, "score": float(r["score"])})
    dest.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), dest)
    return len(rows)


@pytest.fixture()
def hf_cache(shared_data, tmp_path, monkeypatch) -> Path:
    """HF_HOME with the pinned revision's snapshot of kciree/fastchat_alpaca_52k, offline."""
    hf_home = tmp_path / "hf"
    repo = hf_home / "hub" / f"datasets--{PIN.repo_id.replace('/', '--')}"
    rows = hub_parquet(shared_data, repo / "snapshots" / PIN.revision / PIN.filename)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(PIN.revision)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SMALLDATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SMALLDATA_SHARED", "")
    monkeypatch.delenv("SMALLDATA_HW5_DIR", raising=False)
    return repo / "snapshots" / PIN.revision / PIN.filename, rows


def only_pool(pin) -> Pins:
    real = load_pins()
    return dataclasses.replace(real, files={pin.key: pin}, sources={"alpaca_52k": (pin.key,)})


def test_the_pool_from_a_populated_hub_cache_offline(hf_cache, tmp_path, capsys):
    parquet, rows = hf_cache
    pin = dataclasses.replace(PIN, bytes=parquet.stat().st_size, rows=rows)  # sha256 unpinned, as in the repo
    cache = tmp_path / "cache"
    done, failed = fetch(pool=True, cache=cache, p=only_pool(pin))
    assert not failed and set(done) == {pin.key}
    out = capsys.readouterr().out
    assert "its sha256 is not pinned" in out and done[pin.key]["parquet_sha256"] in out
    pool = cache / pin.path
    assert len(json.loads(pool.read_text())) == rows == done[pin.key]["rows"]
    assert json.loads((cache / RECORD).read_text())["files"][pin.key]["sha256"] == done[pin.key]["sha256"]
    # the resolver finds it in the cache and checks it against the hash the fetch recorded
    assert [f.where for f in locate("alpaca_52k")] == ["the cache"]
    got, src, _ = load_source("alpaca_52k")
    assert len(got) == rows and src["kind"] == "alpaca_52k" and src["files"][0]["found_in"] == "the cache"
    assert all(r["output"] for r in got[:50])  # role/content turns read as question and answer
    # a second fetch uses the cache and does not touch the hub cache
    parquet.unlink()
    assert fetch(pool=True, cache=cache, p=only_pool(pin))[1] == {}
    # a changed file in our cache is refused by the resolver, not used
    pool.write_text(pool.read_text().replace('"score": 5.0', '"score": 4.0', 1))
    with pytest.raises(ValueError, match="sha256 .* is not the expected"):
        locate("alpaca_52k")


def test_a_hub_file_that_is_not_the_pinned_one_is_refused(hf_cache, tmp_path):
    parquet, rows = hf_cache
    wrong = dataclasses.replace(PIN, bytes=parquet.stat().st_size, rows=rows, sha256="0" * 64)
    done, failed = fetch(pool=True, cache=tmp_path / "cache", p=only_pool(wrong))
    assert not done and "expected " + "0" * 64 in failed[wrong.key] and "nothing kept" in failed[wrong.key]
    real_size = dataclasses.replace(PIN, rows=rows)  # the pinned 12,559,282 bytes: this file is smaller
    done, failed = fetch(pool=True, cache=tmp_path / "cache", p=only_pool(real_size))
    assert not done and f"the pin says {PIN.bytes}" in failed[PIN.key]
    assert not (tmp_path / "cache").exists()


def test_offline_and_not_in_the_hub_cache(hf_cache, tmp_path):
    parquet, _ = hf_cache
    parquet.unlink()
    done, failed = fetch(pool=True, cache=tmp_path / "cache", p=only_pool(PIN))
    assert not done and "not in the Hugging Face cache and offline" in failed[PIN.key]
    with pytest.raises(ValueError, match=r"make fetch-hw5 ARGS=--pool"):
        locate("alpaca_52k")
