"""The report shows which protocol and which references each judge score is on, its length-controlled
score beside it, and never ranks scores of different protocols against each other."""

from __future__ import annotations

from tools.core.paths import Run, report_dir
from tools.report.build import build_report
from tools.report.synthetic import scores, standard_series, write_run


def arm(variant: str, mean: float, protocol: str, lc: float | None = None) -> None:
    s = scores(mean) | {
        "protocol": protocol,
        "references": {
            "source": "predictions",
            "path": "data/generated/hw5_test.json",
            "sha256": "ab12cd34ef",
        },
    }
    if lc is not None:
        s["length_controlled"] = {
            "raw": mean,
            "lc": lc,
            "lc_ci95": [lc - 0.4, lc + 0.4],
            "protocol": protocol,
        }
    write_run(
        Run("tiny", "rank", variant),
        standard_series(20),
        {"lora_rank": int(variant[1:])},
        ["lora_rank"],
        evals={("demo_eval", "greedy"): {"scores": s}},
    )


def test_protocol_references_and_length_controlled_beside_the_score(out_dir):
    arm("r4", 6.0, "hw5_official", lc=5.5)
    arm("r8", 7.0, "hw5_official", lc=5.2)
    rep = build_report("rank", data_dir=out_dir / "nodata")
    md = (report_dir("rank") / "report.md").read_text()
    assert "7 [6.7, 7.3] hw5_official; length-controlled 5.2 [4.8, 5.6]; refs hw5_test.json ab12cd34" in md
    assert rep.verdict.best == "r8"


def test_scores_of_different_protocols_are_never_ranked_together(out_dir):
    arm("r4", 6.0, "hw5_official")
    arm("r8", 8.0, "hw5_pairwise")
    rep = build_report("rank", data_dir=out_dir / "nodata")
    assert rep.verdict.best is None and "different judges or protocols" in rep.verdict.text
    md = (report_dir("rank") / "report.md").read_text()
    assert "hw5_official by gpt-4o-mini" in md and "hw5_pairwise" in md
