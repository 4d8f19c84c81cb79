"""No command destroys what it did not make (issue #29): each registry name has a kind and a unit and is
replaced only by its own; output folders are written only when empty or the command's own; no output
lands on its input or inside another model. Every refusal: exit 2, a message naming the thing and what to
do, and nothing on disk changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from filelib import OwnershipError, check_output, claim
from filelib.ownership import OWNER_FILE
from plugins.publishing import load_info
from tools.core.paths import ROOT
from tools.data import main as data_main

SHIPPED = ROOT / "data"


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and link under a folder with its content hash (links by their target)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture()
def ddir(tmp_path) -> Path:
    """A data folder with the shipped evaluation sets registered and the default 100 selected."""
    d = tmp_path / "data"
    d.mkdir()
    for f in ("dataset_info.json", "demo_eval.json", "demo_dev.json"):
        if (SHIPPED / f).exists():
            shutil.copy(SHIPPED / f, d / f)
    assert data_main(["--dataset-dir", str(d), "--no-plot", "--source", "demo", "--eval", "demo"]) == 0
    return d


def run_data(ddir: Path, *args: str) -> int:
    return data_main(["--dataset-dir", str(ddir), "--no-plot", *args])


# (arguments, words the refusal must say): each would replace a name of another kind or unit
REPLACING = [
    (["--name", "demo_eval"], ["demo_eval is the eval set of unit 'demo_eval'", "--remove demo_eval"]),
    (["--name", "alpaca_top100_easy"], ["alpaca_top100_easy is a training set of unit 'alpaca_top100'"]),
    (["--eval", "{ev}", "--eval-name", "alpaca_top100"], ["alpaca_top100 is the train set", "--remove"]),
    (["--eval", "{ev}", "--eval-name", "alpaca_top100_hard"], ["unit 'alpaca_top100'"]),
]


@pytest.mark.parametrize("args,said", REPLACING, ids=lambda v: " ".join(v) if isinstance(v[0], str) else "")
def test_a_name_of_another_kind_or_unit_is_refused_and_nothing_changes(ddir, tmp_path, capsys, args, said):
    ev = tmp_path / "ev.json"
    ev.write_text(json.dumps([{"id": "e1", "instruction": "q?", "input": "", "output": "a"}]))
    before = snapshot(ddir)
    assert run_data(ddir, *[a.format(ev=ev) for a in args]) == 2
    err = capsys.readouterr().err
    assert all(s in err for s in said), err
    assert snapshot(ddir) == before


def test_the_same_command_replaces_its_own_names(ddir, capsys):
    assert run_data(ddir, "--seed", "1") == 0
    info = load_info(ddir)
    assert info["alpaca_top100_easy"]["smalldata"]["kind"] == "stage"
    assert info["alpaca_top100_easy"]["smalldata"]["unit"] == "alpaca_top100"


def test_remove_deletes_a_unit_as_one_step_and_refuses_a_member(ddir, capsys):
    before = snapshot(ddir)
    assert run_data(ddir, "--remove", "alpaca_top100_medium") == 2
    assert "--remove alpaca_top100" in capsys.readouterr().err and snapshot(ddir) == before
    assert run_data(ddir, "--remove", "no_such_set") == 2
    assert "no such unit" in capsys.readouterr().err
    assert run_data(ddir, "--remove", "alpaca_top100") == 0
    info = load_info(ddir)
    unit = {"alpaca_top100", "alpaca_top100_easy", "alpaca_top100_medium", "alpaca_top100_hard"}
    assert not unit & set(info) and "demo_eval" in info
    assert not [p for p in (ddir / "generated").iterdir() if p.name.split(".")[0] in unit | {""}]


def test_a_users_entry_is_never_removed(ddir, capsys):
    info = json.loads((ddir / "dataset_info.json").read_text())
    info["mine"] = {"file_name": "mine.json"}
    (ddir / "dataset_info.json").write_text(json.dumps(info))
    before = snapshot(ddir)
    assert run_data(ddir, "--remove", "mine") == 2
    assert "not ours" in capsys.readouterr().err and snapshot(ddir) == before


def test_a_symlinked_registry_is_written_through_its_link(ddir, tmp_path):
    real = tmp_path / "elsewhere" / "dataset_info.json"
    real.parent.mkdir()
    shutil.move(ddir / "dataset_info.json", real)
    (ddir / "dataset_info.json").symlink_to(real)
    assert run_data(ddir, "--name", "second", "--n", "10") == 0
    assert (ddir / "dataset_info.json").is_symlink() and "second" in json.loads(real.read_text())


# ----------------------------------------------------------------------------------- output folders
def command(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_model_builders_refuse_what_they_did_not_make(tmp_path, tiny_model):
    users = tmp_path / "my_folder"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    model = tmp_path / "model"  # a model folder of the user's: the files, not our builder's mark
    shutil.copytree(tiny_model, model, ignore=shutil.ignore_patterns(OWNER_FILE))
    cases = [
        (["tools.models.tiny", "--out", str(users)], "did not make"),
        (["tools.models.base", "--out", str(users)], "did not make"),
        (["tools.models.llama_pro", "--model", str(model), "--blocks", "2", "--out", str(model)], "input"),
        (["tools.models.prune", "--model", str(model), "--out", str(model / "model.safetensors")], "input"),
        (
            ["tools.models.prune", "--model", str(tiny_model), "--out", str(model / "pruned.bin")],
            "model folder",
        ),
    ]
    before = snapshot(tmp_path)
    for argv, said in cases:
        r = command(*argv)
        assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert snapshot(tmp_path) == before


def test_check_output_rules(tmp_path):
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty", "me") and check_output(tmp_path / "new" / "x", "me")
    claimed = tmp_path / "claimed"
    claimed.mkdir()
    claim(claimed, "someone")
    (claimed / "f").write_text("x")
    with pytest.raises(OwnershipError, match="did not make"):
        check_output(claimed, "me")
    assert check_output(claimed, "someone")
    with pytest.raises(OwnershipError, match="which someone made"):
        check_output(claimed / "inner", "me")
    with pytest.raises(OwnershipError, match="a file, not a folder"):
        check_output(claimed / "f", "someone")
    with pytest.raises(OwnershipError, match="holds this command's input"):
        check_output(tmp_path, "me", inputs=[claimed / "f"])


def test_submit_never_writes_over_the_runs_answers(out_dir, tmp_path):
    from filelib import atomic_write_jsonl
    from tools.core.paths import Run

    run = Run.parse("tiny/rank/r4")
    pred = atomic_write_jsonl(
        run.predictions("demo_eval", "greedy"), [{"id": "p1", "instruction": "q", "answer": "a"}]
    )
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps([{"id": "p1", "instruction": "q"}]))
    before = pred.read_bytes()
    env = {**os.environ, "SMALLDATA_OUT": str(out_dir)}
    for out in (pred, pred.with_name("judge.jsonl")):
        if not out.exists():
            out.write_text("{}\n")
        argv = ["--run", run.name, "--testset", "demo_eval", "--ids", str(ids), "--out", str(out)]
        r = subprocess.run(
            [sys.executable, "-m", "tools.judge.submit", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert pred.read_bytes() == before
