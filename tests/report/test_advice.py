"""Symptom -> advice: each rule fires on a synthetic curve or log where the advice is known, stays quiet
on a healthy run, and reaches the report with the numbers that triggered it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tools.core.paths import Run
from tools.report.advice import curve_advice, intervals_overlap, log_advice, metrics_advice
from tools.report.build import build_report
from tools.report.synthetic import curve, metrics, scores, standard_series, write_run


def symptoms(advice) -> list[str]:
    return [a.symptom for a in advice]


def steps(n: int) -> list[int]:
    return list(range(1, n + 1))


def test_healthy_run_gets_no_advice():
    s = standard_series(60, eval_every=10)
    loss = [v for _, v in s["loss"]]
    ev = s["eval_loss"]
    grad = [v for _, v in s["grad_norm"]]
    out = curve_advice("ok", steps(60), loss, [x for x, _ in ev], [v for _, v in ev], grad)
    assert out == []
    assert metrics_advice("ok", {**metrics(0.3), "reference_words_mean": 130.0}, metrics(0.2)) == []
    assert log_advice("ok", "step 1 loss 2.0\nfinished", 0) == []


def test_flat_loss_says_raise_lr_with_the_numbers():
    loss = [2.0 - 0.0005 * i for i in range(40)]
    (a,) = curve_advice("r8", steps(40), loss, [], [], [1.0] * 40)
    assert a.symptom == "train loss flat"
    assert a.evidence == "1.998 -> 1.982 (-0.8%) over 40 logged steps"
    assert "learning rate" in a.advice and "epochs" in a.advice


def test_overfitting_names_the_best_step():
    loss = [v for _, v in curve(50, 2.0, 0.3)]
    eval_steps, eval_loss = [10, 20, 30, 40, 50], [1.5, 1.2, 1.1, 1.3, 1.5]
    out = curve_advice("e15", steps(50), loss, eval_steps, eval_loss, [1.0] * 50)
    (a,) = [x for x in out if "overfitting" in x.symptom]
    assert "1.1 at step 30" in a.evidence and "1.5 at step 50" in a.evidence
    assert "stop near step 30" in a.advice and "lora_dropout" in a.advice


def test_nan_and_grad_spike_say_lower_lr_and_warmup():
    loss = [2.0, 1.9, 1.8, float("nan"), float("nan"), 1.7, 1.6]
    grad = [1.0, 1.1, 0.9, 1.0, 50.0, 1.0, 1.2]
    out = curve_advice("lr5e-4", steps(7), loss, [], [], grad)
    assert set(symptoms(out)) == {"loss is NaN/inf", "gradient-norm spike"}
    nan = out[0]
    assert "first at step 4" in nan.evidence and "warmup" in nan.advice
    spike = out[1]
    assert "50" in spike.evidence and "learning rate" in spike.advice


def test_out_of_memory_in_the_log_or_a_sigkill():
    log = "loading...\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    (a,) = log_advice("r64", log, 1)
    assert a.symptom == "out of memory" and "Tried to allocate" in a.evidence
    assert "per_device_train_batch_size" in a.advice and "QLoRA" in a.advice
    (k,) = log_advice("r64", "", -9)
    assert "SIGKILL" in k.evidence
    assert log_advice("r64", "ValueError: bad config", 1) == []


def test_truncation_short_answers_and_forgetting():
    m = {**metrics(0.2, words=40, truncated=0.35), "reference_words_mean": 200.0, "ppl_heldout": 15.0}
    out = metrics_advice("r8", m, {**metrics(0.2), "ppl_heldout": 12.0})
    assert symptoms(out) == [
        "many answers truncated",
        "answers much shorter than the references",
        "forgetting: general text got harder for the model",
    ]
    assert "35%" in out[0].evidence and "max_new_tokens" in out[0].advice
    assert "40 words" in out[1].evidence and "200" in out[1].evidence and "refine" in out[1].advice
    assert "12 (base) -> 15 (+25%)" in out[2].evidence and "tools.data.mix" in out[2].advice
    # without a base model's perplexity there is nothing to compare: no forgetting advice
    assert "forgetting" not in " ".join(symptoms(metrics_advice("r8", m, None)))


def test_overlapping_intervals_mean_the_test_cannot_tell():
    a = intervals_overlap([("r4", 4.0, 3.6, 4.4), ("r8", 4.2, 3.8, 4.6), ("r16", 4.1, 3.7, 4.5)])
    assert a is not None and "3 arms from 4 (r4) to 4.2 (r8)" in a.evidence
    assert "more prompts" in a.advice
    assert intervals_overlap([("r4", 3.0, 2.8, 3.2), ("r8", 4.2, 3.8, 4.6)]) is None  # separated
    assert intervals_overlap([("r4", 3.0, math.nan, math.nan), ("r8", 4.2, 3.8, 4.6)]) is None


def test_report_leads_the_reader_to_the_advice(out_dir):
    flat = Run("tiny", "lr", "lr1e-5")
    write_run(
        flat,
        {**standard_series(40), "loss": [(s, 2.0 - 0.0004 * s) for s in range(1, 41)]},
        {"learning_rate": 1e-5},
        ["learning_rate"],
        evals={("demo_eval", "greedy"): {"metrics": metrics(0.2, truncated=0.5), "scores": scores(3.0)}},
    )
    good = Run("tiny", "lr", "lr2e-4")
    write_run(
        good,
        standard_series(40),
        {"learning_rate": 2e-4},
        ["learning_rate"],
        evals={("demo_eval", "greedy"): {"metrics": metrics(0.3), "scores": scores(3.2)}},
    )
    rep = build_report("lr")
    lines = [a.line() for a in rep.advice]
    assert any(x.startswith("lr1e-5: train loss flat") for x in lines), lines
    assert any(x.startswith("lr1e-5: many answers truncated (50% ") for x in lines), lines
    assert any(x.startswith("study: all arms within each other's intervals") for x in lines), lines
    assert not any(x.startswith("lr2e-4:") for x in lines), lines
    md = (rep.out / "report.md").read_text()
    assert "## What to try" in md and "raise the learning rate" in md
    html = (rep.out / "index.html").read_text()
    assert 'id="advice"' in html and "many answers truncated" in html


def improve_study(base_metrics: dict, arms: dict[str, tuple[dict, float]]):
    """The improve study's report over a base model and arms {variant: (metrics, judge mean)}."""
    write_run(Run.base("tiny"), None, evals={("demo_eval", "greedy"): {"metrics": base_metrics}})
    for variant, (m, mean) in arms.items():
        write_run(
            Run("tiny", "improve", variant),
            standard_series(40),
            {"dataset": variant},
            ["dataset"],
            evals={("demo_eval", "greedy"): {"metrics": m, "scores": scores(mean, 0.05)}},
        )
    return build_report("improve")


