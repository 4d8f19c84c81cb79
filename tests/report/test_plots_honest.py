"""The report's plots tell the truth (issue 32): one colour per run (chained stages included), a
categorical axis labelled with its own values and every point and interval inside the frame, panels
whose labels do not overlap, whole-number epochs."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex

from tools.core.paths import Run
from tools.report import plots
from tools.report.collect import EvalPoint, RunRecord, chain_steps
from tools.report.events import Curves
from tools.report.table import Axis


@pytest.fixture
def figures(monkeypatch):
    """The Figure each plot function would have written as PNG."""
    made = []

    def keep(fig):
        FigureCanvasAgg(fig).draw()  # as _png does: laid out as it would be written
        made.append(fig)
        return b"\x89PNG"

    monkeypatch.setattr(plots, "_png", keep)
    return made


def record(variant: str, steps: int, parent: str | None = None, evals=()) -> RunRecord:
    curves = Curves(series={"loss": (list(range(1, steps + 1)), [1.0 / s for s in range(1, steps + 1)])})
    info = {"parent": parent} if parent else {}
    return RunRecord(
        Run("tiny", "curriculum", variant), info=info, status="finished", curves=curves, evals=list(evals)
    )


def test_chained_stages_each_get_their_own_colour(figures):
    s1, s2, s3 = (
        record("stage1_easy", 20),
        record("stage2_easy_medium", 20, "stage1_easy"),
        record("stage3_all", 20, "stage2_easy_medium"),
    )
    shuffled = record("shuffled", 60)
    chain_steps([s1, s2, s3, shuffled])
    plots.curves_png([s1, s2, s3, shuffled], "loss", "loss")
    lines = [ln for ln in figures[0].axes[0].get_lines() if not ln.get_label().startswith("_")]
    colours = {ln.get_label(): to_hex(ln.get_color()) for ln in lines}
    assert len(colours) == 4 and len(set(colours.values())) == 4, colours


def test_a_categorical_axis_is_named_by_its_values_and_nothing_is_clipped(figures):
    labels = ["tiny/data/alpaca", "tiny/data/lima", "tiny/data/evol", "tiny/data/dolly"]
    table = pd.DataFrame(
        {
            "label": labels,
            "is_base": [False] * 4,
            "judge_mean": [6.0, None, None, None],
            "judge_ci_lo": [4.5, None, None, None],
            "judge_ci_hi": [7.9, None, None, None],
            "rougeL": [0.21, 0.25, 0.19, 0.3],
        }
    )
    axis = Axis(
        "dataset", False, dict(zip(labels, ["alpaca_1k", "lima", "evol_1k", "dolly_1k"], strict=True))
    )
    plots.axis_png(table, axis)
    judge, rouge = figures[0].axes
    assert judge.get_xlabel() == "dataset"
    assert [t.get_text() for t in judge.get_xticklabels()] == ["alpaca_1k"]  # one scored arm, by its dataset
    assert "1 of 4 arms scored" in judge.get_title()
    lo, hi = judge.get_ylim()
    assert lo < 4.5 and hi > 7.9  # the whole interval inside the frame
    assert [t.get_text() for t in rouge.get_xticklabels()] == ["alpaca_1k", "lima", "evol_1k", "dolly_1k"]
    assert all(ln.get_linestyle() in ("None", "") for ln in rouge.get_lines() if ln.get_label() == "arms")
    # the ROUGE-L panel's y label stays clear of the judge panel
    r = figures[0].canvas.get_renderer()
    assert rouge.yaxis.label.get_window_extent(r).x0 > judge.get_window_extent(r).x1


def test_epoch_ticks_are_whole_numbers(figures):
    evals = [
        EvalPoint("demo_dev", "greedy", scores={"mean": 5.0 + e / 3, "ci95": [4.0, 7.0]}, epoch=e)
        for e in (1, 2, 3)
    ]
    plots.epochs_png([record("r8", 10, evals=evals)], "demo_dev")
    ax = figures[0].axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
