"""The length-controlled score recovers the run effects planted in synthetic judgments whose judge
rewards length; the raw means do not. And the command writes it beside the raw score per run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from filelib import atomic_write_json, atomic_write_jsonl
from tools.core.paths import Run
from tools.judge.length import fit, length_controlled, main

RUN_EFFECT = {"terse": 5.0, "plain": 5.5, "verbose": 5.2}
LENGTH_SHIFT = {"terse": -60, "plain": 0, "verbose": 250}  # answer words minus reference words, on average
B = 1.5


def synthetic(n_prompts=150, seed=1):
    rng = np.random.default_rng(seed)
    prompt = rng.normal(0, 1, n_prompts)
    diffs = {r: rng.normal(s, 60, n_prompts) for r, s in LENGTH_SHIFT.items()}
    sd = np.concatenate(list(diffs.values())).std()
    obs = []
    for r, a in RUN_EFFECT.items():
        for i in range(n_prompts):
            score = a + prompt[i] + B * np.tanh(diffs[r][i] / sd) + rng.normal(0, 0.5)
            obs.append((r, f"p{i}", float(score), float(diffs[r][i])))
    return obs, float(prompt.mean())


def test_controlled_score_recovers_the_planted_run_effect():
    obs, prompt_mean = synthetic()
    res = length_controlled(obs, n_boot=200)
    runs = res["runs"]
    # the raw means rank the verbose run first although its planted effect is below plain's
    assert runs["verbose"]["raw"] > runs["plain"]["raw"] + 0.5
    # the controlled scores recover the planted effects (plus the sample's mean prompt effect)
    for r, a in RUN_EFFECT.items():
        assert runs[r]["lc"] == pytest.approx(a + prompt_mean, abs=0.15)
        lo, hi = runs[r]["lc_ci95"]
        assert lo < runs[r]["lc"] < hi and hi - lo < 1.0
    assert runs["plain"]["lc"] > runs["verbose"]["lc"]
    assert res["b"] == pytest.approx(B, abs=0.25) and res["b_ci95"][0] > 0.5
    assert res["prompt_effects"] is True


def test_no_length_effect_leaves_the_scores_alone():
    obs, _ = synthetic()
    flat = [(r, p, s - B * np.tanh(d / np.std([o[3] for o in obs])), d) for r, p, s, d in obs]
    f = fit(flat)
    assert abs(f["b"]) < 0.2
    for r in RUN_EFFECT:
        assert f["lc"][r] == pytest.approx(f["raw"][r], abs=0.2)


def _write_run(name, obs, protocol="hw5_official"):
    run = Run.parse(name)
    preds, judged = [], []
    for _, pid, score, diff in obs:
        ref_words = 100
        preds.append(
            {
                "id": pid,
                "instruction": "q",
                "answer": "w " * int(ref_words + diff),
                "reference": "r " * ref_words,
            }
        )
        judged.append(
            {
                "id": pid,
                "order": "ab",
                "parsed": True,
                "score_answer": score,
                "score_reference": 7.0,
                "judge_model": "gpt-4o-mini",
                "protocol": protocol,
                "protocol_version": 1,
            }
        )
    atomic_write_jsonl(run.predictions("hw5_test", "greedy"), preds)
    atomic_write_jsonl(run.judgments("hw5_test", "greedy"), judged)
    atomic_write_json(run.scores("hw5_test", "greedy"), {"mean": float(np.mean([o[2] for o in obs]))})
    return run


def test_command_writes_the_controlled_score_beside_the_raw(out_dir, capsys):
    obs, _ = synthetic(n_prompts=40)
    runs = {
        r: _write_run(f"smollm2_135m/rank/{r}", [o for o in obs if o[0] == r and o[3] > -100])
        for r in RUN_EFFECT
    }
    assert main(["--study", "rank", "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    assert "length-controlled" in out and "hw5_official by gpt-4o-mini" in out
    for run in runs.values():
        s = json.loads(run.scores("hw5_test", "greedy").read_text())
        lc = s["length_controlled"]
        assert s["mean"] == pytest.approx(lc["raw"]) and len(lc["lc_ci95"]) == 2
        assert lc["protocol"] == "hw5_official" and len(lc["fit_runs"]) == 3
    # a run judged under another protocol is never fitted with the others
    _write_run("smollm2_135m/rank/other", [o for o in obs if o[0] == "plain"], protocol="hw5_pairwise")
    assert main(["--study", "rank", "--n-boot", "50"]) == 2
    assert "different judges or protocols" in capsys.readouterr().err
