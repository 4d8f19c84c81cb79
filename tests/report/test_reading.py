"""What a report or a choice reads is checked, never averaged or printed as a score when it is not one
(issue #29): a text or NaN mean, a truncated dev scores file, a bad study name, a duplicated key."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tools.core.paths import ROOT, Run
from tools.report import build_report
from tools.report.choose import choose_on_dev, dev_records
from tools.report.choose import main as choose_main
from tools.report.synthetic import standard_series, write_run

IDS = [f"p{i:02d}" for i in range(20)]


def items(mean: float, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {i: float(mean + rng.normal(0, 0.7)) for i in IDS}


def two_arms():
    for k, (variant, m) in enumerate({"a": 7.0, "b": 4.0}.items()):
        write_run(
            Run("tiny", "reading", variant),
            standard_series(10),
            {"lora_rank": 8},
            ["lora_rank"],
            evals={
                ("demo_dev", "greedy"): {"items": items(m, k)},
                ("demo_eval", "greedy"): {"items": items(m, 9 + k)},
            },
        )


def test_a_truncated_dev_scores_file_is_named_not_dropped_in_silence(out_dir):
    two_arms()
    path = Run.parse("tiny/reading/a").scores("demo_dev", "greedy")
    path.write_text(path.read_text()[:25])  # a killed writer
    choice = choose_on_dev(dev_records("reading"), "demo_dev")
    assert choice.left_out and "tiny/reading/a" in choice.left_out[0] and "broken JSON" in choice.left_out[0]
    assert "left out, unreadable: tiny/reading/a" in choice.verdict
    assert choice.best.run == "tiny/reading/b"  # an unreadable point takes no part, not even in a tie-break


@pytest.mark.parametrize("mean", ["7.5", float("nan"), True])
def test_a_mean_that_is_not_a_finite_number_is_never_shown_as_a_score(out_dir, mean):
    two_arms()
    path = Run.parse("tiny/reading/a").scores("demo_eval", "greedy")
    path.write_text(json.dumps({**json.loads(path.read_text()), "mean": mean}))
    rep = build_report("reading", "tiny", data_dir=out_dir / "nodata")
    text = rep.verdict.text
    assert "nan" not in text and "7.5 [" not in text
    assert "could not be read" in text
    md = (rep.out / "report.md").read_text()
    assert "is not a finite number" in md


def test_choose_refuses_a_bad_study_or_dev_name_in_one_line(out_dir, capsys):
    assert choose_main(["--study", "../../x"]) == 2
    assert "bad study '../../x'" in capsys.readouterr().err
    two_arms()
    assert choose_main(["--study", "reading", "--dev", "no_such_dev"]) == 2
    assert "--dev no_such_dev: not a data set" in capsys.readouterr().err
    r = subprocess.run(
        [sys.executable, "-m", "tools.report.choose", "--study", "../x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_a_decoding_policy_with_a_duplicated_key_is_refused(tmp_path, monkeypatch):
    from tools.eval import policy

    monkeypatch.setattr(policy, "POLICIES", tmp_path)
    (tmp_path / "bytype_dup.yaml").write_text("types:\n  code: greedy\n  code: sampled\n")
    with pytest.raises(ValueError, match="bytype_dup.yaml.*(duplicate|twice)"):
        policy.load_policy("bytype_dup")
