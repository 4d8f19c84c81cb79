"""Every shell command in a code block of README.md or docs/ is either run by a test as written, or listed
below with the reason no test runs it.

A command counts as run by a test when its exact text is a quoted string in a file under tests/ (this file
excepted): `tests/docs/test_commands_run.py` runs the cheap ones exactly so. The allow-list is for what a
test machine cannot do (a GPU, a paid API key, a gated download, minutes of CPU) and names, where one
exists, the test that covers the same path another way. Keep it small and honest: prefer documenting a
command a test runs, or running a cheap one in test_commands_run.py, to adding an entry here.
"""

from __future__ import annotations

import re
from pathlib import Path

from tools.core.paths import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
SHELL = ("", "bash", "sh", "shell", "console")
# What a documented command starts with, after any leading VAR=value assignments.
PREFIXES = (
    "make ",
    "python -m ",
    "python3 -m ",
    ".venv/bin/",
    "llamafactory-cli ",
    "hf ",
    "mkdocs ",
    "pytest ",
)
ENV_PREFIX = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S+\s+)*")

GPU = "GPU-only: the llama2_7b profile needs a CUDA GPU (bf16) and the gated LLaMA-2 weights"
TRAINED = "needs a finished LLaMA-2-7B run, i.e. a GPU sweep first"
KEY = "calls GPT-4o-mini: needs OPENAI_API_KEY and spends money"
DEMO_RUN = "needs the run `make demo` chose (its trained runs: about 50 minutes on 2 CPU cores)"
GGUF_SOURCE = (
    "tests/eval/test_gguf_source.py serves a GGUF in llama-server, generates and judges it the same way"
)

