"""The decision rule as data (issue #30): the first criterion that separates the best dev point from the
runner-up decides and is named; where none does, "no clear winner" and the declared tie-break; numbers
that cannot be estimated are said to be so, never shown as a confident difference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from filelib import atomic_write_json, atomic_write_jsonl
from tools.core.paths import Run
from tools.report import build_report
from tools.report.choose import choose_on_dev, dev_records
from tools.report.rule import RuleError, load_rule, parse_rule, steps_at
from tools.report.synthetic import write_run

IDS = [f"p{i:02d}" for i in range(24)]


def noisy(mean: float, seed: int, sd: float) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {i: float(mean + rng.normal(0, sd)) for i in IDS}


def arm(variant: str, judge: dict, ref_nll: dict | None, steps: int, seed: int, rank: int = 8) -> Run:
    """A run evaluated on demo_dev: judge scores and (optionally) per-prompt reference NLL."""
    run = Run("tiny", "rulestudy", variant)
    write_run(run, None, {"lora_rank": rank}, ["lora_rank"], evals={("demo_dev", "greedy"): {"items": judge}})
    atomic_write_json(run.output_dir / "trainer_state.json", {"global_step": steps, "log_history": []})
    atomic_write_json(
        run.output_dir / "run.json", {"status": "finished", "resolved_config": {"lora_rank": rank}}
    )
    d = run.eval_dir("demo_dev", "greedy")
    if ref_nll is not None:
        rows = [{"id": i, "rougeL": 0.3, "ppl_reference": math.exp(v)} for i, v in ref_nll.items()]
        atomic_write_jsonl(d / "metrics_items.jsonl", rows)
        atomic_write_json(d / "metrics.json", {"rougeL": 0.3, "ppl_reference": 1.0})
    return run


def test_the_judge_cannot_tell_the_arms_apart_so_the_dev_loss_decides(out_dir):
    """The demo's case: judge means within noise, the reference loss clearly lower for one arm."""
    same = noisy(3.18, 1, 0.5)
    arm("shuffled", {k: v + 0.01 for k, v in same.items()}, noisy(2.63, 2, 0.05), steps=6, seed=1)
    rng = np.random.default_rng(9)
    arm("stage3_all", {k: v + rng.normal(0, 0.3) for k, v in same.items()}, noisy(2.40, 3, 0.05), 6, 2)
    choice = choose_on_dev(dev_records("rulestudy"), "demo_dev")
    assert choice.best.run == "tiny/rulestudy/stage3_all" and choice.decided_by["metric"] == "ref_loss"
    lo, hi = choice.decided_by["ci95"]
    assert hi < 0 and lo < choice.decided_by["diff"] < hi  # lower loss: a negative difference, 0 outside
    assert choice.verdict.startswith(
        "tiny/rulestudy/stage3_all (greedy) beats tiny/rulestudy/shuffled (greedy)"
    )
    assert "ref_loss" in choice.verdict and "judge_mean" in choice.verdict and "0 inside" in choice.verdict
    rep = build_report("rulestudy", "tiny", data_dir=out_dir / "nodata")
    assert "Decided by ref_loss" in rep.verdict.text and "Decision rule: judge_mean" in rep.verdict.text
    saved = choice.as_dict()
    assert saved["decided_by"]["metric"] == "ref_loss" and [t["metric"] for t in saved["tried"]][:2] == [
        "judge_mean",
        "ref_loss",
    ]


def test_nothing_separates_so_the_tie_break_picks_and_says_so(out_dir):
    same = noisy(5.0, 4, 0.8)
    rng = np.random.default_rng(1)
    arm("long", {k: v + rng.normal(0, 0.2) for k, v in same.items()}, None, steps=12, seed=1)
    arm("short", {k: v + rng.normal(0, 0.2) for k, v in same.items()}, None, steps=4, seed=2)
    choice = choose_on_dev(dev_records("rulestudy"), "demo_dev")
    assert choice.decided_by is None and choice.tie_break == "fewest_steps, then name"
    assert choice.best.run == "tiny/rulestudy/short"  # fewest steps, whatever its judge mean
    assert choice.verdict.startswith("no clear winner on demo_dev: judge_mean")
    assert "ref_loss: no point has a value" in choice.verdict
    rep = build_report("rulestudy", "tiny", data_dir=out_dir / "nodata")
    assert rep.verdict.text.startswith(
        "No clear winner on demo_dev: no criterion (judge_mean, ref_loss, rougeL) separates the best point "
        "from the runner-up; chosen by the declared tie-break (fewest_steps, then name), not by a score."
    )


def test_too_few_or_identical_paired_prompts_are_not_estimable(out_dir):
    few = {"p00": 5.0, "p01": 6.0, "p02": 5.5}
    arm("a", few, None, steps=2, seed=1)
    arm("b", {k: v + 2 for k, v in few.items()}, None, steps=4, seed=2)
    choice = choose_on_dev(dev_records("rulestudy"), "demo_dev")
    assert choice.decided_by is None and "not estimable (3 paired prompts, fewer than 5)" in choice.verdict


def test_a_constant_difference_is_a_degenerate_interval_not_a_confident_one(out_dir):
    base = noisy(5.0, 5, 1.0)
    arm("a", base, None, steps=2, seed=1)
    arm("b", {k: v + 1.0 for k, v in base.items()}, None, steps=4, seed=2)  # every prompt exactly +1
    choice = choose_on_dev(dev_records("rulestudy"), "demo_dev")
    assert choice.decided_by is None and "degenerate interval" in choice.verdict


