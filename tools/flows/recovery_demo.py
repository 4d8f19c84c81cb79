"""`make recovery-demo`: prune the embedded SmolLM2-135M, recover it with LoRA through LLaMA-Factory, compare.

Each step is its own command (shown as it runs), each skips what is already done:
1. `python -m tools.data.recovery`: registers `demo_recovery` (the project's own pool) and the held-out
   rows whose text the perplexity is read on (`demo_recovery_heldout`);
2. `python -m tools.models.prune --calibration demo_recovery`: structured pruning by activation-weighted
   magnitude on the training rows, different widths per layer, saved as
   LLM-Pruner's pickled dict `saves/smollm2_135m/pruned/pruned_model.bin`;
3. `python -m tools.flows.sweep --study recovery`: LoRA through LLaMA-Factory (plugins/launchers/launch.py
   supplies the module), then tools.eval.recovery (before pruning, after, after recovery) and
   tools.report.recovery (`reports/recovery/report.md`);
4. `python -m tools.export.pruned`: the merged model in the pickled format, checked by logits.
Exits 1 when the recovered model's perplexity is not below the pruned model's.

Usage:
    python -m tools.flows.recovery_demo [--mlp-ratio 0.2] [--head-ratio 0.2] [--model smollm2_135m]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass

from filelib import run_main
from tools.core.args import command, opt
from tools.core.paths import ROOT, Run
from tools.core.profiles import list_profiles, load_profile, resolve_model_path
from tools.core.runinfo import command_of
from tools.data import recovery_main as data_recovery_main
from tools.export import pruned_main as export_pruned_main
from tools.flows.sweep import main as sweep_main
from tools.models import prune_main

STUDY, VARIANT = "recovery", "demo_recovery"


def step(main, args: list[str]) -> None:
    """One tool as a child process, printed as the command a user would type."""
    cmd = [*command_of(main), *args]
    print(f"\n$ python {' '.join(cmd[1:])}", flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc != 0:
        raise SystemExit(rc)


def summary(stages: dict, text: str) -> list[str]:
    """Each stage's perplexity on the held-out text and its generation speed as measured: the median and
    spread of the timed passes (tools.eval.recovery), `(noisy)` or not estimable, never one timing."""
    from tools.core.timing import NOISY_SHARE, cell

    lines = [
        f"perplexity on {text.removeprefix('local:')} (held out of training); tokens/s: the median ± spread "
        f"of the timed passes, (noisy) when the spread exceeds {100 * NOISY_SHARE:.0f}% of the median:"
    ]
    for stage in ("unpruned", "pruned", "recovered"):
        if stage in stages:
            st, sp = stages[stage], stages[stage].get("speed") or {}
            tps = cell(sp.get("tokens_per_s"), sp.get("tokens_per_s_spread"), n=sp.get("repeats") or 0)
            lines.append(f"  {stage:<10} perplexity {st['perplexity'][text]:>10.2f}   tokens/s {tps}")
    return lines


@dataclass
class RecoveryDemoArgs:
    model: str = opt("smollm2_135m", help="a CPU profile", choices=list_profiles)
    mlp_ratio: float = opt(0.2, help="share of MLP channels pruned", gt=0, lt=1)
    head_ratio: float = opt(0.2, help="share of attention heads pruned", gt=0, lt=1)


@command(RecoveryDemoArgs, __doc__)
def main(a: RecoveryDemoArgs) -> int:
    t0 = time.time()
    step(data_recovery_main, [])
    pruned = resolve_model_path(f"saves/{a.model}/pruned/pruned_model.bin")
    source = load_profile(a.model)["model_name_or_path"]
    if not (ROOT / pruned).exists():
        step(
            prune_main,
            ["--model", resolve_model_path(source), "--out", pruned]
            + [
                "--mlp-ratio",
                str(a.mlp_ratio),
                "--head-ratio",
                str(a.head_ratio),
                "--calibration",
                "demo_recovery",
            ],
        )
    step(sweep_main, ["--study", STUDY, "--model", a.model, "--only", VARIANT])
    run = Run(a.model, STUDY, VARIANT)
    if not (run.export_dir / "export.json").exists():
        step(export_pruned_main, ["--run", run.name])
    results = json.loads((run.output_dir / "eval" / "recovery" / "evaluation_results.json").read_text())
    ppl = {k: v["perplexity"] for k, v in results["stages"].items()}
    text = next(k for k in ppl["pruned"] if k.startswith("local:"))
    print(f"\n{time.time() - t0:.0f} s in all; " + "\n".join(summary(results["stages"], text)))
    print("report: reports/recovery/report.md; merged model:", run.export_dir)
    if not ppl["recovered"][text] < ppl["pruned"][text]:
        print("error: recovery did not lower the pruned model's perplexity", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
