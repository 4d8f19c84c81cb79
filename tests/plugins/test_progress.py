"""Progress of long data steps in logs as well as on terminals (plugins/selection/progress.py): lines with the
count, rate and time left where stderr is not a terminal; IFD scoring through the data command shows them."""

from __future__ import annotations

import io
import json

from plugins.selection.progress import Progress


def test_progress_writes_lines_when_not_on_a_terminal():
    out = io.StringIO()
    with Progress(4, "IFD (2 rows)", "sequences", every=0, stream=out) as p:
        p.update(1)
        p.update(3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "IFD (2 rows): 4 sequences to do"
    assert lines[1].startswith("IFD (2 rows): 1/4 sequences (25%) in ") and "s left" in lines[1]
    assert lines[-1].startswith("IFD (2 rows): 4/4 sequences (100%)") and lines[-1].endswith(" - done")
    quiet = io.StringIO()
    with Progress(4, "IFD", stream=quiet, enabled=False) as p:
        p.update(4)
    assert quiet.getvalue() == ""


def test_the_data_command_shows_ifd_progress_in_a_log(tiny_model, out_dir, tmp_path, capsys):
    from tools.data import main as data_main

    pool = tmp_path / "pool.json"
    rows = [
        {"instruction": f"Say {i}.", "input": "", "output": f"{i} is a number.", "score": 4.0}
        for i in range(6)
    ]
    pool.write_text(json.dumps(rows))
    argv = ["--source", str(pool), "--strategy", "ifd", "--n", "3", "--model", str(tiny_model)]
    argv += ["--dataset-dir", str(tmp_path / "data"), "--no-plot", "--ifd-candidates", "6"]
    assert data_main(argv) == 0
    err = capsys.readouterr().err  # stderr captured: not a terminal, as in `make data > data.log`
    assert "IFD (6 rows): 12 sequences to do" in err
    assert "IFD (6 rows): 12/12 sequences (100%)" in err and " - done" in err


def test_long_is_more_shows_its_tokenizing_progress(tiny_model, capsys):
    from transformers import AutoTokenizer

    from plugins.selection import Context, score

    rows = [{"id": str(i), "instruction": "Say.", "input": "", "output": "word " * i} for i in range(1, 6)]
    rows.append({"id": "6", "instruction": "Again.", "input": "", "output": rows[2]["output"]})
    lengths = score(rows, "long_is_more", Context(model=tiny_model))
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    assert list(lengths) == [len(tok(r["output"], add_special_tokens=False)["input_ids"]) for r in rows]
    assert list(lengths[:5]) == sorted(lengths[:5]) and lengths[0] > 0 and lengths[5] == lengths[2]
    err = capsys.readouterr().err  # the repeated answer is tokenized once
    assert "long_is_more: tokenizing answers: 5 answers to do" in err and "5/5 answers (100%)" in err
