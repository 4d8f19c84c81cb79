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


def _fixed_lengths(shift: dict[str, float], n_prompts=30, seed=2):
    """Scores with a planted length effect, each run's answers a fixed number of words off its reference."""
    rng = np.random.default_rng(seed)
    prompt = rng.normal(0, 1, n_prompts)
    return [
        (r, f"p{i}", float(5 + prompt[i] + B * np.tanh(d / 50) + rng.normal(0, 0.3)), float(d))
        for r, d in shift.items()
        for i in range(n_prompts)
    ]


@pytest.mark.parametrize(
    "shift",
    [{"only": 40.0}, {"terse": 0.0, "verbose": 40.0}, {"a": 0.0, "b": 0.0}],
    ids=["one-run-always-40-longer", "each-run-a-fixed-length", "no-length-difference"],
)
def test_a_length_term_the_data_cannot_identify_is_not_estimable(shift):
    res = length_controlled(_fixed_lengths(shift), n_boot=50)
    assert res["estimable"] is False and "rank-deficient" in res["reason"]
    assert "b" not in res and all("lc" not in r for r in res["runs"].values())
    assert set(res["runs"]) == set(shift) and all(r["raw_ci95"] for r in res["runs"].values())


def test_command_says_not_estimable_and_writes_no_controlled_score(out_dir, capsys):
    obs = _fixed_lengths({"terse": 0.0, "verbose": 40.0})
    runs = {
        r: _write_run(f"smollm2_135m/fixed/{r}", [o for o in obs if o[0] == r]) for r in ("terse", "verbose")
    }
    assert main(["--study", "fixed", "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    assert "not estimable" in out and "b = " not in out
    for name, run in runs.items():
        lc = json.loads(run.scores("hw5_test", "greedy").read_text())["length_controlled"]
        assert lc["estimable"] is False and "rank-deficient" in lc["reason"]
        assert "lc" not in lc and "b" not in lc
        assert lc["raw"] == pytest.approx(np.mean([o[2] for o in obs if o[0] == name]))


def test_the_length_term_reads_the_references_the_judging_used(out_dir, tmp_path, chat_server, capsys):
    from tools.judge.cli import run_judge
    from tools.judge.length import study_observations

    run = Run.parse("smollm2_135m/refs/a")
    preds = [
        {
            "id": f"q{i}",
            "instruction": f"Explain item {i}.",
            "answer": "w " * (30 + i),
            "reference": "r " * 10,
        }
        for i in range(6)
    ]
    atomic_write_jsonl(run.predictions("demo_eval", "greedy"), preds)
    course = tmp_path / "course.json"  # the references judging is pointed at: 25 words each
    course.write_text(
        json.dumps([{"id": f"q{i}", "instruction": "x", "output": "g " * 25} for i in range(6)])
    )
    srv = chat_server(lambda call: "5 7")
    run_judge(
        run.name,
        "demo_eval",
        "greedy",
        base_url=srv.url,
        model="j",
        references=course,
        say=lambda *_: None,
        progress_bar=False,
    )
    obs, _, _ = study_observations("refs", "demo_eval", "greedy")
    assert sorted(o[3] for o in obs) == [30 + i - 25 for i in range(6)]  # not 30 + i - 10 (the predictions')
    # the file changed since judging: refused, naming it
    course.write_text(json.dumps([{"id": f"q{i}", "instruction": "x", "output": "g " * 5} for i in range(6)]))
    assert main(["--study", "refs", "--testset", "demo_eval", "--n-boot", "20"]) == 2
    err = capsys.readouterr().err
    assert str(course) in err and "changed since judging" in err
