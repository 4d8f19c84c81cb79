"""Benchmark: where a study's evaluation spends its wall time, and `make demo` from clean.

Evaluation: `python -m tools.eval.study` as the demo runs it (the embedded SmolLM2-135M, its base run
and five LoRA adapters of the demo's shapes, the demo's 20 prompts, greedy, 128 new tokens, metrics
with perplexity, the offline judge), in a child process into a scratch output folder. The share of
its wall time (interpreter start and imports included) spent in model compute (generate, scoring
and judge forward passes) must be at least 60%. The adapters are PEFT's default initialisation (B = 0:
the base model's answers, at the cost of the unmerged adapter), so no training is needed here.

Demo: `python -m tools.flows.demo` from an empty output folder, timed step by step, against 300 s.

Usage:
    python -m tools.bench.study [--quick] [--no-demo]     (also run by `make bench`; --quick leaves the demo out)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from filelib import run_main
from tools.core.args import command, opt
from tools.core.paths import ROOT, Run
from tools.core.runinfo import command_of
from tools.eval import study_main
from tools.flows.demo import main as demo_main

MODEL = "smollm2_135m"
SHAPES = {"r8": (8, "all-linear"), "r16": (16, "all-linear"), "s1": (8, "all-linear")}
SHAPES |= {"s2": (8, "all-linear"), "s3": (8, "all-linear")}


def make_runs(out: Path, n: int) -> list[str]:
    """n adapter runs of the embedded model under `out` (run.json, adapter, DONE)."""
    from tools.models import BASE_MODEL_DIR, build

    build(BASE_MODEL_DIR)
    names = [Run.base(MODEL).name]
    before = os.environ.get("SMALLDATA_OUT")
    os.environ["SMALLDATA_OUT"] = str(out)  # Run paths follow it; put back below
    try:
        for variant, (rank, target) in list(SHAPES.items())[:n]:
            names.append(_adapter_run(Run(MODEL, "bench", variant), rank, target).name)
    finally:
        if before is None:
            os.environ.pop("SMALLDATA_OUT")
        else:
            os.environ["SMALLDATA_OUT"] = before
    return names


def _adapter_run(run: Run, rank: int, target: str) -> Run:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from filelib import atomic_write_json
    from tools.models import BASE_MODEL_DIR

    model = AutoModelForCausalLM.from_pretrained(BASE_MODEL_DIR)
    get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=target)).save_pretrained(
        run.output_dir
    )
    cfg = json.loads((run.output_dir / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "models/smollm2-135m-instruct"
    atomic_write_json(run.output_dir / "adapter_config.json", cfg)
    info = {"run": run.name, "model_name_or_path": "models/smollm2-135m-instruct", "template": "smollm2"}
    atomic_write_json(run.run_json, {**info, "status": "finished"})
    (run.output_dir / "DONE").write_text("")
    return run


def bench_evaluation(n_adapters: int = 5, limit: int | None = None, new_tokens: int = 128) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        names = make_runs(out, n_adapters)
        timings = out / "timings.json"
        cmd = [*command_of(study_main), "--runs", *names, "--testset", "demo_eval"]
        cmd += ["--max-new-tokens", str(new_tokens), "--judge", "offline", "--timings", str(timings)]
        cmd += ["--limit", str(limit)] if limit else []
        env = dict(
            os.environ, SMALLDATA_OUT=str(out), LLAMAFACTORY_VERBOSITY="WARN", TRANSFORMERS_VERBOSITY="error"
        )
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"tools.eval.study failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        t = json.loads(timings.read_text())
    return [
        f"study evaluation, {t['runs']} runs (base + {t['runs'] - 1} adapters) x {t['prompts']} prompts, greedy "
        f"<= {new_tokens} tokens, metrics + offline judge, one process ({t['dtype']}): {wall:.0f} s wall",
        f"  model compute {t['compute_s']:.0f} s (generate + scoring {t['generate_and_score_s']:.0f} s, judge "
        f"{t['judge_forward_s']:.0f} s), model loads {t['load_s']:.1f} s, the rest imports and I/O",
        f"  compute share {t['compute_share']:.0%} of the process's wall time (target >= 60%)",
    ]


STEP = re.compile(r"^\s+(.+): done in (\d+) s")


def bench_demo() -> list[str]:
    """`python -m tools.flows.demo` from an empty output folder; the demo's own step times."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, SMALLDATA_OUT=tmp)
        env.pop("OPENAI_API_KEY", None)
        t0 = time.time()
        proc = subprocess.run(command_of(demo_main), cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"tools.flows.demo failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    steps = [m.groups() for m in map(STEP.match, proc.stdout.splitlines()) if m]
    load = os.getloadavg()[0]
    return [
        f"make demo from clean: {wall:.0f} s = x{wall / 300:.2f} of the 5-minute target (load average now {load:.1f} "
        f"on {os.cpu_count()} cores)",
        "  steps: " + ", ".join(f"{name} {secs} s" for name, secs in steps),
    ]


def bench(quick: bool = False, demo: bool | None = None) -> list[str]:
    """The evaluation split; and, in a full run (not --quick), `make demo` from clean."""
    lines = bench_evaluation(1, 2, 4) if quick else bench_evaluation()
    if demo if demo is not None else not quick:
        lines += bench_demo()
    return lines


@dataclass
class BenchArgs:
    quick: bool = opt(False, help="smaller sizes, for a first look")
    demo: bool = opt(True, help="leave out `python -m tools.flows.demo` from clean")


@command(BenchArgs, __doc__)
def main(a: BenchArgs) -> int:
    for line in bench(a.quick, None if a.demo else False):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
