"""Bad input never crashes, never silently misleads, never damages (issue 18).

One table of hostile inputs across every command, run in-process through each CLI's `main(argv)`.
Each case asserts the exit status (2 for bad input, the tool's documented code otherwise), that the
one error message names what it must (file, row or line, field), and that nothing on disk changed:
every file under the test's folder and the repo's data/ is hashed before and after. A second table
reads shapes of public instruction and test sets that no other test has.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from plugins.pools import DataError, load_table
from tools.core.paths import DATA, Run

RUN = "m/s/v"
BAD = b"\xff\xfe"  # a byte pair that is never UTF-8 in the middle of a line


# ------------------------------------------------------------------------------------------- helpers
def snapshot(*roots: Path) -> dict[str, str]:
    """{path: sha256 | link target | 'dir'} of everything under the roots (symlinks not followed)."""
    out = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                p = Path(dirpath) / name
                if p.is_symlink():
                    out[str(p)] = "-> " + os.readlink(p)
                elif p.is_dir():
                    out[str(p)] = "dir"
                else:
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_main(module: str, argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = importlib.import_module(module).main([str(a) for a in argv])
    except SystemExit as e:  # argparse refuses with exit status 2
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out + out.err


def preds(d: Path, rows: list | bytes, testset: str = "t") -> None:
    p = Run.parse(RUN).predictions(testset, "greedy")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(rows if isinstance(rows, bytes) else "".join(json.dumps(r) + "\n" for r in rows).encode())


def pred_row(i: int = 0, **kw) -> dict:
    row = {"id": f"q{i}", "instruction": f"Explain {i}.", "input": "", "answer": f"Answer {i}."}
    row |= {"reference": f"Reference {i}.", "decoding": "greedy", "new_tokens": 3, "truncated": False}
    return row | kw


def adapter_run(name: str, truncate: bool) -> None:
    """A finished-looking adapter run whose weights file is cut short (a copy that stopped)."""
    out = Run.parse(name).output_dir
    out.mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    blob = len(header).to_bytes(8, "little") + header + b"\0" * 16
    (out / "adapter_model.safetensors").write_bytes(blob[:-7] if truncate else blob)
    (out / "adapter_config.json").write_text(json.dumps({"r": 4, "base_model_name_or_path": "models/x"}))
    (out / "run.json").write_text(json.dumps({"status": "finished", "template": "smollm2"}))
    (out / "DONE").write_text("x\n")


def study(d: Path, text: str) -> Path:
    (d / "studies").mkdir(exist_ok=True)
    (d / "studies" / "evil.yaml").write_text(text)
    return d / "studies"


STUDY_OK = "question: q\nscientific: [lora_rank]\nvariants:\n  r4: {lora_rank: 4}\n"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------- setups
def w(d: Path, name: str, content) -> Path:
    p = d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


POOL = [
    {"instruction": f"Task {i}?", "input": "", "output": f"Answer number {i} " * (i + 1), "score": i % 5}
    for i in range(8)
]
JUDGE = ["--run", RUN, "--testset", "t", "--decoding", "greedy"]
API = ["--base-url", "http://127.0.0.1:9/v1", "--model", "judge-x", "--max-retries", "0"]


def judge_cache(rows: list | bytes) -> None:
    from tools.judge.cache import cache_path

    p = cache_path("judge-x@127.0.0.1:9")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(rows if isinstance(rows, bytes) else "".join(json.dumps(r) + "\n" for r in rows).encode())


# Each case: (module, setup(d) -> argv, exit status, substrings the message must hold).
CASES = {
    # -------- tools.data: names that would write outside data/, pools that would mislead
    "data-name-escapes": (
        "tools.data.cli",
        lambda d: ["--source", w(d, "pool.json", POOL), "--n", 3, "--name", "../../x", "--no-plot"],
        2,
        ["--name", "../../x"],
    ),
    "data-eval-name-escapes": (
        "tools.data.cli",
        lambda d: ["--eval", w(d, "ev.json", [{"instruction": "q"}]), "--eval-name", "../../x"],
        2,
        ["--eval-name", "../../x"],
    ),
    "data-eval-file-stem-unsafe": (
        "tools.data.cli",
        lambda d: ["--eval", w(d, "my set$.json", [{"instruction": "q"}])],
        2,
        ["my set$", "--eval-name"],
    ),
    "data-near-dup-out-of-range": (
        "tools.data.cli",
        lambda d: ["--source", w(d, "pool.json", POOL), "--n", 3, "--near-dup", 7],
        2,
        ["--near-dup", "outside (0, 1]"],
    ),
    "data-prompt-only-pool": (
        "tools.data.cli",
        lambda d: ["--source", w(d, "prompts.json", [{"instruction": f"q{i}"} for i in range(5)]), "--n", 2],
        2,
        ["prompts.json", "row 0", "prompt-only"],
    ),
    "data-object-not-list": (
        "tools.data.cli",
        lambda d: ["--source", w(d, "obj.json", {"instruction": "q", "output": "a"}), "--n", 1],
        2,
        ["obj.json", "found an object", "instruction"],
    ),
    "data-non-utf8-jsonl": (
        "tools.data.cli",
        lambda d: [
            "--source",
            w(
                d,
                "p.jsonl",
                b'{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n'
                b'{"instruction": "caf\xe9", "output": "x"}\n',
            ),
            "--n",
            1,
        ],
        2,
        ["p.jsonl", "line 3", "not UTF-8"],
    ),
    "data-non-utf8-json-array": (
        "tools.data.cli",
        lambda d: [
            "--source",
            w(d, "p.json", b'[\n{"instruction": "a",\n "output": "b' + BAD + b'"}]'),
            "--n",
            1,
        ],
        2,
        ["p.json", "line 3", "not UTF-8"],
    ),
    "data-utf16": (
        "tools.data.cli",
        lambda d: ["--source", w(d, "u16.json", json.dumps(POOL).encode("utf-16")), "--n", 1],
        2,
        ["u16.json", "UTF-16"],
    ),
    "data-instances-with-bad-field": (
        "tools.data.cli",
        lambda d: [
            "--source",
            w(
                d,
                "si.jsonl",
                json.dumps({"instruction": "q", "instances": [{"input": "", "output": 3}]}) + "\n",
            ),
            "--n",
            1,
        ],
        2,
        ["si.jsonl", "row 0", "instances[0].output"],
    ),
    "data-registry-is-a-folder": (
        "tools.data.cli",
        lambda d: [
            "--source",
            w(d, "pool.json", POOL),
            "--n",
            3,
            "--no-plot",
            "--dataset-dir",
            mkdir(d / "reg" / "dataset_info.json").parent,
        ],
        2,
        ["dataset_info.json", "not a file"],
    ),
    "data-registry-non-utf8": (
        "tools.data.cli",
        lambda d: [
            "--source",
            w(d, "pool.json", POOL),
            "--n",
            3,
            "--no-plot",
            "--dataset-dir",
            w(d, "reg2/dataset_info.json", b'{\n "x": {"file_name": "\xe9.json"}\n}').parent,
        ],
        2,
        ["dataset_info.json", "line 2", "not UTF-8"],
    ),
    # -------- tools.train.configs / sweep: specs
    "configs-variant-escapes": (
        "tools.train.configs",
        lambda d: ["render", "--study", "evil", "--model", "smollm2_135m", "--out", d / "cfg"],
        2,
        ["evil.yaml", "variants", "../../x"],
    ),
    "configs-duplicate-key": (
        "tools.train.configs",
        lambda d: ["render", "--study", "evil", "--model", "smollm2_135m", "--out", d / "cfg"],
        2,
        ["evil.yaml", "duplicate key 'r4'", "line 5"],
    ),
    "sweep-duplicate-key": (
        "tools.flows.sweep",
        lambda d: ["--study", "evil", "--configs-dir", d / "cfg", "--dataset-dir", d / "data", "--no-eval"],
        2,
        ["evil.yaml", "duplicate key 'r4'"],
    ),
    # -------- tools.eval
    "generate-run-escapes": (
        "tools.eval.generate",
        lambda d: ["--run", "m/../x", "--testset", "t"],
        2,
        ["'..'"],
    ),
    "metrics-answer-not-string": (
        "tools.eval.metrics",
        lambda d: (
            preds(d, [pred_row(0), pred_row(1, answer=["a"])])
            or ["--run", RUN, "--testset", "t", "--no-ppl", "--no-similarity"]
        ),
        2,
        ["predictions.jsonl", "row 2", "'answer'", "list"],
    ),
    "metrics-reference-not-string": (
        "tools.eval.metrics",
        lambda d: preds(d, [pred_row(0, reference=5)]) or ["--run", RUN, "--testset", "t", "--no-ppl"],
        2,
        ["predictions.jsonl", "row 1", "'reference'", "int"],
    ),
    "metrics-non-utf8": (
        "tools.eval.metrics",
        lambda d: (
            preds(d, json.dumps(pred_row(0)).encode() + b"\n" + b'{"id": "q1", "answer": "\xe9"}\n')
            or ["--run", RUN, "--testset", "t", "--no-ppl"]
        ),
        2,
        ["predictions.jsonl", "line 2", "not UTF-8"],
    ),
    # -------- tools.judge
    "judge-reference-not-string": (
        "tools.judge.cli",
        lambda d: preds(d, [pred_row(0), pred_row(1, reference={"text": "r"})]) or [*JUDGE, "--dry-run"],
        2,
        ["predictions.jsonl", "row 2", "'reference'", "dict"],
    ),
    "judge-predictions-non-utf8": (
        "tools.judge.cli",
        lambda d: (
            preds(
                d,
                json.dumps(pred_row(0)).encode()
                + b"\n"
                + json.dumps(pred_row(1)).encode()[:-2]
                + BAD
                + b'"}\n',
            )
            or [*JUDGE, "--dry-run"]
        ),
        2,
        ["predictions.jsonl", "line 2", "not UTF-8"],
    ),
    "judge-cache-not-an-object": (
        "tools.judge.cli",
        lambda d: preds(d, [pred_row(0)]) or judge_cache([[1, 2]]) or [*JUDGE, *API],
        2,
        ["judge-x", "line 1", "not an object"],
    ),
    "judge-cache-no-key": (
        "tools.judge.cli",
        lambda d: preds(d, [pred_row(0)]) or judge_cache([{"score_answer": 5}]) or [*JUDGE, *API],
        2,
        ["line 1", "'key'"],
    ),
    "judge-cache-score-99": (
        "tools.judge.cli",
        lambda d: (
            preds(d, [pred_row(0)]) or judge_cache([{"key": "k", "score_answer": 99}]) or [*JUDGE, *API]
        ),
        2,
        ["line 1", "'score_answer' = 99", "1-10"],
    ),
    "judge-cache-non-utf8": (
        "tools.judge.cli",
        lambda d: (
            preds(d, [pred_row(0)]) or judge_cache(b'{"key": "k", "raw": "' + BAD + b'"}\n') or [*JUDGE, *API]
        ),
        2,
        ["judge-x", "line 1", "not UTF-8"],
    ),
    "judge-protocol-unknown-placeholder": (
        "tools.judge.cli",
        lambda d: (
            preds(d, [pred_row(0)])
            or [*JUDGE, "--dry-run", "--protocol", w(d, "p.yaml", PROTO.replace("}'", "} {colour}'"))]
        ),
        2,
        ["p.yaml", "'prompt'", "{colour}"],
    ),
    "judge-protocol-duplicate-key": (
        "tools.judge.cli",
        lambda d: (
            preds(d, [pred_row(0)])
            or [*JUDGE, "--dry-run", "--protocol", w(d, "p.yaml", PROTO + "version: 2\n")]
        ),
        2,
        ["p.yaml", "duplicate key 'version'"],
    ),
    "judge-serve-local-not-a-model": (
        "tools.judge.cli",
        lambda d: preds(d, [pred_row(0)]) or [*JUDGE, "--serve-local", mkdir(d / "empty")],
        2,
        ["--serve-local", "empty", "no config.json"],
    ),
    "judge-cost-limit-hint": (
        "tools.judge.cli",
        lambda d: (
            preds(d, [pred_row(i) for i in range(20)])
            or [*JUDGE, "--base-url", "https://api.openai.com/v1", "--max-cost", "0"]
        ),
        2,
        ["above the limit", "--max-cost 0.01"],
    ),
    # -------- tools.export, tools.export.merge, tools.report
    "export-truncated-adapter": (
        "tools.export.export",
        lambda d: adapter_run(RUN, True) or ["--run", RUN],
        2,
        ["adapter_model.safetensors", "truncated"],
    ),
    "merge-truncated-adapter": (
        "tools.export.merge",
        lambda d: (
            adapter_run("m/s/w", False)
            or adapter_run(RUN, True)
            or ["--method", "linear", "--runs", "m/s/w", RUN, "--name", "both"]
        ),
        2,
        ["m/s/v", "adapter_model.safetensors", "truncated"],
    ),
    "merge-name-escapes": (
        "tools.export.merge",
        lambda d: ["--method", "linear", "--runs", "m/s/a", "m/s/b", "--name", "../x"],
        2,
        ["../x"],
    ),
    "report-study-escapes": (
        "tools.report.build",
        lambda d: ["--study", "../../x"],
        2,
        ["--study", "../../x"],
    ),
    # -------- numbers and names checked by the argument layer before anything is read or spent (issue 29)
    "merge-weights-nan": (
        "tools.export.merge",
        lambda d: ["--method", "linear", "--runs", "m/s/a", "m/s/b", "--name", "x", "--weights", "nan", "1"],
        2,
        ["--weights nan", "finite"],
    ),
    "judge-max-cost-nan": (
        "tools.judge.cli",
        lambda d: preds(d, [pred_row(0)]) or [*JUDGE, *API, "--max-cost", "nan"],
        2,
        ["--max-cost nan", "finite"],
    ),
    "judge-timeout-negative": (
        "tools.judge.cli",
        lambda d: preds(d, [pred_row(0)]) or [*JUDGE, *API, "--timeout", "-5"],
        2,
        ["--timeout -5", "positive"],
    ),
    "tiny-no-layers": (
        "tools.models.tiny",
        lambda d: ["--layers", "0", "--out", d / "tiny"],
        2,
        ["--layers 0", "at least 1"],
    ),
    "length-no-resamples": (
        "tools.judge.length",
        lambda d: ["--study", "rank", "--n-boot", "0"],
        2,
        ["--n-boot 0", "at least"],
    ),
    "refine-limit-negative": (
        "tools.refine.refine",
        lambda d: ["--dataset", "demo_eval", "--limit", "-1", "--dry-run"],
        2,
        ["--limit -1", "at least 1"],
    ),
    "decoding-parse-unknown": (
        "tools.eval.decoding",
        lambda d: ["--parse", "nope"],
        2,
        ["--parse 'nope'", "t<T>_p<P>"],
    ),
    "decoding-grid-unknown": (
        "tools.eval.decoding",
        lambda d: ["--grid", "nope"],
        2,
        ["--grid 'nope'", "hw5"],
    ),
    "runinfo-dataset-unknown": (
        "tools.core.runinfo",
        lambda d: ["--dataset", "nope"],
        2,
        ["--dataset 'nope'", "not registered", "demo_eval"],
    ),
    "bench-only-unknown": (
        "tools.bench.__main__",
        lambda d: ["--only", "nope"],
        2,
        ["--only 'nope'", "data, generate"],
    ),
    "report-workers-zero": (
        "tools.report.build",
        lambda d: ["--study", "rank", "--workers", "0"],
        2,
        ["--workers 0", "at least 1"],
    ),
    "report-model-escapes": (
        "tools.report.build",
        lambda d: ["--study", "rank", "--model", "../y"],
        2,
        ["--model '../y'"],
    ),
    "generate-no-new-tokens": (
        "tools.eval.generate",
        lambda d: ["--run", RUN, "--testset", "t", "--max-new-tokens", "0"],
        2,
        ["--max-new-tokens 0", "at least 1"],
    ),
    "generate-limit-negative": (
        "tools.eval.generate",
        lambda d: ["--run", RUN, "--testset", "t", "--limit", "-1", "--seed", "-1"],
        2,
        ["--limit -1", "--seed -1"],
    ),
    "study-unknown": (
        "tools.eval.study",
        lambda d: [
            "--study",
            "nope",
            "--judge",
            "none",
            "--no-metrics",
            "--limit",
            "1",
            "--max-new-tokens",
            "1",
        ],
        2,
        ["--study 'nope'", "unknown study", "rank"],
    ),
    "study-heldout-n-negative": (
        "tools.eval.study",
        lambda d: ["--runs", RUN, "--heldout", "alpaca_top100", "--heldout-n", "-5"],
        2,
        ["--heldout-n -5"],
    ),
    "metrics-heldout-n-negative": (
        "tools.eval.metrics",
        lambda d: [
            "--run",
            RUN,
            "--testset",
            "t",
            "--heldout",
            "alpaca_top100",
            "--heldout-n",
            "-1",
            "--no-ppl",
        ],
        2,
        ["--heldout-n -1"],
    ),
    "configs-set-out-of-range": (
        "tools.train.configs",
        lambda d: (
            ["render", "--study", "rank", "--model", "smollm2_135m", "--only", "r8", "--out", d / "cfg"]
            + ["--set", "lora_rank=-8", "--set", "lora_dropout=1.5", "--set", "learning_rate=.nan"]
        ),
        2,
        ["--set lora_rank=-8: must be at least 1", "--set lora_dropout=1.5", "--set learning_rate=nan"],
    ),
    "preflight-set-negative-alpha": (
        "tools.flows.preflight",
        lambda d: ["--study", "rank", "--model", "smollm2_135m", "--only", "r8", "--set", "lora_alpha=-16"],
        2,
        ["--set lora_alpha=-16", "above 0"],
    ),
    "data-ifd-candidates-negative": (
        "tools.data.cli",
        lambda d: ["--source", w(d, "pool.json", POOL), "--n", 3, "--ifd-candidates", -3, "--no-plot"],
        2,
        ["--ifd-candidates -3", "at least 1"],
    ),
    "data-length-window-not-digits": (
        "tools.data.cli",
        lambda d: ["--source", w(d, "pool.json", POOL), "--n", 3, "--length-window", "\u00b2,5", "--no-plot"],
        2,
        ["--length-window '\u00b2'", "not an integer"],
    ),
    "data-seed-negative": (
        "tools.data.cli",
        lambda d: ["--source", w(d, "pool.json", POOL), "--n", 3, "--seed", -1, "--no-plot"],
        2,
        ["--seed -1", "must not be negative"],
    ),
    "mix-heldout-n-negative": (
        "tools.data.mix",
        lambda d: [
            "--dataset",
            "alpaca_top100",
            "--general",
            "demo",
            "--heldout-n",
            -4,
            "--dataset-dir",
            d / "data",
        ],
        2,
        ["--heldout-n -4", "at least 1"],
    ),
    "fetch-timeout-negative": (
        "tools.data.fetch",
        lambda d: ["--timeout", "-5", "--offline", "--cache", d / "cache"],
        2,
        ["--timeout -5", "positive"],
    ),
    "recovery-eval-no-window": (
        "tools.eval.recovery",
        lambda d: ["--model", d / "m", "--out", d / "o.json", "--seq-len", "0", "--new-tokens", "-1"],
        2,
        ["--seq-len 0", "--new-tokens -1"],
    ),
}

PROTO = (
    "name: p\nversion: 1\nkind: pairwise\nsystem: s\nmax_tokens: 8\nexpected_completion_tokens: 4\n"
    "prompt: '{question} {answer_1} {answer_2}'\n"
)
STUDIES = {
    "configs-variant-escapes": STUDY_OK.replace("r4:", "../../x:"),
    "configs-duplicate-key": STUDY_OK + "  r4: {lora_rank: 8}\n",
    "sweep-duplicate-key": STUDY_OK + "  r4: {lora_rank: 8}\n",
}


def mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_by_name_and_writes_nothing(case, tmp_path, out_dir, monkeypatch, capsys):
    module, setup, want_rc, must = CASES[case]
    d = mkdir(tmp_path / "in")
    monkeypatch.chdir(d)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    if case in STUDIES:
        monkeypatch.setattr("tools.train.configs.STUDIES", study(d, STUDIES[case]))
    argv = setup(d)
    if module == "tools.data.cli" and "--dataset-dir" not in argv:
        argv += ["--dataset-dir", mkdir(d / "data")]
    before = snapshot(tmp_path, DATA)
    rc, msg = run_main(module, argv, capsys)
    assert rc == want_rc, msg
    for s in must:
        assert s in msg, f"{s!r} not in: {msg}"
    assert "Traceback" not in msg
    assert snapshot(tmp_path, DATA) == before, "bad input changed files"


# ------------------------------------------------------------------------------------------- judge
def test_judge_exits_1_when_every_call_failed(tmp_path, out_dir, monkeypatch, capsys):
    """Endpoint down: nothing is scored, so the run must not look like a success."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    preds(tmp_path, [pred_row(i) for i in range(3)])
    url = f"http://127.0.0.1:{closed_port()}/v1"
    args = [*JUDGE, "--base-url", url, "--model", "nobody", "--max-retries", "0", "--timeout", "5"]
    rc, msg = run_main("tools.judge.cli", args, capsys)
    assert rc == 1 and "3 judgment(s) failed" in msg and "n=0 of 3" in msg, msg
    scores = json.loads(Run.parse(RUN).scores("t", "greedy").read_text())
    assert scores["n"] == 0 and scores["n_failed"] == 3 and scores["mean"] is None


