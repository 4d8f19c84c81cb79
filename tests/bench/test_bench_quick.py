"""Every benchmark runs in its quick form (`python -m tools.bench --quick --only TOPIC`), so a benchmark that
crashes fails the tests; the quick forms use the tiny model and a few tokens or rows (seconds each on an idle
machine), so their figures are a check that each line is produced as a ratio measured in the same run,
not figures to compare."""

from __future__ import annotations

import os
import re
import shlex
import time

import pytest

from tools.bench.__main__ import TOPICS
from tools.bench.__main__ import main as bench_main

# what each topic must print (a ratio or a median with its spread, measured in the same run)
EXPECT = {
    "data": [
        r"select top 100 by length: .* = [\d.]+x json\.load",
        r"data command .* = [\d.]+x json\.load",
        r"curriculum easy \d+ \(\d+-\d+ words\)",
        r"IFD scoring: .* = [\d.]+x",
    ],
    "generate": [
        r"batch  1: .* median of 2: [\d.]+ ± [\d.]+( \(noisy\))? tokens/s \(x1\.00 vs batch 1\)",
        r"batch  4: .* \(x[\d.]+ vs batch 1\)",
        r"rouge-score",
    ],
    "dtype": [r"bf16 x[\d.]+", r"engine .* = x[\d.]+ the faster bare HF run", r"bf16 mixed .* faster\)"],
    "study": [r"compute share \d+% of the process's wall time"],
    "judge": [r"C= 1: .* speed-up  1\.00 x", r"C= 4: .* speed-up +[\d.]+ x"],
    "report": [r"two processes vs one: reading x[\d.]+ faster"],
    "tune": [
        r"grid: 3 runs, best dev eval_loss [\d.]+ \(lr[125]e-4; lr1e-4 [\d.]+, lr2e-4 [\d.]+, lr5e-4 [\d.]+;"
        r" spread [\d.]+\), 12 steps, [\d.]+ s",
        r"tune: 2 trials; within 0\.05 of the grid's best (after [12] trial\(s\)|in none of its 2); best [\d.]+;"
        r" steps [5-8] of 8 \(pruning saved \d+%\), [\d.]+ s",
        r"  the grid's best itself \([\d.]+\) reached (after [12] trial\(s\)|by none of the 2 trials)",
        r"  t000_lr[\d.e-]+ (complete|pruned) ep1 [\d.]+",
        r"machine: .*; load average [\d.]+, [\d.]+, [\d.]+ before, [\d.]+, [\d.]+, [\d.]+ after",
        r"command: \S*python\S* -m tools\.flows\.tune_bench --study lr --model smollm2_135m --trials 6 --pruner"
        r" '\{name: median, n_startup_trials: 1\}' --quick",
    ],
}
SLOW = {"dtype", "study"}  # they start training / evaluation processes (a minute or more on a loaded CPU)
# docs/tune.md's quick form of the search-vs-grid benchmark, and the topic that runs it
QUICK_TUNE_BENCH = "python -m tools.flows.tune_bench --quick --pruner '{name: median, n_startup_trials: 1}'"
TUNE_TOPIC = "python -m tools.bench --quick --only tune"


def run_topic(topic: str, capsys) -> str:
    t0 = time.perf_counter()
    rc = bench_main(["--quick", "--only", topic])
    out = capsys.readouterr().out
    assert rc == 0 and "failed:" not in out and "Traceback" not in out, out[-3000:]
    assert f"== {topic}" in out, out
    for pattern in EXPECT[topic]:
        assert re.search(pattern, out), (pattern, out)
    print(f"{topic}: {time.perf_counter() - t0:.1f} s")
    return out


def test_every_topic_has_a_quick_test():
    assert set(EXPECT) == set(TOPICS)


@pytest.mark.parametrize("topic", [t for t in TOPICS if t not in SLOW | {"tune"}])
def test_the_benchmark_runs_in_its_quick_form(topic, out_dir, capsys):
    run_topic(topic, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("topic", sorted(SLOW))
def test_the_slow_benchmark_runs_in_its_quick_form(topic, out_dir, capsys):
    run_topic(topic, capsys)


@pytest.mark.slow
def test_the_tune_benchmark_runs_in_its_quick_form(out_dir, tiny_model, capsys):
    """The grid (3 runs) and a 2-trial search on the tiny model, in a temporary output root of its own."""
    from tools.bench import tune

    assert tune.QUICK == shlex.split(QUICK_TUNE_BENCH)[3:]  # the topic runs docs/tune.md's command as written
    assert shlex.split(TUNE_TOPIC)[3:] == ["--quick", "--only", "tune"]  # what run_topic passes
    run_topic("tune", capsys)
    assert os.environ["SMALLDATA_OUT"] == str(out_dir)  # put back for the topics after it
    assert not any(out_dir.iterdir())  # nothing written outside its own root
