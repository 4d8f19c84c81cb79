"""The model builders take a folder as built only when this code built it (tools.models.base.builder_id):
a cache kept between CI runs, or a checkout's models/ after a pull, is built again where the builder changed."""

from __future__ import annotations

import json
import time

from filelib.ownership import OWNER_FILE, owner_of
from tools.models import base, tiny


def test_a_tiny_model_built_by_other_code_is_built_again(tiny_model, tmp_path):
    out = tmp_path / "tiny"
    assert tiny.build(out) == out
    done = json.loads((out / base.COMPLETE).read_text())
    assert done["builder"] == base.builder_id(tiny.__file__, base.__file__)
    made = (out / "model.safetensors").stat().st_mtime_ns
    assert tiny.build(out) == out and (out / "model.safetensors").stat().st_mtime_ns == made  # current: kept

    # as an older builder left it: no builder recorded, no owner's mark
    (out / base.COMPLETE).write_text(json.dumps({k: v for k, v in done.items() if k != "builder"}))
    (out / OWNER_FILE).unlink()
    time.sleep(0.01)
    assert tiny.build(out) == out
    assert (out / "model.safetensors").stat().st_mtime_ns != made
    assert owner_of(out) == tiny.OWNER and json.loads((out / base.COMPLETE).read_text()) == done


def test_the_builder_id_follows_the_source_and_transformers(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("x = 2\n")
    assert base.builder_id(a) == base.builder_id(a) != base.builder_id(b)
    assert len(base.builder_id(a)) == 16
    assert not base.is_current(tmp_path)  # nothing built there


def test_the_embedded_model_every_tool_reads_is_the_one_make_base_model_builds():
    from tools.core.paths import EMBEDDED_MODEL
    from tools.data.sources import EMBEDDED
    from tools.judge.cli import DEFAULT_OFFLINE_MODEL

    assert base.BASE_MODEL_DIR == EMBEDDED_MODEL == EMBEDDED == DEFAULT_OFFLINE_MODEL