ALLOWED = {
    # the two commands a fresh machine needs
    "make test": "runs this suite itself",
    "make tune STUDY=lr TRIALS=6 MODEL=smollm2_135m": "six trials on the embedded model: many minutes of CPU; "
    "tests/flows/test_tune.py runs the same search (sampler, pruning, resume) on the tiny model",
    "python -m tools.flows.tune --study lr --model smollm2_135m --trials 6 [--set key=value ...]": "the same "
    "search as make tune (tests/flows/test_tune.py on the tiny model)",
    "make tune STUDY=lr TRIALS=6 MODEL=smollm2_135m RUNNER=ray PARALLEL=2": "six trials on the embedded model: "
    "many minutes of CPU; tests/flows/test_tune_ray.py checks make passes RUNNER and PARALLEL and runs the "
    "Ray search (parallel trials, placement by the bill, pruning) on a real cluster with the tiny model",
    "RAY_ADDRESS=auto SMALLDATA_OUT=/mnt/lab/out SMALLDATA_SHARED_SAVES=/mnt/lab/out make tune STUDY=lr "
    "TRIALS=12 MODEL=smollm2_135m RUNNER=ray": "a lab's multi-node cluster with shared storage; "
    "tests/flows/test_tune_ray.py runs the Ray search on a real 3-node cluster on this machine",
    "python -m tools.flows.tune_bench --study lr --model smollm2_135m --trials 6": "the real search-vs-grid "
    "benchmark: 3 grid runs and 6 trials on the embedded model, beyond a test's CPU time; "
    "tests/flows/test_tune.py runs its quick form as documented",
    "RAY_ADDRESS=auto SMALLDATA_OUT=/mnt/lab/out SMALLDATA_SHARED_SAVES=/mnt/lab/out "
    "MLFLOW_TRACKING_URI=http://HEAD_IP:5000 make sweep STUDY=rank MODEL=llama2_7b RUNNER=ray TRACK=mlflow": "a lab's "
    "multi-node GPU cluster with shared storage; tests/train/test_ray_cluster.py runs a real 3-node Ray cluster "
    "and tests/report/test_tracking.py a real MLflow server on this machine",
    "python -m tools.flows.tune_bench --study lr --model smollm2_135m --trials 6 --budget cpu": "the measured "
    "search-vs-grid benchmark at the CPU budget (9 runs on the embedded model, 6 minutes here with "
    "OMP_NUM_THREADS=1; `make bench` runs it); tests/bench/test_bench_quick.py runs its quick form",
    'make tune STUDY=lr TRIALS=6 MODEL=smollm2_135m TUNE_ARGS="--set train_rows=8 --set max_samples=8 '
    "--set cutoff_len=64 --set gradient_accumulation_steps=1 --set warmup_steps=0 "
    '--set disable_gradient_checkpointing=true"': "six trials on the embedded model (minutes of CPU; run by "
    "hand from a fresh clone, docs/tune.md); tests/flows/test_tune.py checks make passes these overrides and "
    "what they render to",
    "make test-fast": "runs the fast part of this suite",
    '.venv/bin/python -m pytest -m "not slow"': "runs the fast part of this suite (make test-fast)",
    ".venv/bin/python -m pytest tests/export/test_merge.py": "runs one file of this suite, which runs in it",
    ".venv/bin/python -m pytest tests/export/test_merge.py -k ties": "runs part of one file of this suite, "
    "which runs in it",
    "make demo": "about 8 minutes on 2 CPU cores; tests/data/test_readme_real_data.py runs it through make "
    "(DATA=hw5, the tiny model) and tests/report/test_demo_flow.py its flow",
    "make demo DATA=hw5": "needs HW5's files (../shared/data or the fetch cache) and minutes of CPU; "
    "tests/data/test_readme_real_data.py runs it on the tiny model",
    "make recovery-demo": "about 4.5 minutes on 2 idle CPU cores; tests/train/test_recovery_e2e.py runs "
    "its steps on the tiny model",
    "make bench": "a benchmark: many minutes of CPU, make demo from clean included",
    "make bench-gpu": GPU,
    # the gated model and the GPU stack
    "make setup-gpu": "installs packages from the network; tests/train/test_qlora_cpu.py checks the recipe "
    "(make -n) and the pins",
    "hf auth login": "interactive, needs a Hugging Face account; test_commands_run.py checks the pinned "
    "huggingface_hub has the command",
    "hf download meta-llama/Llama-2-7b-hf": "gated: needs the accepted licence, a token and 13 GB of "
    "network; test_commands_run.py checks the pinned huggingface_hub has the command",
    "llamafactory-cli train experiments/rank/llama2_7b_lora_sft_r16.yaml": GPU,
    'make data SOURCE=hw5 DATA_ARGS="--all-strategies --eval hw5"': "needs HW5's files and minutes of "
    "IFD on a CPU; tests/data/test_readme_real_data.py runs it through make with a tmp dataset dir",
    'make data SOURCE=hw5 DATA_ARGS="--eval hw5"': "needs HW5's files; tests/data/test_fetch.py runs it "
    "through make after a fetch from a loopback server",
    'make fetch-hw5 ARGS="--pool"': "downloads HW5's 52k pool from the Hugging Face hub",
    "make sweep-data MODEL=llama2_7b": GPU,
    "make sweep-rank MODEL=llama2_7b": GPU,
    "make sweep-method MODEL=llama2_7b": GPU,
    "make sweep STUDY=recipes MODEL=llama2_7b": GPU,
    'make sweep STUDY=recovery MODEL=llama2_7b SWEEP_ARGS="--set pruned_model=results/x/safe"': GPU,
    "make sweep-improve": "trains and evaluates three runs: many minutes of CPU (tests/train/test_sweep.py "
    "covers the sweep)",
    # what needs a trained LLaMA-2-7B run
    "make report STUDY=rank": TRAINED,
    "make eval RUN=llama2_7b/rank/r16 TESTSET=hw5_test": TRAINED,
    "python -m tools.eval.generate --run llama2_7b/rank/r16 --testset hw5_test --grid hw5": TRAINED,
    "make judge RUN=llama2_7b/rank/r16 TESTSET=hw5_test JUDGE_ARGS=--dry-run": TRAINED,
    "make submit RUN=llama2_7b/rank/r16": TRAINED,
    "python -m tools.judge.length --study rank --testset hw5_test": f"{TRAINED}, judged",
    "make export RUN=llama2_7b/rank/r16": TRAINED,
    'make merge ARGS="--method ties --runs llama2_7b/rank/r16 llama2_7b/lr/lr2e-4 --name best"': TRAINED,
    "python -m tools.eval.recovery --run llama2_7b/recovery/alpaca_cleaned --tasks local standard": TRAINED,
    "python -m tools.export.pruned --run llama2_7b/recovery/alpaca_cleaned": TRAINED,
    "python -m plugins.launchers.pruned convert results/x/pruned_model.bin results/x/safe --trust-pickle": "needs "
    "LLM-Pruner's output file; tests/plugins/test_pruned.py covers the pickle opt-in and the safe format",
    # the demo's chosen run as GGUF (docs/gguf.md)
    "make gguf RUN=smollm2_135m/demo/stage3_all@epoch1": f"{DEMO_RUN}; tests/export/test_gguf.py runs the same "
    "export (merge, f16 and q8_0, Modelfile, the llama-server check) on the tiny and embedded models",
    "python -m tools.eval.generate --model-path gguf:exports/smollm2_135m/demo/stage3_all@epoch1/gguf/"
    "model-q8_0.gguf --testset demo_dev": f"{DEMO_RUN} and its GGUF; {GGUF_SOURCE}",
    "python -m tools.judge --run smollm2_135m/demo/stage3_all.gguf-q8_0@epoch1 --testset demo_dev": f"{DEMO_RUN} "
    f"and its GGUF's answers; {GGUF_SOURCE}",
    # the paid judge and the paid rewrite
    "make judge RUN=llama2_7b/rank/r16 TESTSET=hw5_test": f"{KEY}; {TRAINED}",
    "python -m tools.judge --run llama2_7b/rank/r16 --testset hw5_test --decoding greedy --compare "
    "llama2_7b/rank/r8": f"{KEY}; {TRAINED}",
    "make refine DATASET=alpaca_top100": KEY,
    # servers that run until stopped
    "make webui": "a server until Ctrl-C; tests/data/test_webui.py starts the same web UI on a free port",
    "make tensorboard STUDY=rank": "a server until Ctrl-C, on a trained study; tests/report/test_report_e2e.py "
    "serves a report's HParams view",
}


