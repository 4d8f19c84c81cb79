"""The recovery report: one table, before pruning / after pruning / after recovery, every column."""

from __future__ import annotations

import csv

from filelib import atomic_write_json
from tools.core.paths import Run
from tools.report.recovery import build_recovery_report, main


def _stage(stage: str, params: int, ppl: float, acc: float, tps: float) -> dict:
    return {
        "stage": stage,
        "params": params,
        "perplexity": {"local:demo_recovery_heldout": ppl, "wikitext2": "skipped: the hub is not reachable"},
        "zero_shot": {"python_mc": {"acc": acc, "acc_norm": acc, "n": 24}, "boolq": {"skipped": "offline"}},
        "speed": {"tokens_per_s": tps, "latency_s": 32 / tps, "new_tokens": 32, "prompts": 3},
        "peak_mem_mb": 900.0,
        "peak_mem_basis": "process peak RSS (CPU)",
        "device": "cpu",
    }


def test_the_table_has_every_column_and_the_recovered_share(out_dir, capsys):
    run = Run("smollm2_135m", "recovery", "demo_recovery")
    stages = {
        "unpruned": _stage("unpruned", 1000, 20.0, 0.5, 30.0),
        "pruned": _stage("pruned", 800, 60.0, 0.3, 36.0),
        "recovered": _stage("recovered", 800, 30.0, 0.4, 36.0),
    }
    atomic_write_json(
        run.output_dir / "eval" / "recovery" / "evaluation_results.json", {"run": run.name, "stages": stages}
    )
    Run("smollm2_135m", "recovery", "other").output_dir.mkdir(parents=True)  # a run not evaluated yet
    done = build_recovery_report()
    assert done["columns"] == [
        "run",
        "stage",
        "params",
        "pruned_share",
        "ppl:local:demo_recovery_heldout",
        "ppl:wikitext2",
        "acc:python_mc",
        "acc:boolq",
        "acc_mean",
        "tokens_per_s",
        "tokens_per_s_spread",
        "speed_noisy",
        "speed_repeats",
        "speed_threads",
        "latency_s",
        "peak_mem_mb",
        "mem_basis",
        "device",
    ]
    rows = list(csv.DictReader((done["dir"] / "results.csv").open()))
    assert [r["stage"] for r in rows] == ["unpruned", "pruned", "recovered"]
    assert [r["pruned_share"] for r in rows] == ["0.0", "0.2", "0.2"]
    assert rows[1]["ppl:wikitext2"] == "" and rows[1]["acc:boolq"] == ""  # unmeasured: empty, never 0
    assert rows[2]["acc_mean"] == "0.4"
    md = (done["dir"] / "report.md").read_text()
    assert "took back 75% of the perplexity pruning added" in md  # (60 - 30) / (60 - 20)
    assert "not measured: ppl wikitext2: skipped" in md and "zero-shot boolq: offline" in md
    assert "not evaluated yet: smollm2_135m/recovery/other" in md
    assert "out of memory" in md and "| recovered |" not in md.split("## What to try")[1]
    assert main([]) == 0 and "Recovery of pruned models" in capsys.readouterr().out


def test_no_evaluated_run_is_a_clear_error(out_dir, capsys):
    assert main(["--study", "recovery"]) == 2
    assert "tools.eval.recovery --run" in capsys.readouterr().err
    assert not (out_dir / "reports" / "recovery" / "report.md").exists()
