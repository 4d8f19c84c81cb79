"""HW5's submission file: `make submit RUN=...` writes what the course's evaluate.py reads, checked
against the 150 real test ids (../shared/data)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from filelib import atomic_write_jsonl
from tools.core.paths import ROOT, Run
from tools.judge.submit import main

RUN = "llama2_7b/rank/r16"


@pytest.fixture()
def hw5_ids(shared_data):
    path = shared_data / "hw5" / "test_set_evol_instruct_150.json"
    return path, [r["id"] for r in json.loads(path.read_text())]


def fake_predictions(ids, empty=()):
    rows = [
        {"id": i, "instruction": "q", "input": "", "answer": "" if i in empty else f"answer to {i}"}
        for i in ids
    ]
    return atomic_write_jsonl(Run.parse(RUN).predictions("hw5_test", "greedy"), rows)


def courses_reading(pred: dict, ids: list[str]) -> dict[str, str]:
    """What HW5's evaluate.py takes from pred.json for each test id (its lines)."""
    out = {}
    for id_ in ids:
        if id_ in pred:
            outputs = pred[id_].get("output", [])
            out[id_] = outputs[0] if outputs else ""
    return out


def test_make_submit_writes_what_the_course_reads(out_dir, hw5_ids, tmp_path):
    ids_file, ids = hw5_ids
    fake_predictions(ids, empty={ids[3]})
    out = tmp_path / "pred.json"
    r = subprocess.run(
        ["make", "-s", "submit", f"RUN={RUN}", f"ARGS=--ids {ids_file} --out {out}"],
        cwd=ROOT,
        env={**os.environ, "SMALLDATA_OUT": str(out_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "150 answers" in r.stdout and "1 empty answer" in r.stderr and ids[3] in r.stderr
    pred = json.loads(out.read_text())
    assert list(pred) == ids and all(isinstance(v["output"], list) for v in pred.values())
    got = courses_reading(pred, ids)
    assert len(got) == 150 and got[ids[0]] == f"answer to {ids[0]}" and got[ids[3]] == ""


@pytest.mark.parametrize(
    "change,message", [("drop", "1 of the 150 test ids"), ("extra", "not in the test set")]
)
def test_missing_or_extra_ids_are_refused(out_dir, hw5_ids, tmp_path, capsys, change, message):
    ids_file, ids = hw5_ids
    fake_predictions(ids[1:] if change == "drop" else [*ids, "not_a_test_id"])
    out = tmp_path / "pred.json"
    assert main(["--run", RUN, "--ids", str(ids_file), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_default_output_beside_the_predictions(out_dir, hw5_ids):
    ids_file, ids = hw5_ids
    pred = fake_predictions(ids)
    assert main(["--run", RUN, "--ids", str(ids_file)]) == 0
    assert len(json.loads(pred.with_name("submission.json").read_text())) == 150
