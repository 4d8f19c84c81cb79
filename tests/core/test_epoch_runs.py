"""`<run>@epochN`: one epoch's checkpoint addressed like any run (its adapter, eval and export folders)."""

from __future__ import annotations

import json

import pytest

from tools.core.paths import Run, epoch_checkpoints


def checkpoint(out, step: int, epoch: float, complete: bool = True) -> None:
    d = out / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "adapter_model.safetensors").write_text("x")
    if complete:
        (d / "trainer_state.json").write_text(json.dumps({"epoch": epoch, "global_step": step}))


def test_names_parse_and_print_with_their_epoch():
    r = Run.parse("smollm2_135m/epochs/ep15@epoch3")
    assert (r.model, r.study, r.variant, r.epoch) == ("smollm2_135m", "epochs", "ep15", 3)
    assert str(r) == "smollm2_135m/epochs/ep15@epoch3" and r.trained == Run("smollm2_135m", "epochs", "ep15")
    assert Run.parse("saves/m/lora/s/v@epoch2").epoch == 2
    assert r.eval_dir("hw5_dev", "greedy") == r.output_dir / "eval@epoch3" / "hw5_dev" / "greedy"
    assert r.trained.eval_dir("hw5_dev", "greedy") == r.output_dir / "eval" / "hw5_dev" / "greedy"
    assert r.export_dir.name == "ep15@epoch3" and r.output_dir == r.trained.output_dir
    assert r.run_json == r.trained.run_json  # the training run's record
    for bad in ("m/s/v@epoch0", "m/base/base@epoch1", "m/s/v@epochs"):
        with pytest.raises(ValueError):
            Run.parse(bad)


def test_each_epoch_maps_to_its_last_complete_checkpoint(out_dir):
    run = Run("m", "epochs", "ep3")
    out = run.output_dir
    checkpoint(out, 2, 0.5)  # save_steps inside epoch 1: the later one stands for it
    checkpoint(out, 4, 1.0)
    checkpoint(out, 8, 1.9999999)  # float noise at the end of epoch 2
    checkpoint(out, 10, 2.31)  # a run cut by max_steps inside epoch 3
    checkpoint(out, 12, 3.0, complete=False)  # killed while writing: not a checkpoint
    assert {e: p.name for e, p in epoch_checkpoints(out).items()} == {
        1: "checkpoint-4",
        2: "checkpoint-8",
        3: "checkpoint-10",
    }
    assert [str(r) for r in run.epochs()] == [
        "m/epochs/ep3@epoch1",
        "m/epochs/ep3@epoch2",
        "m/epochs/ep3@epoch3",
    ]
    assert run.at_epoch(2).adapter == out / "checkpoint-8" / "adapter_model.safetensors"
    assert not run.at_epoch(2).is_finished()  # the training run has no DONE yet
    (out / "DONE").write_text("{}")
    assert run.at_epoch(2).is_finished() and not run.at_epoch(4).is_finished()


def test_eval_source_resolves_an_epoch_to_its_checkpoint(out_dir):
    from tools.eval import GenerateError, resolve_source

    run = Run("smollm2_135m", "epochs", "ep15")
    checkpoint(run.output_dir, 13, 1.0)
    (run.output_dir / "checkpoint-13" / "adapter_config.json").write_text("{}")
    (run.output_dir / "DONE").write_text("{}")
    (run.output_dir / "adapter_model.safetensors").write_text("x")
    src = resolve_source("smollm2_135m/epochs/ep15@epoch1")
    assert src.kind == "adapter" and src.adapter == run.output_dir / "checkpoint-13"
    with pytest.raises(GenerateError, match=r"no checkpoint of epoch 2 .*epochs with a checkpoint: @epoch1"):
        resolve_source("smollm2_135m/epochs/ep15@epoch2")
