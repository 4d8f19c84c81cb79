"""The forgetting guard's data side: a few general rows mixed in, a held-out general set beside them,
both disjoint from the training rows and registered; bad input refused with nothing written."""

from __future__ import annotations

import json

import pytest

from plugins.pools import DataError
from plugins.publishing import load_info, resolve
from plugins.selection import general_count, mix_general
from tools.data import main as data_main
from tools.data.mix import main as mix_main


def rows(prefix: str, n: int) -> list[dict]:
    return [
        {"id": f"{prefix}{i}", "instruction": f"{prefix} task {i}", "input": "", "output": "x"}
        for i in range(n)
    ]


def test_share_counts_and_disjoint_sets():
    assert general_count(100, 0.03) == 4  # 4 of 104 = 3.8 %: at least the share asked for
    assert general_count(100, 0.01) == 2 and general_count(10, 0.01) == 1
    train = rows("t", 100)
    dup = {**train[0], "id": "g-dup"}  # same instruction under another id: never added
    general = rows("g", 300) + [dup]
    mixed, added, heldout = mix_general(train, general, 0.05, heldout_n=50, seed=3)
    assert len(added) == general_count(100, 0.05) == 6 and len(mixed) == 106 and len(heldout) == 50
    assert sum(r["general"] for r in mixed) == 6
    added_ids, held_ids = {r["id"] for r in added}, {r["id"] for r in heldout}
    assert not added_ids & held_ids and "g-dup" not in added_ids | held_ids
    assert not {r["id"] for r in train} & (added_ids | held_ids)
    assert mix_general(train, general, 0.05, 50, seed=3)[0] == mixed  # deterministic for a seed
    with pytest.raises(DataError, match="share"):
        mix_general(train, general, 0.9)
    with pytest.raises(DataError, match="usable rows"):
        mix_general(train, rows("t", 100), 0.05)  # the general pool is the training set itself


def test_cli_registers_the_mix_and_its_heldout_set(tmp_path, out_dir, capsys):
    assert data_main(["--source", "demo", "--n", "100", "--dataset-dir", str(tmp_path), "--no-plot"]) == 0
    capsys.readouterr()
    rc = mix_main(
        ["--dataset", "alpaca_top100", "--general", "demo", "--share", "0.05", "--dataset-dir", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "alpaca_top100_mix (106 rows, 6 general)" in out
    mixed = json.loads(resolve("alpaca_top100_mix", tmp_path).read_text())
    held = json.loads(resolve("alpaca_top100_mix_general_heldout", tmp_path).read_text())
    assert len(mixed) == 106 and sum(r["general"] for r in mixed) == 6
    assert not {r["id"] for r in mixed} & {r["id"] for r in held}
    man = json.loads(
        (tmp_path / "generated" / "alpaca_top100_mix" / "alpaca_top100_mix.manifest.json").read_text()
    )
    assert man["from"] == "alpaca_top100" and len(man["general_rows"]) == 6 and man["share"] == 0.05


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "no_such_set", "--general", "demo"], "'no_such_set' is not registered"),
        (["--dataset", "demo_eval", "--general", "demo", "--name", "../../x"], "--name '../../x'"),
        (["--dataset", "demo_eval", "--general", "demo", "--share", "0.9"], "--share 0.9"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    (tmp_path / "demo_eval.json").write_text(json.dumps(rows("e", 5)))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"demo_eval": {"file_name": "demo_eval.json"}}))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    info = load_info(tmp_path)
    assert mix_main([*args, "--dataset-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert load_info(tmp_path) == info
