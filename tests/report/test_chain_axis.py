"""Chained stages on one step axis: a stage's curve starts where the stage it continues ended."""

from __future__ import annotations

from tools.core.paths import Run
from tools.report.collect import RunRecord, chain_steps
from tools.report.events import Curves
from tools.report.plots import curves_png


def record(variant: str, steps: int, parent: str | None = None) -> RunRecord:
    curves = Curves(series={"loss": (list(range(1, steps + 1)), [1.0 / s for s in range(1, steps + 1)])})
    info = {"parent": parent} if parent else {}
    return RunRecord(Run("tiny", "recipes", variant), info=info, status="finished", curves=curves)


def test_stages_continue_the_step_axis_and_share_a_colour_key():
    s1, s2, s3 = record("s1", 52), record("s2", 39, "s1"), record("s3", 13, "s2")
    plain = record("r475", 195)
    chain_steps([s1, s2, s3, plain])
    assert (s1.step_offset, s2.step_offset, s3.step_offset, plain.step_offset) == (0, 52, 91, 0)
    assert s1.chain == s2.chain == s3.chain == "s1" and plain.chain is None
    assert curves_png([s1, s2, s3, plain], "loss", "loss")[:4] == b"\x89PNG"


def test_a_stage_whose_parent_is_not_shown_starts_at_zero():
    orphan = record("s2", 10, "s1")
    chain_steps([orphan])
    assert orphan.step_offset == 0 and orphan.chain is None
