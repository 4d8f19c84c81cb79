"""`python -m tools.data --strategy 'quota:...'` as docs/guides/hw5-study.md shows it, and its bad input."""

from __future__ import annotations

import json

from plugins.pools import load_rows
from plugins.publishing import resolve
from tools.data import main


def test_a_quota_from_the_command_line_records_its_parts(tmp_path, out_dir, capsys):
    spec = "quota:60*length_window,20*complexity,20*diversity"
    args = ["--source", "demo", "--n", "10", "--strategy", spec, "--name", "my10", "--embedding", "hashed"]
    assert main([*args, "--dataset-dir", str(tmp_path), "--no-plot", "--length-window", "20,300"]) == 0
    rows = load_rows(resolve("my10", tmp_path))
    assert len({r["id"] for r in rows}) == 10
    m = json.loads((tmp_path / "generated/my10/my10.manifest.json").read_text())
    parts = list(m["quota"]["chosen_by"].values())
    assert (parts.count("6*length_window"), parts.count("2*complexity"), parts.count("2*diversity")) == (
        6,
        2,
        2,
    )
    assert m["quota"]["diversity"][0]["embedding"].startswith("FALLBACK hashed")
    capsys.readouterr()
    assert main(["--source", "demo", "--strategy", "quota:5*best", "--dataset-dir", str(tmp_path)]) == 2
    assert "unknown strategy 'best'" in capsys.readouterr().err
    assert main(["--source", "demo", "--length-window", "300,20", "--dataset-dir", str(tmp_path)]) == 2
