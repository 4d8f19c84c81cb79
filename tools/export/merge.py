"""Merge several runs of one base model into a new run (adapters) or a new model (mergekit).

Adapter merges go through PEFT's `add_weighted_adapter` (linear, TIES, DARE, ...): the result
is a new adapter run `saves/<model>/lora/merge/<method>_<name>/` with adapter files, run.json
(hparams: method, sources, weights, density) and DONE, so every evaluation tool scores it like
any trained run (`make eval RUN=<model>/merge/<method>_<name>`).

SLERP and task arithmetic work on whole models, so they merge the runs' exported, checked models
(`make export` first) with mergekit's `mergekit-yaml`, into `exports/<model>/merge/<method>_<name>/`
with `export.json`; evaluate it with `tools.eval.generate --model-path` on that folder.

Refused before anything is written: a missing or unfinished run, adapters of different base
models, a run trained on a quantised base (QLoRA), and unequal LoRA ranks for the methods that
need equal ones (linear, ties, dare_*, magnitude_prune: use cat or svd instead).

Usage:
    python -m tools.export.merge --method ties --runs smollm2_135m/rank/r8 smollm2_135m/lr/lr2e-4 --name best
        [--weights 1 1] [--density 0.5] [--seed 0]
    python -m tools.export.merge --method dare_linear --runs M/curriculum/stage1_easy M/curriculum/stage2_easy_medium \\
        M/curriculum/stage3_all --name stages
    python -m tools.export.merge --method slerp --runs R1 R2 --name pair [--t 0.5]        # on exports
    python -m tools.export.merge --method task_arithmetic --runs R1 R2 --name sum [--weights 0.5 0.5]
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from filelib import atomic_dir, atomic_write_json, atomic_write_text, run_main
from tools.core.args import command, opt
from tools.core.paths import ROOT, Run, venv_bin
from tools.core.profiles import same_model
from tools.export.runs import Refused, refuse_quantised_base, run_info, versions

MERGE_STUDY = "merge"
# PEFT combination types, and whether they need every adapter to have the same rank.
PEFT_METHODS = {
    "linear": True,
    "ties": True,
    "dare_ties": True,
    "dare_linear": True,
    "magnitude_prune": True,
    "cat": False,
    "svd": False,
    "ties_svd": False,
    "dare_ties_svd": False,
    "dare_linear_svd": False,
}
DENSITY_METHODS = {m for m in PEFT_METHODS if m.startswith(("ties", "dare", "magnitude"))}
# TIES/DARE-TIES elect a sign and average the agreeing entries, so weight 1 each keeps the scale;
# the others add weighted deltas, so the default averages them (weights 1/n).
UNIT_WEIGHT_METHODS = {"ties", "dare_ties", "ties_svd", "dare_ties_svd"}
MERGEKIT_METHODS = ("slerp", "task_arithmetic")
METHODS = (*PEFT_METHODS, *MERGEKIT_METHODS)


def merged_run(model: str, method: str, name: str) -> Run:
    return Run(model, MERGE_STUDY, f"{method}_{name}")


def default_weights(method: str, n: int) -> list[float]:
    return [1.0] * n if method in UNIT_WEIGHT_METHODS else [1.0 / n] * n


def check_sources(runs: list[Run], method: str, weights: list[float] | None) -> list[dict]:
    """Everything that cannot work, refused with the runs named; returns each run's info."""
    if method not in METHODS:
        raise Refused(f"method {method!r}: use one of {', '.join(METHODS)}")
    if len(runs) < 2:
        raise Refused(f"merging needs at least two runs, got {len(runs)}")
    if method == "slerp" and len(runs) != 2:
        raise Refused(f"slerp interpolates exactly two models, got {len(runs)} runs")
    if len(set(runs)) != len(runs):
        raise Refused("the same run is named twice")
    if weights is not None and len(weights) != len(runs):
        raise Refused(f"{len(weights)} weights for {len(runs)} runs")
    infos = [run_info(r) for r in runs]
    for info in infos:
        refuse_quantised_base(info)
        if info["peft_type"] != "LORA":  # add_weighted_adapter and the mergekit path are LoRA-only
            raise Refused(
                f"run {info['run']}: a {info['peft_type']} adapter; combining adapters needs LoRA ones "
                "(export it alone: python -m tools.export --run ...)"
            )
        if info["use_dora"] and method in PEFT_METHODS:
            raise Refused(f"run {info['run']}: DoRA adapters carry magnitudes PEFT's weighted merge drops")
    if any(not same_model(i["base_path"], infos[0]["base_path"]) for i in infos[1:]):
        listing = "; ".join(f"{i['run']}: {i['model_name_or_path']}" for i in infos)
        raise Refused(f"adapters of different base models cannot be merged ({listing})")
    if PEFT_METHODS.get(method) and len({i["rank"] for i in infos}) > 1:
        listing = ", ".join(f"{i['run']} r={i['rank']}" for i in infos)
        raise Refused(
            f"method {method} needs adapters of equal LoRA rank, got {listing}; "
            "use --method cat (rank adds up) or svd (re-factorised to one rank)"
        )
    return infos


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def merge_adapters(
    runs: list[Run],
    method: str,
    name: str,
    weights: list[float] | None = None,
    density: float = 0.5,
    seed: int = 0,
) -> Run:
    """PEFT weighted-adapter merge into a new adapter run (`saves/<model>/lora/merge/<method>_<name>`)."""
    if method not in PEFT_METHODS:
        raise Refused(f"method {method!r} is not a PEFT adapter merge; use one of {', '.join(PEFT_METHODS)}")
    if method in DENSITY_METHODS and not 0.0 < density <= 1.0:
        raise Refused(f"density {density}: must be in (0, 1]")
    infos = check_sources(runs, method, weights)
    import torch  # after the checks: a refusal costs no torch import
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    weights = weights or default_weights(method, len(runs))
    out = merged_run(runs[0].model, method, name)
    started, t0 = _now(), time.time()
    torch.manual_seed(seed)  # DARE drops entries at random: seeded, so a merge can be repeated
    base = AutoModelForCausalLM.from_pretrained(infos[0]["base_path"], dtype=torch.float32, device_map="cpu")
    names = [f"src{i}" for i in range(len(runs))]
    model = PeftModel.from_pretrained(base, infos[0]["adapter_dir"], adapter_name=names[0])
    for n, info in zip(names[1:], infos[1:], strict=True):
        model.load_adapter(info["adapter_dir"], adapter_name=n)
    kwargs: dict[str, Any] = {"density": density} if method in DENSITY_METHODS else {}
    # Named "default" so save_pretrained writes it at the folder's top level, where LLaMA-Factory looks.
    model.add_weighted_adapter(names, weights, "default", combination_type=method, **kwargs)
    rank = model.peft_config["default"].r
    rj0 = infos[0]["run_json"]
    with atomic_dir(out.output_dir) as tmp:
        model.save_pretrained(str(tmp), selected_adapters=["default"])
        record = {
            "run": out.name,
            "model": out.model,
            "study": out.study,
            "variant": out.variant,
            "config": None,
            "resolved_config": {},
            "model_name_or_path": infos[0]["model_name_or_path"],
            "template": infos[0]["template"],
            "scientific": ["method", "weights", "density"],
            "hparams": {
                "method": method,
                "sources": [r.name for r in runs],
                "weights": weights,
                "density": density if method in DENSITY_METHODS else None,
                "seed": seed,
                "lora_rank": rank,
                "source_ranks": [i["rank"] for i in infos],
            },
            "source_data_fingerprints": {i["run"]: i["run_json"].get("data_fingerprint") for i in infos},
            "status": "finished",
            "returncode": 0,
            "wall_s": round(time.time() - t0, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_gpu_mb": None,
            "git_commit": _git_commit(),
            "versions": {**(rj0.get("versions") or {}), **versions(), "python": platform.python_version()},
            "started": started,
            "ended": _now(),
            "log": None,
        }
        atomic_write_json(tmp / "run.json", record)
        atomic_write_text(tmp / "DONE", _now() + "\n")
    return out


def mergekit_config(method: str, models: list[str], base: str, weights: list[float], t: float) -> dict:
    """mergekit's YAML: SLERP between two models, or task arithmetic on the base's task vectors."""
    if method == "slerp":
        return {
            "merge_method": "slerp",
            "base_model": models[0],
            "models": [{"model": m} for m in models],
            "parameters": {"t": t},
            "dtype": "float32",
        }
    return {
        "merge_method": "task_arithmetic",
        "base_model": base,
        "models": [{"model": m, "parameters": {"weight": w}} for m, w in zip(models, weights, strict=True)],
        "dtype": "float32",
    }


def merge_models(
    runs: list[Run], method: str, name: str, weights: list[float] | None = None, t: float = 0.5
) -> Path:
    """mergekit SLERP / task arithmetic on the runs' exported models into exports/<model>/merge/..."""
    if method not in MERGEKIT_METHODS:
        raise Refused(f"method {method!r} is not a mergekit model merge ({', '.join(MERGEKIT_METHODS)})")
    if not 0.0 <= t <= 1.0:
        raise Refused(f"t {t}: must be in [0, 1]")
    infos = check_sources(runs, method, weights)
    missing = [r.name for r in runs if not (r.export_dir / "export.json").exists()]
    if missing:
        raise Refused(f"{method} merges exported models; export first: make export RUN=... for {missing}")
    weights = weights or [1.0 / len(runs)] * len(runs)
    out = merged_run(runs[0].model, method, name)
    cfg = mergekit_config(method, [str(r.export_dir) for r in runs], infos[0]["base_path"], weights, t)
    t0 = time.time()
    with atomic_dir(out.export_dir) as tmp:
        cfg_path = atomic_write_text(tmp / "mergekit.yaml", yaml.safe_dump(cfg, sort_keys=False))
        log = tmp / "mergekit.log"
        with open(log, "w") as f:
            proc = subprocess.run(
                [
                    *venv_bin("mergekit-yaml"),
                    str(cfg_path),
                    str(tmp / "model"),
                    "--copy-tokenizer",
                    "--quiet",
                ],
                cwd=ROOT,
                stdout=f,
                stderr=subprocess.STDOUT,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
        if proc.returncode != 0:
            raise RuntimeError(f"mergekit-yaml failed (exit {proc.returncode}):\n{log.read_text()[-2000:]}")
        # The model files sit at the folder's top level, like every export.
        for p in (tmp / "model").iterdir():
            p.rename(tmp / p.name)
        (tmp / "model").rmdir()
        atomic_write_json(
            tmp / "export.json",
            {
                "run": out.name,
                "export_dir": str(out.export_dir),
                "method": method,
                "sources": [r.name for r in runs],
                "weights": weights if method == "task_arithmetic" else None,
                "t": t if method == "slerp" else None,
                "model_name_or_path": infos[0]["model_name_or_path"],
                "template": infos[0]["template"],
                "mergekit": cfg,
                "seconds": round(time.time() - t0, 1),
                "versions": versions(),
            },
        )
    return out.export_dir


@dataclass
class MergeArgs:
    method: str = opt(help="how to merge", required=True, choices=METHODS)
    runs: list[str] = opt(help="model/study/variant of each source run", required=True)
    name: str = opt(help="the merged run is <model>/merge/<method>_<name>", required=True)
    weights: list[float] | None = opt(None, help="one per run (default: the method's)")
    density: float = opt(0.5, help="kept share for ties/dare/magnitude_prune", gt=0, max=1)
    seed: int = opt(0, help="DARE's random drops", nonneg=True)
    t: float = opt(0.5, help="slerp: 0 = first run, 1 = second", min=0, max=1)

    def check(self) -> list[str]:
        if self.weights and self.runs and len(self.weights) != len(self.runs):
            return [f"--weights: {len(self.weights)} weights for {len(self.runs)} --runs"]
        return []


@command(MergeArgs, __doc__)
def main(a: MergeArgs) -> int:
    try:
        runs = [Run.parse(r) for r in a.runs]
        merged_run(runs[0].model, a.method, a.name)  # a --name that is not path-safe is refused first
        if a.method in MERGEKIT_METHODS:
            print(f"merged model: {merge_models(runs, a.method, a.name, a.weights, a.t)}")
        else:
            out = merge_adapters(runs, a.method, a.name, a.weights, a.density, a.seed)
            print(f"merged adapter run: {out} ({out.output_dir}); evaluate: make eval RUN={out}")
    except (Refused, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run_main(main)
