"""A damaged generation.json is bad input for metrics (exit 2, the file named), never a traceback."""

from __future__ import annotations

import pytest

from filelib import atomic_write_jsonl
from tools.core.paths import Run
from tools.eval.generate import sidecar_path
from tools.eval.metrics import main


@pytest.mark.parametrize("text", ["[1, 2]", "{broken", '{"n": 1}'])
def test_a_generation_json_that_is_not_the_generators_is_refused(out_dir, capsys, text):
    run = Run.parse("tiny/rank/r4")
    pred = atomic_write_jsonl(
        run.predictions("demo_eval", "greedy"),
        [{"id": "demo_eval_00", "instruction": "q", "input": "", "answer": "a", "reference": "b"}],
    )
    sidecar_path(pred).write_text(text)
    rc = main(["--run", run.name, "--testset", "demo_eval", "--decoding", "greedy"])
    err = capsys.readouterr().err
    assert rc == 2 and "generation.json" in err and "re-run tools.eval.generate" in err, err
