"""Speed measured as speed (tools/core/timing.py): threads pinned, a warm-up, repeats, median and spread,
noisy figures marked; the recovery evaluation's tokens/s from the same measurement."""

from __future__ import annotations

import pytest

from tools.core import timing


def test_measure_warms_up_pins_threads_and_reports_median_and_spread():
    import torch

    before = torch.get_num_threads()
    calls, threads = [], []

    def work():
        calls.append(1)
        threads.append(torch.get_num_threads())

    t = timing.measure(work, repeats=5, warmup=2, threads=1)
    assert len(calls) == 7 and set(threads) == {1} and torch.get_num_threads() == before
    assert t["repeats"] == 5 and len(t["samples_s"]) == 5 and t["threads"] == 1
    assert t["median_s"] >= 0 and t["spread_s"] >= 0
    with pytest.raises(ValueError):
        timing.measure(work, repeats=0)


def test_spread_is_the_interquartile_range_and_noisy_figures_are_marked():
    assert timing.spread([1.0, 2.0, 3.0, 4.0, 100.0]) == pytest.approx(2.0)  # one outlier does not count
    assert timing.spread([1.0, 1.5]) == 0.5 and timing.spread([3.0]) == 0.0
    assert timing.noisy(10.0, 1.5) and not timing.noisy(10.0, 0.5)
    assert timing.cell(13.1, 0.4) == "13.1 ± 0.4"
    assert timing.cell(0.57, 0.3, digits=2) == "0.57 ± 0.30 (noisy)"
    assert timing.cell(None, None) == "-"
    r = timing.rate(100, {"samples_s": [1.0, 1.0, 2.0, 1.0, 1.0], "repeats": 5, "threads": 1})
    assert r["per_s"] == 100.0 and r["spread"] == 0.0 and not r["noisy"]


def test_the_recovery_speed_is_a_median_of_repeats_on_pinned_threads(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tools.eval.recovery import speed

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    sp = speed(model, AutoTokenizer.from_pretrained(tiny_model), new_tokens=4, repeats=4)
    assert sp["repeats"] == 4 and sp["threads"] == 1 and sp["new_tokens"] == 4 and sp["prompts"] == 3
    assert sp["tokens_per_s"] > 0 and sp["tokens_per_s_spread"] >= 0 and isinstance(sp["noisy"], bool)
    assert sp["noisy"] == timing.noisy(sp["tokens_per_s"], sp["tokens_per_s_spread"])