# ------------------------------------------------------------------------------------------- shapes
SHAPES = {
    # Self-Instruct's seed tasks: the input/output pairs sit in `instances`
    "self_instruct.jsonl": (
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {
                    "id": "seed_task_0",
                    "name": "a",
                    "instruction": "Give advice.",
                    "instances": [{"input": "", "output": "Sleep well."}],
                    "is_classification": False,
                },
                {
                    "id": "seed_task_1",
                    "name": "b",
                    "instruction": "Sort them.",
                    "instances": [{"input": "3 1 2", "output": "1 2 3"}, {"input": "b a", "output": "a b"}],
                },
            ]
        ),
        [
            ("seed_task_0", "Give advice.", "", "Sleep well."),
            ("seed_task_1-0", "Sort them.", "3 1 2", "1 2 3"),
            ("seed_task_1-1", "Sort them.", "b a", "a b"),
        ],
    ),
    # LIMA: conversations as plain strings
    "lima.jsonl": (
        json.dumps({"conversations": ["What is 2+2?", "4."], "source": "stackexchange"}) + "\n",
        [("lima-00000", "What is 2+2?", "", "4.")],
    ),
    # Vicuna-80 / MT-Bench: question_id, `text` or `turns`, no answers (an evaluation set)
    "vicuna.jsonl": (
        json.dumps({"question_id": 7, "text": "Plan a trip.", "category": "generic"})
        + "\n"
        + json.dumps({"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Shorter."]})
        + "\n",
        [("7", "Plan a trip.", "", ""), ("81", "Write a poem.", "", "")],
    ),
    # Dolly: instruction, context, response
    "dolly.json": (
        json.dumps({"data": [{"instruction": "Summarise.", "context": "Long text.", "response": "Short."}]}),
        [("dolly-00000", "Summarise.", "Long text.", "Short.")],
    ),
    # a Windows editor's UTF-8 BOM, ids under `idx`
    "bom.jsonl": (
        "\ufeff" + json.dumps({"idx": 3, "instruction": "Caf\u00e9?", "output": "Oui."}) + "\n",
        [("3", "Caf\u00e9?", "", "Oui.")],
    ),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_public_shapes_read_correctly(name, tmp_path):
    text, want = SHAPES[name]
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    rows = load_table(p).rows
    assert [(r["id"], r["instruction"], r["input"], r["output"]) for r in rows] == want


