"""`python -m tools.data` end to end: demo and HW5 pools, data-study subsets, evaluation sets,
every kind of bad input (message names file/row/field, nothing written), and a real training run
through LLaMA-Factory's own loader on the registered stages."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import yaml

from plugins.pools import load_rows
from plugins.publishing import load_info, resolve
from tools.core import warm
from tools.core.paths import DATA, ROOT, llamafactory_cli
from tools.data import main


def run_cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_demo_pool_selects_splits_registers(tmp_path, out_dir, capsys):
    rc, out, _ = run_cli(capsys, "--source", "demo", "--n", 100, "--dataset-dir", tmp_path)
    assert rc == 0, out
    assert [line.split(":")[1].strip() for line in out.splitlines()] == [
        "load",
        "select",
        "curriculum",
        "register",
    ]
    info = load_info(tmp_path)
    subset = load_rows(resolve("alpaca_top100", tmp_path))
    stages = [load_rows(resolve(f"alpaca_top100_{s}", tmp_path)) for s in ("easy", "medium", "hard")]
    assert len(subset) == 100 and all(stages)
    assert sorted(r["id"] for st in stages for r in st) == sorted(r["id"] for r in subset)
    m = json.loads((tmp_path / "generated/alpaca_top100/alpaca_top100.manifest.json").read_text())
    assert m["source"]["kind"] == "demo" and m["strategy"] == "hw5_default" and m["n"] == 100
    assert m["source"]["files"][0]["sha256"] and m["package_version"] and m["seed"] == 0
    assert sum(m["curriculum"]["counts"].values()) == 100 and m["ids"] == [r["id"] for r in subset]
    assert (tmp_path / "generated/alpaca_top100/alpaca_top100.png").stat().st_size > 10_000
    kinds = {k: (info[k]["smalldata"]["kind"], info[k]["smalldata"]["unit"]) for k in info}
    assert kinds == {"alpaca_top100": ("train", "alpaca_top100")} | {
        f"alpaca_top100_{s}": ("stage", "alpaca_top100") for s in ("easy", "medium", "hard")
    }
    # LLaMA-Factory's own parser reads the entries (the marker key is ignored)
    from llamafactory.data.parser import get_dataset_list

    attrs = get_dataset_list(["alpaca_top100_easy", "alpaca_top100_medium"], str(tmp_path))
    assert [a.dataset_name for a in attrs] == [
        "generated/alpaca_top100/alpaca_top100_easy.json",
        "generated/alpaca_top100/alpaca_top100_medium.json",
    ]
    # re-running replaces our own entries; a user's entry elsewhere in the file survives
    info["mine"] = {"file_name": "mine.json"}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    rc = run_cli(capsys, "--source", "demo", "--n", 30, "--name", "alpaca_top100", "--dataset-dir", tmp_path)[
        0
    ]
    assert rc == 0
    assert load_info(tmp_path)["mine"] == {"file_name": "mine.json"}
    assert len(load_rows(resolve("alpaca_top100", tmp_path))) == 30


def test_all_strategies_for_the_data_study(tmp_path, out_dir, tiny_model, capsys):
    args = ["--source", "demo", "--n", 6, "--all-strategies", "--dataset-dir", tmp_path, "--no-plot"]
    args += ["--model", tiny_model, "--ifd-candidates", 8, "--ifd-max-tokens", 48, "--embedding", "hashed"]
    rc, out, err = run_cli(capsys, *args)
    assert rc == 0, err
    info = load_info(tmp_path)
    study = ["random_s0", "random_s1", "random_s2", "rating", "hw5_default", "length"]
    study += ["long_is_more", "complexity", "ifd", "mix", "length_window", "diversity", "quota_60_20_20"]
    picks = {s: [r["id"] for r in load_rows(resolve(f"alpaca_top6_by_{s}", tmp_path))] for s in study}
    assert all(len(p) == 6 for p in picks.values()) and set(info) >= {f"alpaca_top6_by_{s}" for s in study}
    assert picks["random_s0"] != picks["random_s1"] and picks["length"] != picks["rating"]
    m = json.loads((tmp_path / "generated/alpaca_top6_by_ifd/alpaca_top6_by_ifd.manifest.json").read_text())
    assert m["ifd"]["prefiltered"] and m["ifd"]["candidates"] == 8 and m["ifd"]["prefilter"] == "hw5_default"
    assert "IFD on 8 of" in out
    q = json.loads(
        (
            tmp_path / "generated/alpaca_top6_by_quota_60_20_20/alpaca_top6_by_quota_60_20_20.manifest.json"
        ).read_text()
    )
    assert [p["count"] for p in q["quota"]["parts"]] == [4, 1, 1] and q["quota"]["scaled_to_n"]
    assert sorted(q["quota"]["chosen_by"]) == sorted(picks["quota_60_20_20"])
    # a second run takes IFD from the cache
    run_cli(capsys, *args)
    m = json.loads((tmp_path / "generated/alpaca_top6_by_ifd/alpaca_top6_by_ifd.manifest.json").read_text())
    assert m["ifd"]["cache_hits"] == 8 and m["ifd"]["scored"] == 0


def test_hw5_pool_and_eval_sets(shared_data, tmp_path, out_dir, capsys):
    args = ["--source", "hw5", "--n", 100, "--eval", "hw5", "--eval", "demo", "--dataset-dir", tmp_path]
    rc, out, err = run_cli(capsys, *args, "--no-plot")
    assert rc == 0, err
    assert "load: hw5: 1972 rows, 28 duplicates dropped" in out
    assert "hw5_test: 150 prompts, 150 with a reference joined by id, 0 without" in out
    test = load_rows(resolve("hw5_test", tmp_path))
    assert len(test) == 150 and test[0]["id"] == "identity_8174" and test[0]["output"] == "My dog is brown."
    assert len(load_rows(resolve("demo_eval", tmp_path))) == len(load_rows(DATA / "demo_eval.json"))
    subset = load_rows(resolve("alpaca_top100", tmp_path))
    scores = [r["score"] for r in subset]  # HW5's sort: the best-rated first, longest first within
    assert scores == sorted(scores, reverse=True) and scores[0] == 5.0


def test_a_prompt_file_as_an_eval_set(tmp_path, capsys):
    f = tmp_path / "qs.jsonl"
    f.write_text('{"id": "q1", "prompt": "Why is the sea salty?"}\n{"id": "q2", "prompt": "Name a prime."}\n')
    rc, out, _ = run_cli(capsys, "--eval", f, "--eval-name", "my_eval", "--dataset-dir", tmp_path / "d")
    assert rc == 0 and "my_eval: 2 prompts, 0 with a reference, 2 without" in out
    assert [r["id"] for r in load_rows(resolve("my_eval", tmp_path / "d"))] == ["q1", "q2"]


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["--strategy", "best"], "unknown strategy 'best'"),
        (["--strategy", "rating:x"], "weight 'x' of 'rating' is not a number"),
        (["--n", "100000"], r"N=100000 is larger than the pool \(468 rows"),
        (["--thresholds", "abc"], "--thresholds 'abc'"),
        (["--source", "missing.json"], r"missing\.json: file not found"),
        (["--source", "BAD"], r"bad\.json: row 1: field 'output' is empty"),
        (
            ["--source", "demo", "--eval", "BADEVAL"],
            r"q\.json: row 1: field 'prompt' must be a string, found int",
        ),
        (["--source", "USER"], "alpaca_top100 already registered by someone else"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, capsys, args, pattern):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "q", "output": "a"}, {"instruction": "q2", "output": ""}]))
    ddir = tmp_path / "d"
    if "USER" in args:
        ddir.mkdir()
        (ddir / "dataset_info.json").write_text(json.dumps({"alpaca_top100": {"file_name": "x.json"}}))
        args = ["--source", "demo"]
    (tmp_path / "q.json").write_text(json.dumps([{"prompt": "ok"}, {"prompt": 5}]))
    args = [str(bad) if a == "BAD" else str(tmp_path / "q.json") if a == "BADEVAL" else a for a in args]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc, _, err = run_cli(
        capsys, *(args if "--source" in args else ["--source", "demo", *args]), "--dataset-dir", ddir
    )
    assert rc == 2 and "data: error:" in err
    assert re.search(pattern, err), err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, not even a folder


@pytest.mark.parametrize(
    "strategy,model,pattern",
    [
        (
            "long_is_more",
            "no-such-folder",
            r"--model no-such-folder \(read by the strategy long_is_more\): no such folder",
        ),
        ("quota:50*rating,50*ifd", "FILE", r"config\.json is a file: name the model's folder"),
        ("mix", "EMPTY", r"\(read by the strategy long_is_more, ifd\): .*empty holds no config\.json"),
        ("rating:1,ifd:1", "org/not-cached", r"not in the Hugging Face cache, and HF_HUB_OFFLINE is set"),
    ],
)
def test_a_model_a_strategy_reads_is_checked_before_anything_is_read(
    tmp_path, capsys, monkeypatch, tiny_model, strategy, model, pattern
):
    """A --model typed wrong is refused in one line before the pool is read (it failed with a traceback
    after scoring, or after the hub client's retries); a strategy that reads no model does not ask for one."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "empty").mkdir()
    model = {"FILE": tiny_model / "config.json", "EMPTY": tmp_path / "empty"}.get(model, model)
    ddir = tmp_path / "d"
    rc, out, err = run_cli(
        capsys, "--source", "demo", "--strategy", strategy, "--model", model, "--dataset-dir", ddir
    )
    assert rc == 2 and re.search(pattern, err) and "load:" not in out, (out, err)
    assert not ddir.exists()
    rc, out, err = run_cli(
        capsys, "--source", "demo", "--strategy", "rating", "--model", model, "--dataset-dir", ddir
    )
    assert rc == 0 and "register: alpaca_top100" in out, err


def test_a_hub_id_is_org_slash_name_and_nothing_else():
    from tools.core.hub import hub_id_shaped

    assert hub_id_shaped("meta-llama/Llama-2-7b-hf") and hub_id_shaped("models/tiny")  # a typo looks like one
    assert not any(map(hub_id_shaped, ["tiny", "/abs/m", "./org/m", "../m/x", "org/m/", "a/b/c", "/m"]))


def test_the_strategies_that_read_the_model_are_found_in_every_form():
    from plugins.publishing.pipeline import needs_model

    assert needs_model(["mix"], "hw5_default", "hw5_default") == ["long_is_more", "ifd"]
    assert needs_model(["quota:60*length_window,40*diversity"], "hw5_default", "long_is_more") == [
        "long_is_more"
    ]
    assert needs_model(["ifd"], "rating:1,long_is_more:1", "none") == ["ifd", "long_is_more"]
    assert needs_model(["diversity", "rating", "random_s3"], "long_is_more", "none") == []


def test_hub_name_offline_says_how_to_pass_a_file(tmp_path, capsys, monkeypatch):
    """Offline said after huggingface_hub and datasets were imported (as in a warm child, or here): the load
    still stays off the network, where the client would retry for tens of seconds, and says how to pass a
    file. The constants are set through monkeypatch first so that go_offline's change to them is undone
    when the test ends."""
    import importlib

    from tools.core.hub import OFFLINE_CONSTANTS

    for module, names in OFFLINE_CONSTANTS.items():  # imported before the variables were set
        for name in names:
            monkeypatch.setattr(importlib.import_module(module), name, False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rc, _, err = run_cli(capsys, "--source", "nobody/no-such-dataset", "--dataset-dir", tmp_path / "d")
    assert (
        rc == 2 and "nobody/no-such-dataset: could not load it" in err and "--source path/to/file.json" in err
    )
    assert "OfflineModeIsEnabled" in err, err  # refused by the offline mode, not after network retries
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_llamafactory_trains_on_the_registered_stages(tmp_path, out_dir, tiny_model, capsys):
    ddir = tmp_path / "data"
    ddir.mkdir()
    shutil.copy(DATA / "dataset_info.json", ddir / "dataset_info.json")  # a tmp copy of the registry
    assert run_cli(capsys, "--source", "demo", "--dataset-dir", ddir)[0] == 0
    cfg = {
        "model_name_or_path": str(tiny_model),
        "template": "smollm2",
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_target": "all",
        "lora_rank": 4,
        "dataset": "alpaca_top100_easy,alpaca_top100_medium",
        "dataset_dir": str(ddir),
        "cutoff_len": 128,
        "max_steps": 3,
        "per_device_train_batch_size": 2,
        "learning_rate": 1.0e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "output_dir": str(out_dir / "run"),
        "overwrite_output_dir": True,
        "preprocessing_num_workers": 1,
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    # `llamafactory-cli train`, as a child of the worker's fork server (LLaMA-Factory imported once)
    log = tmp_path / "train.log"
    res = warm.run_command(
        [*llamafactory_cli(), "train", str(tmp_path / "train.yaml")], log, ROOT, dict(os.environ)
    )
    output = log.read_text()
    assert res.returncode == 0, output[-3000:]
    easy = len(load_rows(resolve("alpaca_top100_easy", ddir)))
    medium = len(load_rows(resolve("alpaca_top100_medium", ddir)))
    log = [json.loads(x) for x in (out_dir / "run/trainer_log.jsonl").read_text().splitlines()]
    assert log[-1]["current_steps"] == 3 and (out_dir / "run/adapter_model.safetensors").exists()
    seen = re.search(r"Num examples = ([\d,]+)", output)
    assert seen and int(seen.group(1).replace(",", "")) == easy + medium  # both stages, nothing else
