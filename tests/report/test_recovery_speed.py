"""The recovery study's speed as measured, never one timing: tokens/s as the median ± spread of the timed
passes (tools.eval.recovery through tools.core.timing), `(noisy)` when the spread exceeds 10% of the
median, "not estimable" where no spread was measured, in the report (tools.report.recovery) and in the
demo's summary (tools.flows.recovery_demo). The issue's case: 0.57 / 0.65 / 17.14 tokens/s for three stages,
two of them one architecture, shown as figures."""

from __future__ import annotations

import csv

from filelib import atomic_write_json
from tools.core import timing
from tools.core.paths import Run
from tools.flows.recovery_demo import summary
from tools.report.recovery import build_recovery_report

TEXT = "local:demo_recovery_heldout"
NOT_ESTIMABLE = "not estimable (one timing, no spread)"


def _stage(ppl: float, speed: dict) -> dict:
    return {"params": 1000, "perplexity": {TEXT: ppl}, "speed": speed, "device": "cpu"}


def timed(tps: float, spread: float, repeats: int = 5) -> dict:
    """A `speed` as tools.eval.recovery writes it."""
    return {
        "tokens_per_s": tps,
        "tokens_per_s_spread": spread,
        "noisy": timing.noisy(tps, spread),
        "latency_s": round(32 / tps, 4),
        "new_tokens": 32,
        "prompts": 3,
        "repeats": repeats,
        "threads": 1,
    }


STAGES = {
    "unpruned": _stage(20.0, timed(13.1, 0.4)),
    "pruned": _stage(60.0, timed(14.5, 3.2)),  # spread 22% of the median: noisy
    # written before speed had repeats: one timing, the 17.14
    "recovered": _stage(30.0, {"tokens_per_s": 17.14, "latency_s": 1.867}),
}


def test_the_cell_is_median_and_spread_or_not_estimable():
    assert timing.cell(13.1, 0.4, n=5) == "13.1 ± 0.4"
    assert timing.cell(14.5, 3.2, n=5) == "14.5 ± 3.2 (noisy)"
    assert timing.cell(17.14, None) == NOT_ESTIMABLE  # no spread recorded: no bare 17.1
    assert timing.cell(17.14, 0.0, n=1) == NOT_ESTIMABLE  # one timing's "spread" of 0 is not a spread
    assert timing.cell(None, None) == "-"


def test_the_report_shows_each_stages_speed_with_its_spread(out_dir):
    run = Run("smollm2_135m", "recovery", "demo_recovery")
    one = dict(STAGES, pruned=_stage(60.0, timed(14.5, 0.0, repeats=1)))
    for r, stages in ((run, STAGES), (Run("tiny", "recovery", "demo_recovery"), one)):
        atomic_write_json(
            r.output_dir / "eval/recovery/evaluation_results.json", {"run": r.name, "stages": stages}
        )
    done = build_recovery_report()
    md = (done["dir"] / "report.md").read_text()
    header, *rows = [line for line in md.splitlines() if line.startswith("| run |") or "| 1,000 |" in line]
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert "tokens_per_s_spread" not in cols  # inside the tokens/s cell
    cells = {}
    for line in rows:
        row = dict(zip(cols, [c.strip() for c in line.strip("|").split("|")], strict=True))
        cells[(row["run"], row["stage"])] = row
    smol = {stage: cells[(run.name, stage)] for stage in STAGES}
    assert smol["unpruned"]["tokens_per_s"] == "13.1 ± 0.4"
    assert smol["pruned"]["tokens_per_s"] == "14.5 ± 3.2 (noisy)"
    assert smol["recovered"]["tokens_per_s"] == NOT_ESTIMABLE and "17.1" not in md
    assert smol["unpruned"]["latency_s"] == "2.44 (median of 5)"
    assert smol["pruned"]["latency_s"] == "2.21 (median of 5) (noisy)"
    assert smol["recovered"]["latency_s"] == NOT_ESTIMABLE
    assert cells[("tiny/recovery/demo_recovery", "pruned")]["tokens_per_s"] == NOT_ESTIMABLE  # 1 pass
    assert "of 5 timed passes after a warm-up, 1 thread(s)" in md and "a spread above 10% of its median" in md
    assert "noisy speed (the machine's load, not the model): smollm2_135m/recovery/demo_recovery pruned" in md
    assert "speed not estimable (one timing, no spread): smollm2_135m/recovery/demo_recovery recovered" in md
    rows = {(r["run"], r["stage"]): r for r in csv.DictReader((done["dir"] / "results.csv").open())}
    pruned = rows[(run.name, "pruned")]
    assert (pruned["tokens_per_s"], pruned["tokens_per_s_spread"]) == ("14.5", "3.2")
    assert (pruned["speed_noisy"], pruned["speed_repeats"], pruned["speed_threads"]) == ("True", "5", "1")
    assert rows[(run.name, "recovered")]["tokens_per_s_spread"] == ""  # not measured: empty, never 0


def test_the_demo_prints_speed_as_measured():
    lines = summary(STAGES, TEXT)
    assert lines[0].startswith("perplexity on demo_recovery_heldout (held out of training); tokens/s")
    by = {line.split()[0]: line for line in lines[1:]}
    assert by["unpruned"].endswith("perplexity      20.00   tokens/s 13.1 ± 0.4")
    assert by["pruned"].endswith("tokens/s 14.5 ± 3.2 (noisy)")
    assert by["recovered"].endswith(f"tokens/s {NOT_ESTIMABLE}") and "17.1" not in "\n".join(lines)
