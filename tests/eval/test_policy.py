"""Decoding by prompt type: the classification rules and the policy files."""

from __future__ import annotations

import pytest

from tools.eval.decoding import DecodingPoint
from tools.eval.policy import TYPES, classify, load_policy, main, policy_names


@pytest.mark.parametrize(
    ("prompt", "kind"),
    [
        ("Write a Python function that reverses a list.", "coding"),
        ("Fix this SQL query: SELECT * FORM users", "coding"),
        ("```\nx = 1\n```\nWhat does this print?", "coding"),
        ("Calculate the area of a circle with radius 3.", "math"),
        ("What is 12 * 7?", "math"),
        ("How many days are there in a leap year?", "math"),
        ("Write a short poem about autumn.", "writing"),
        ("Compose an email to my landlord about the heating.", "writing"),
        ("Why is the sky blue?", "open"),
        ("Give me three tips for better sleep.", "open"),
    ],
)
def test_rules_assign_the_documented_types(prompt, kind):
    assert classify(prompt) == kind


def test_the_first_matching_rule_wins_and_input_counts():
    assert classify("Write a story about a program that computes 2 + 2.") == "coding"  # coding before math
    assert classify("Summarize the following.", "The derivative of x^2 is 2x") == "math"


def test_policies_load_with_one_point_per_type_and_overrides():
    assert "bytype_recipe" in policy_names()
    pol = load_policy("bytype_recipe")
    assert set(pol.points) == set(TYPES) and pol.name == "bytype_recipe"
    assert pol.points["math"] == DecodingPoint.greedy(max_new_tokens=800)
    assert pol.points["writing"] == DecodingPoint.sampled(0.7, 0.9, max_new_tokens=800)
    assert pol.point_for({"instruction": "Write a poem.", "input": ""}) == ("writing", pol.points["writing"])
    short = load_policy("bytype_recipe", max_new_tokens=64, seed=7)
    assert {p.max_new_tokens for p in short.points.values()} == {64} and short.seed == 7
    with pytest.raises(ValueError, match="no .*bytype_nope.yaml; policies: .*bytype_recipe"):
        load_policy("bytype_nope")


def test_cli_prints_the_points_and_classifies(capsys):
    assert main(["--policy", "bytype_recipe"]) == 0
    assert "writing  t0.7_p0.9" in capsys.readouterr().out
    assert main(["--classify", "Solve x + 2 = 5"]) == 0
    assert capsys.readouterr().out.strip() == "math"
    assert main(["--policy", "bytype_missing"]) == 2