def test_forgetting_is_shown_beside_the_judge_score(out_dir):
    rep = improve_study(
        {**metrics(0.1), "ppl_heldout": 12.0},
        {
            "plain": ({**metrics(0.3), "ppl_heldout": 15.0}, 3.4),
            "mixed": ({**metrics(0.3), "ppl_heldout": 12.3}, 3.3),
        },
    )
    forgetting = dict(zip(rep.table["label"], rep.table["forgetting"], strict=True))
    assert round(forgetting["plain"], 3) == 0.25 and round(forgetting["mixed"], 3) == 0.025
    md = (rep.out / "report.md").read_text()
    assert "general ppl (vs base)" in md and "15 (+25 %)" in md and "12.3 (+3 %)" in md
    lines = [a.line() for a in rep.advice]
    assert any(x.startswith("plain: forgetting") for x in lines), lines
    assert not any(x.startswith("mixed: forgetting") for x in lines), lines


def zs(**accs):
    return {
        "zeroshot": {t: {"acc": a, "n": 24} for t, a in accs.items()} | {"arc_easy": {"skipped": "no hub"}}
    }


def test_a_zero_shot_drop_against_the_base_is_forgetting_on_the_same_tasks_only():
    base = {**metrics(0.1), **zs(python_mc=0.40, other=0.60)}
    (a,) = metrics_advice("r8", {**metrics(0.3), **zs(python_mc=0.30, other=0.55)}, base)
    assert a.symptom == "forgetting: zero-shot accuracy fell"
    assert "other, python_mc 0.500 (base) -> 0.425 (-0.075)" in a.evidence and "tools.data.mix" in a.advice
    assert metrics_advice("r8", {**metrics(0.3), **zs(python_mc=0.38, other=0.59)}, base) == []  # within 0.05
    # a task the base did not score is no evidence; skipped tasks are never a score
    assert metrics_advice("r8", {**metrics(0.3), **zs(third=0.0)}, base) == []