def test_mixed_encodings_are_named_by_row(tmp_path):
    """A pool pasted together from a UTF-8 and a Latin-1 file: the first Latin-1 row is named."""
    p = tmp_path / "mixed.jsonl"
    p.write_bytes(
        json.dumps({"instruction": "Caf\u00e9?", "output": "Oui."}, ensure_ascii=False).encode()
        + b"\n"
        + '{"instruction": "Na\u00efve?", "output": "Yes."}\n'.encode("latin-1")
    )
    with pytest.raises(DataError, match=r"mixed\.jsonl: line 2 column \d+: byte 0xef is not UTF-8"):
        load_table(p)


def test_evaluation_duplicates_are_reported(tmp_path, capsys):
    ev = w(tmp_path, "ev.json", [{"question_id": 1, "text": "Q?"}, {"question_id": 2, "text": "Q?"}])
    rc, msg = run_main("tools.data.cli", ["--eval", ev, "--dataset-dir", tmp_path / "data"], capsys)
    assert rc == 0, msg
    assert "1 prompts" in msg and "1 duplicate prompt(s) dropped, rows 1 (= 1)" in msg, msg
    # the registered set is what the message says: the first of the two, the duplicate not written
    written = json.loads((tmp_path / "data" / "generated" / "ev" / "ev.json").read_text())
    assert [(r["id"], r["instruction"]) for r in written] == [("1", "Q?")], written