def test_min_diff_criteria_and_a_studys_own_rule():
    rule = parse_rule(
        {"criteria": [{"metric": "eval_loss", "effect": {"min_diff": 0.05}}], "tie_break": ["lowest_rank"]},
        "t",
    )
    assert not rule.criteria[0].interval and rule.criteria[0].min_diff == 0.05
    assert "eval_loss (a difference of at least 0.05)" in rule.describe()
    assert load_rule("demo").criteria[0].metric == "judge_mean"  # the default when a spec declares none


@pytest.mark.parametrize(
    "spec,said",
    [
        ({"criteria": [{"metric": "bleu"}]}, "metric must be one of"),
        ({"criteria": [{"metric": "eval_loss"}]}, "use effect: {min_diff: X}"),
        ({"criteria": [{"metric": "rougeL", "effect": {"min_diff": float("nan")}}]}, "positive number"),
        ({"criteria": [{"metric": "rougeL"}], "tie_break": ["coin"]}, "tie_break"),
        ({"criteria": []}, "at least one"),
        ({"criteria": [{"metric": "rougeL"}], "min_paired": 1, "extra": 1}, "unknown key"),
    ],
)
def test_a_bad_rule_is_refused_with_every_problem(spec, said):
    with pytest.raises(RuleError, match=said.replace("{", r"\{").replace("}", r"\}")):
        parse_rule(spec, "templates/studies/x.yaml: decision")


def with_eval_loss(run: Run, losses: list[float], **config) -> None:
    """The trainer's own dev losses, and the config they were computed under (run.json)."""
    history = [{"eval_loss": v, "epoch": i + 1} for i, v in enumerate(losses)]
    atomic_write_json(run.output_dir / "trainer_state.json", {"global_step": 6, "log_history": history})
    cfg = {"lora_rank": 8, "eval_dataset": "demo_dev", "cutoff_len": 128, "template": "smollm2", **config}
    atomic_write_json(run.output_dir / "run.json", {"status": "finished", "resolved_config": cfg})


def test_eval_losses_over_different_dev_rows_are_not_compared(out_dir):
    """The demo's trap: LLaMA-Factory's max_samples cuts the eval set too, so `shuffled` (max_samples 4)
    reported its eval loss over the first 4 dev rows and the chain over all of them: 2.63 against 2.40 was
    a difference of rows, not of models. Such a pair is "not comparable", never a decision."""
    spec = {"criteria": [{"metric": "eval_loss", "effect": {"min_diff": 0.05}}], "tie_break": ["name"]}
    rule = parse_rule(spec, "t")
    same = noisy(5.0, 4, 0.8)
    shuffled = arm("shuffled", same, None, steps=6, seed=1)
    chain = arm("stage3_all", same, None, steps=6, seed=2)
    with_eval_loss(shuffled, [2.63], max_samples=4)
    with_eval_loss(chain, [2.40])
    choice = choose_on_dev(dev_records("rulestudy"), "demo_dev", rule=rule)
    assert choice.decided_by is None and choice.best.run == "tiny/rulestudy/shuffled"  # the tie-break: name
    assert "eval_loss: not comparable: the two points were evaluated on different rows (max_samples" in (
        choice.verdict
    )
    with_eval_loss(shuffled, [2.63])  # the same dev rows: now the difference is the models'
    choice = choose_on_dev(dev_records("rulestudy"), "demo_dev", rule=rule)
    assert choice.decided_by["metric"] == "eval_loss" and choice.best.run == "tiny/rulestudy/stage3_all"
    assert choice.decided_by["diff"] == pytest.approx(-0.23)


def test_the_tie_breaks_steps_count_a_chains_earlier_stages(out_dir):
    """A curriculum stage continues its parent's adapter: stage 3 at its own step 2 rests on 6 steps, so
    where nothing separates, `fewest_steps` prefers a 4-step arm to it (it once counted the 2)."""
    same = noisy(5.0, 4, 0.8)
    rng = np.random.default_rng(3)
    for variant, parent in (("stage1", None), ("stage2", "stage1")):
        run = arm(variant, same, None, steps=2, seed=0)  # evaluated too, but not among the candidates
        atomic_write_json(run.output_dir / "run.json", {"status": "finished", "parent": parent})
    stage3 = arm("stage3", {k: v + rng.normal(0, 0.2) for k, v in same.items()}, None, steps=2, seed=1)
    atomic_write_json(stage3.output_dir / "run.json", {"status": "finished", "parent": "stage2"})
    arm("shuffled", {k: v + rng.normal(0, 0.2) for k, v in same.items()}, None, steps=4, seed=2)
    spec = {"criteria": [{"metric": "judge_mean"}], "tie_break": ["fewest_steps", "name"]}
    records = [r for r in dev_records("rulestudy") if r.run.variant in ("stage3", "shuffled")]
    choice = choose_on_dev(records, "demo_dev", rule=parse_rule(spec, "t"))
    assert choice.decided_by is None and choice.best.run == "tiny/rulestudy/shuffled"
    assert steps_at(stage3) == 6 and steps_at(Run("tiny", "rulestudy", "shuffled")) == 4
    atomic_write_json(stage3.output_dir / "run.json", {"status": "finished", "parent": "stage3"})
    assert steps_at(stage3) is None  # a loop: unknown, never a count