def test_zero_shot_accuracy_is_shown_beside_the_judge_score(out_dir):
    rep = improve_study(
        {**metrics(0.1), **zs(python_mc=0.40)},
        {
            "plain": ({**metrics(0.3), **zs(python_mc=0.30)}, 3.3),
            "mixed": ({**metrics(0.3), **zs(python_mc=0.42)}, 3.3),
        },
    )
    row = rep.table.set_index("label")
    assert (
        round(row.loc["plain", "zeroshot_change"], 3) == -0.1
        and round(row.loc["mixed", "zs_python_mc"], 2) == 0.42
    )
    md = (rep.out / "report.md").read_text()
    assert "zero-shot acc (vs base)" in md and "0.300 (-0.100)" in md and "0.420 (+0.020)" in md
    lines = [a.line() for a in rep.advice]
    assert any(x.startswith("plain: forgetting: zero-shot accuracy fell") for x in lines), lines
    assert not any(x.startswith("mixed: forgetting") for x in lines), lines
    csv = (rep.out / "runs.csv").read_text().splitlines()[0]
    assert "zs_python_mc" in csv and "zeroshot_change" in csv and "zs_arc_easy" not in csv


# ---------------------------------------------------------------- warnings and advice never contradict
def _synthetic_curves() -> dict[str, tuple[list[float], list[tuple[int, float]]]]:
    """name -> (train loss per step, [(eval step, eval loss)]): every shape a run's curve takes."""
    rng = np.random.default_rng(0)
    n = 60
    return {
        "rising": ([2.0 + 0.02 * i for i in range(n)], []),
        "slightly_rising": ([2.0 + 0.002 * i for i in range(n)], []),
        "flat": ([2.0 + 0.001 * ((-1) ** i) for i in range(n)], []),
        "falling": ([2.0 * math.exp(-i / 30) for i in range(n)], []),
        "noisy_falling": ([2.0 * math.exp(-i / 30) + rng.normal(0, 0.15) for i in range(n)], []),
        "noisy_flat": ([2.0 + rng.normal(0, 0.2) for i in range(n)], []),
        "overfitting": (
            [2.0 * math.exp(-i / 15) for i in range(n)],
            [(10, 1.5), (20, 1.2), (30, 1.25), (40, 1.4), (50, 1.6), (60, 1.8)],
        ),
        "improving_with_eval": (
            [2.0 * math.exp(-i / 20) for i in range(n)],
            [(20, 1.6), (40, 1.3), (60, 1.1)],
        ),
        "short": ([2.0, 1.9, 1.8], []),
    }


CONTRADICTIONS = [
    ("went up", "flat"),
    ("raise the learning rate", "lower the learning rate"),
    ("more steps may help", "train fewer epochs"),
    ("still improving", "overfitting"),
    ("train loss rising", "train loss flat"),
]


@pytest.mark.parametrize("shape", list(_synthetic_curves()))
def test_no_two_rules_contradict_each_other_on_one_run(shape):
    from tools.report.events import Curves
    from tools.report.table import curve_warnings

    loss, ev = _synthetic_curves()[shape]
    steps = list(range(1, len(loss) + 1))
    curves = Curves({"loss": (steps, loss), "eval_loss": ([s for s, _ in ev], [v for _, v in ev])})
    ev_steps, ev_loss = [s for s, _ in ev], [v for _, v in ev]
    advice = curve_advice(shape, steps, loss, ev_steps, ev_loss, [1.0] * len(loss))
    said = curve_warnings(curves) + [f"{a.symptom}: {a.advice}" for a in advice]
    for a, b in CONTRADICTIONS:
        assert not (any(a in x for x in said) and any(b in x for x in said)), (shape, said)
    expected = {
        "rising": "went up",
        "flat": "train loss flat",
        "overfitting": "overfitting",
        "noisy_flat": "train loss flat",
    }
    if shape in expected:
        assert any(expected[shape] in x for x in said), (shape, said)
    if shape in ("falling", "noisy_falling", "improving_with_eval", "short"):
        assert not any("flat" in x or "went up" in x or "overfitting" in x for x in said), (shape, said)