def test_user_entries_keep_their_bytes(tmp_path, capsys):
    """dataset_info.json is spliced: a user's entries (number spellings, escapes, a repeated key) stay."""
    user = '{\n  "mine": {"file_name": "u.json", "n": 1.50, "s": "caf\\u00e9"},\n  "mine": {"file_name": "v.json"}\n}\n'
    data = mkdir(tmp_path / "data")
    (data / "dataset_info.json").write_text(user)
    pool = w(tmp_path, "pool.json", POOL)
    rc, msg = run_main(
        "tools.data.cli", ["--source", pool, "--n", 4, "--no-plot", "--dataset-dir", data], capsys
    )
    assert rc == 0, msg
    text = (data / "dataset_info.json").read_text()
    assert text.startswith(user[: user.rindex("}")].rstrip() + ",\n") and '"alpaca_top4_easy"' in text
    shutil.rmtree(data / "generated")


def test_cached_out_of_range_score_is_kept_only_when_the_official_parser_flagged_it(tmp_path):
    from tools.judge.cache import check_row

    flagged = {"key": "k", "score_answer": 11.0, "quirk": "score out of 1-10"}
    assert check_row(flagged, tmp_path / "c.jsonl", 1) is flagged
    with pytest.raises(ValueError, match=r"c\.jsonl: line 4: field 'score_answer' = 11\.0 is outside"):
        check_row({"key": "k", "score_answer": 11.0}, tmp_path / "c.jsonl", 4)