def documented_commands(text: str) -> list[str]:
    """The shell commands of a Markdown text's code blocks: continuation lines joined, trailing comments cut."""
    found = []
    for lang, body in FENCE.findall(text):
        if lang not in SHELL:
            continue
        for line in re.sub(r"\s*\\\n\s*", " ", body).splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip()).strip().removeprefix("$ ")
            if line and ENV_PREFIX.sub("", line).startswith(PREFIXES):
                found.append(line)
    return found


def all_documented() -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for path in DOCUMENTS:
        for command in documented_commands(path.read_text()):
            where.setdefault(command, []).append(path.relative_to(ROOT).as_posix())
    return where


def read_tests() -> str:
    me = Path(__file__).resolve()
    return "\n".join(p.read_text() for p in sorted((ROOT / "tests").rglob("*.py")) if p.resolve() != me)


def run_by_a_test(command: str, texts: str) -> bool:
    return f'"{command}"' in texts or f"'{command}'" in texts


def test_the_extraction_finds_the_readmes_commands():
    readme = documented_commands((ROOT / "README.md").read_text())
    assert "make demo" in readme and "make test" in readme
    sample = (
        "```bash\nmake a X=1   # note\npython -m x \\\n  --y 2\nexport K=v\n```\n```yaml\nmake: no\n```\n"
    )
    assert documented_commands(sample) == ["make a X=1", "python -m x --y 2"]


def test_every_documented_command_is_run_by_a_test_or_allowed_with_a_reason():
    texts = read_tests()
    missing = {
        command: where
        for command, where in all_documented().items()
        if command not in ALLOWED and not run_by_a_test(command, texts)
    }
    assert not missing, (
        "documented commands no test runs as written (run a cheap one in tests/docs/test_commands_run.py, "
        "or document one a test runs, or allow it here with the reason):\n"
        + "\n".join(f"  {c}   ({', '.join(w)})" for c, w in missing.items())
    )


def test_the_allow_list_holds_only_documented_commands_with_reasons():
    documented = all_documented()
    stale = [c for c in ALLOWED if c not in documented]
    assert not stale, f"allowed but no longer documented (remove them): {stale}"
    assert all(reason.strip() for reason in ALLOWED.values())
