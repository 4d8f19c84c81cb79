"""The one resolver for HW5's named sources (tools/data/sources.py), by test: the cache first, then a folder
the user names (--data-dir, else SMALLDATA_HW5_DIR), then ../shared/data (SMALLDATA_SHARED; empty turns it
off); a file that is not its pin is refused where it is found; none anywhere -> the message names
`make fetch-hw5`. Each place here holds symlinks to the real files (the `shared_data` fixture's)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plugins.pools import DataError
from tools.core.paths import ROOT
from tools.data import main as data_main
from tools.data.sources import cache_root, data_root, load_pins, locate, roots, shared_root

NAMES = ("hw5", "hw5_refs", "alpaca_2k")


def fill(folder: Path, real: Path, flat: bool = False) -> Path:
    for name in NAMES:
        for pin in load_pins().of(name):
            dest = folder / (Path(pin.path).name if flat else pin.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(real / pin.path)
    return folder


@pytest.fixture()
def places(shared_data, tmp_path, monkeypatch) -> dict[str, Path]:
    p = {k: tmp_path / k for k in ("cache", "named", "shared")}
    for k in p:
        fill(p[k], shared_data)
    monkeypatch.setenv("SMALLDATA_CACHE", str(p["cache"]))
    monkeypatch.setenv("SMALLDATA_HW5_DIR", str(p["named"]))
    monkeypatch.setenv("SMALLDATA_SHARED", str(p["shared"]))
    return p


def where(name: str, data_dir=None) -> set[str]:
    return {f.where for f in locate(name, data_dir)}


def test_the_cache_then_the_named_folder_then_shared(places, tmp_path):
    assert [label for label, _ in roots()] == ["the cache", "$SMALLDATA_HW5_DIR", "../shared/data"]
    assert all(where(n) == {"the cache"} for n in NAMES)
    assert locate("hw5")[0].path.parent.parent == places["cache"]
    (places["cache"] / "hw5/test_set_evol_instruct_150.json").unlink()
    assert where("hw5") == {"$SMALLDATA_HW5_DIR"} and where("hw5_refs") == {"the cache"}
    # a source comes whole from one place: one of alpaca_2k's files missing from the cache -> both from the next
    (places["cache"] / "long_is_more/filtered_alpaca_1k_score.json").unlink()
    assert where("alpaca_2k") == {"$SMALLDATA_HW5_DIR"}
    for f in (places["named"] / "long_is_more").iterdir():
        f.unlink()
    assert where("alpaca_2k") == {"../shared/data"} and where("hw5_refs") == {"the cache"}
    assert data_root() == places["shared"]


def test_data_dir_beats_the_environment_and_may_be_flat(places, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("SMALLDATA_CACHE", str(tmp_path / "empty"))
    flat = fill(tmp_path / "flat", shared_data, flat=True)
    assert where("hw5", flat) == {"--data-dir"}
    assert locate("alpaca_2k", flat)[0].path == flat / "filtered_alpaca_1k_longest.json"
    assert where("hw5") == {"$SMALLDATA_HW5_DIR"}


def test_none_has_them_the_message_names_the_command(places, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SMALLDATA_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("SMALLDATA_HW5_DIR")
    monkeypatch.setenv("SMALLDATA_SHARED", "")  # the tests' copy turned off
    assert shared_root() is None and [label for label, _ in roots()] == ["the cache"]
    with pytest.raises(DataError, match=r"Fetch them once with `make fetch-hw5`") as e:
        locate("hw5")
    assert str(tmp_path / "empty") in str(e.value)
    assert data_root() is None
    # through the data command: exit 2, the message, nothing written
    ddir = tmp_path / "d"
    assert data_main(["--source", "hw5", "--eval", "hw5", "--dataset-dir", str(ddir)]) == 2
    err = capsys.readouterr().err
    assert "make fetch-hw5" in err and "test_set_evol_instruct_150.json" in err and not ddir.exists()


def test_a_file_that_is_not_its_pin_is_refused_where_it_is_found(places, shared_data):
    bad = places["cache"] / "hw5/test_set_evol_instruct_150.json"
    bad.unlink()
    bad.write_bytes(
        (shared_data / "hw5/test_set_evol_instruct_150.json").read_bytes().replace(b"dog", b"cat", 1)
    )
    with pytest.raises(DataError, match=r"sha256 [0-9a-f]{64} is not the expected 9ce1bd51") as e:
        locate("hw5")
    assert "found in the cache" in str(e.value) and "make fetch-hw5" in str(e.value)


def test_the_defaults(monkeypatch):
    for v in ("SMALLDATA_CACHE", "SMALLDATA_SHARED", "SMALLDATA_HW5_DIR"):
        monkeypatch.delenv(v, raising=False)
    assert cache_root().parts[-2:] == ("smalldata-lora", "hw5")
    sibling = ROOT.parent / "shared" / "data"
    assert shared_root() == (sibling if sibling.is_dir() else None)  # only where it exists
    monkeypatch.setenv("SMALLDATA_CACHE", "~/elsewhere")
    assert cache_root() == Path(os.path.expanduser("~/elsewhere"))


def test_the_data_command_reads_hw5_from_the_cache_alone(places, tmp_path, monkeypatch, capsys, out_dir):
    monkeypatch.delenv("SMALLDATA_HW5_DIR")
    monkeypatch.setenv("SMALLDATA_SHARED", "")
    ddir = tmp_path / "d"
    args = ["--source", "hw5", "--n", "10", "--eval", "hw5", "--dataset-dir", str(ddir), "--no-plot"]
    assert data_main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "load: hw5: 1972 rows, 28 duplicates dropped" in out
    assert "hw5_test: 150 prompts, 150 with a reference joined by id, 0 without" in out
    assert "hw5_dev: 150 prompts" in out
