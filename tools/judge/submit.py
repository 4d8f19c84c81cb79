"""A run's answers to HW5's test set as the course's evaluation reads them: the submission file.

HW5's evaluate.py loads `pred.json` as a JSON object keyed by test id and takes, for each id,
`pred[id]["output"][0]` (an id it does not find is skipped, an empty `output` list is judged as an
empty answer). So `output` must be a LIST: a bare string would be judged by its first character.
The file is checked against the test set's ids before it is written: every id present, none extra;
an empty answer is allowed but warned about (it will score about 1).

Usage:
    python -m tools.judge.submit --run R [--testset hw5_test] [--decoding greedy] [--ids FILE] [--out FILE]

`--ids` is the course's test file (`test_set_evol_instruct_150.json`, any shape with ids; default:
the registered test set's own file). The default output is `submission.json` beside the predictions.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from filelib import OwnershipError, atomic_write_json, check_output, read_jsonl, run_main
from tools.core.args import command, opt
from tools.core.paths import DATA, Run


class SubmitError(ValueError):
    pass


def read_test_ids(path: Path) -> list[str]:
    """The ids of a test file of any shape (a JSON array or JSONL of objects with `id`)."""
    from plugins.pools import loaders

    try:
        records = loaders.read_records(path)
    except (loaders.DataError, OSError) as e:
        raise SubmitError(f"{path}: {e}") from e
    ids = []
    for n, rec in enumerate(records):
        if not isinstance(rec, dict) or rec.get("id") in (None, ""):
            raise SubmitError(f"{path}: row {n}: field 'id' missing")
        ids.append(str(rec["id"]))
    return ids


def default_ids_file(testset: str) -> Path:
    info = DATA / "dataset_info.json"
    entry = json.loads(info.read_text()).get(testset) if info.exists() else None
    if not entry or "file_name" not in entry:
        raise SubmitError(f"test set {testset!r} is not registered in {info}: pass --ids FILE")
    return DATA / entry["file_name"]


def build_submission(predictions: Path, ids: list[str], ids_file: Path, warn=print) -> dict:
    if not predictions.exists():
        raise SubmitError(f"{predictions}: no predictions (run `make eval` first)")
    answers: dict[str, str] = {}
    for n, row in enumerate(read_jsonl(predictions), 1):
        if "id" not in row or not isinstance(row.get("answer"), str):
            raise SubmitError(f"{predictions}: row {n}: needs 'id' and a string 'answer'")
        if str(row["id"]) in answers:
            raise SubmitError(f"{predictions}: row {n}: id {row['id']!r} appears twice")
        answers[str(row["id"])] = row["answer"]
    missing = [i for i in ids if i not in answers]
    extra = [i for i in answers if i not in set(ids)]
    if missing:
        raise SubmitError(
            f"{predictions}: {len(missing)} of the {len(ids)} test ids of {ids_file} have no answer "
            f"(first: {', '.join(missing[:5])}): the course would skip them"
        )
    if extra:
        raise SubmitError(
            f"{predictions}: {len(extra)} id(s) not in the test set {ids_file} (first: {', '.join(extra[:5])})"
        )
    empty = [i for i in ids if not answers[i].strip()]
    if empty:
        warn(
            f"submit: warning: {len(empty)} empty answer(s) (first: {', '.join(empty[:5])}): they will score ~1"
        )
    return {i: {"output": [answers[i]]} for i in ids}


def submit(
    run: str, testset: str = "hw5_test", decoding: str = "greedy", ids_file=None, out=None, say=print
) -> Path:
    r = Run.parse(run)
    pred = r.predictions(testset, decoding)
    ids_path = Path(ids_file) if ids_file else default_ids_file(testset)
    out = Path(out) if out else pred.with_name("submission.json")
    # never over its inputs, nor over a file a run keeps (answers, judgments, weights): only a submission
    check_output(out, "the submission writer", inputs=[pred, ids_path], folder=False, outside_models=False)
    run_dir = r.trained.output_dir.resolve()
    if out.exists() and run_dir in out.resolve().parents and out.name != "submission.json":
        raise OwnershipError(f"{out}: a file of the run {r.trained.name}: write the submission elsewhere")
    ids = read_test_ids(ids_path)
    sub = build_submission(pred, ids, ids_path, warn=lambda m: print(m, file=sys.stderr))
    atomic_write_json(out, sub, indent=2)
    say(f"submit: {len(sub)} answers of {r.name} ({testset}/{decoding}) -> {out}")
    return out


@dataclass
class SubmitArgs:
    run: str = opt(help="model/study/variant", required=True)
    testset: str = opt("hw5_test", help="the test set the answers are for")
    decoding: str = opt("greedy", help="the decoding point the answers are for")
    ids: Path | None = opt(None, help="the course's test file (default: the registered test set's)")
    out: Path | None = opt(None, help="default: submission.json beside the predictions")


@command(SubmitArgs, __doc__)
def main(a: SubmitArgs) -> int:
    try:
        submit(a.run, a.testset, a.decoding, a.ids, a.out)
    except (SubmitError, ValueError) as e:
        print(f"submit: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run_main(main)
