"""The method x model table of memory bills (docs/bills.md): each method of a study, billed for each profile's
model from its structure (tools/train/memory.py), with the peak measured on this CPU beside it where asked.

Bills: each profile as rendered (its batch, cutoff, precision; GPU profiles on a GPU, the others on a CPU),
the model's config read as preflight reads it (a folder, the Hugging Face cache, the hub) or, when it is not
at hand, as its publisher ships it. Measured (`--measure`): each CPU profile's method trained for 2 steps of
2 rows x 128 tokens by tools.train.measure in a process of its own (the peak resident set's increase over the
process after its imports), beside the bill of that same config; the figures are stored as JSON in --results
(one file per run, under cache/bills by default), so the table is rebuilt from them without training again.

Usage:
    python -m tools.train.billtable [--study method] [--models llama2_7b,smollm2_135m,tiny]
        [--measure tiny,smollm2_135m] [--only lora,full] [--results DIR] [--out docs/bills-table.md]
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from filelib import atomic_write_json, atomic_write_text, run_main
from tools.core.args import command, opt
from tools.core.paths import cache_dir
from tools.core.profiles import load_profile, resolve_model_path
from tools.train.configs import render_study
from tools.train.measure import measure_run
from tools.train.memory import PUBLISHED, bill, disk_mb
from tools.train.preflight import model_config, run_model_config

MODELS = ["llama2_7b", "smollm2_135m", "tiny"]
# CPU-cheap shape of a measured run: 2 steps of 2 rows x 128 tokens, a checkpoint after each
MEASURE_SET = {"max_steps_cap": 2, "cutoff_len": 128, "per_device_train_batch_size": 2}
MEASURE_SET |= {"gradient_accumulation_steps": 1, "save_steps": 1}


@dataclass
class TableArgs:
    study: str = opt("method", help="the study whose variants are the rows")
    models: list[str] = opt(MODELS, help="profiles, the column groups", split=",")
    measure: list[str] | None = opt(None, help="CPU profiles whose runs are trained and measured", split=",")
    only: list[str] | None = opt(None, help="only these variants", split=",")
    results: Path | None = opt(None, help="folder of the measured runs' JSON files (default: cache/bills)")
    out: Path | None = opt(None, help="write the table (markdown) here as well as printing it")


def model_of(profile: str) -> tuple[str, dict | None, str]:
    prof = load_profile(profile)
    ref = resolve_model_path(str(prof["model_name_or_path"]))
    mc, where = model_config(ref)
    if mc is None and ref in PUBLISHED:
        mc, where = PUBLISHED[ref], "its config.json as published (tools/train/memory.py)"
    return ref, mc, where


def bills_of(study: str, profile: str, only: list[str] | None) -> dict[str, dict]:
    """variant -> {bill, disk_mb} for a profile's rendered study."""
    ref, mc, _ = model_of(profile)
    gpu = "cuda" in set(load_profile(profile).get("capabilities") or [])
    out = {}
    for r in render_study(study, profile, None, only or None):
        run_mc, pruned, _ = run_model_config(r.config, ref, mc)
        if run_mc is None and pruned is None:
            continue
        b = bill(r.config, run_mc, "cuda" if gpu else "cpu", model_path=pruned)
        out[r.run.variant] = {"bill": b, "disk_mb": disk_mb(r.config, run_mc, model_path=pruned)}
    return out


def measure_data(data: Path) -> Path:
    """The training set a measurement runs on, registered in `data`: rows longer than the cutoff, so every
    sequence fills cutoff_len, as the bill assumes."""
    data.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "instruction": f"Count to {i}.",
            "input": "",
            "output": " ".join(f"{j} and then" for j in range(300)),
        }
        for i in range(8)
    ]
    (data / "alpaca_top100.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(
        json.dumps({"alpaca_top100": {"file_name": "alpaca_top100.json"}})
    )
    return data


def measure_one(study: str, profile: str, variant: str, results: Path, tmp: Path) -> dict:
    """Train one variant at MEASURE_SET in a process of its own; its measurement and its config's bill."""
    data = measure_data(tmp / "data")
    (r,) = render_study(study, profile, MEASURE_SET, [variant])
    cfg = dict(
        r.config, dataset_dir=str(data), output_dir=str(tmp / "out" / variant), overwrite_output_dir=True
    )
    cfg["model_name_or_path"] = resolve_model_path(str(cfg["model_name_or_path"]))
    if not (Path(cfg["model_name_or_path"]) / "config.json").exists():  # LLaMA-Pro's expanded model
        raise RuntimeError(
            f"{profile}/{variant}: {cfg['model_name_or_path']} is not built (its config says how)"
        )
    for k in ("do_eval", "eval_dataset", "eval_strategy", "per_device_eval_batch_size"):
        cfg.pop(k, None)
    path = tmp / f"{variant}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp / f"{variant}.json"
    returncode, output = measure_run(path, out)
    if returncode != 0 or not out.exists():
        raise RuntimeError(f"{profile}/{variant}: measurement failed ({returncode}): {output[-1500:]}")
    m = json.loads(out.read_text())
    mc = json.loads((Path(cfg["model_name_or_path"]) / "config.json").read_text())
    b = bill(cfg, mc, "cpu")
    rec = {
        "profile": profile,
        "variant": variant,
        "measured": m,
        "bill_run_mb": b["run_mb"],
        "bill_total_mb": b["total_mb"],
        "trainable": b["trainable"],
        "shape": "2 steps of 2 rows x 128 tokens (tools.train.billtable MEASURE_SET)",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average": round(os.getloadavg()[0], 1),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "command": f"python -m tools.train.billtable --measure {profile} --only {variant}",
    }
    atomic_write_json(results / f"{profile}_{variant}.json", rec)
    return rec


def _gb(mb: float) -> str:
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def table(a: TableArgs) -> str:
    bills = {p: bills_of(a.study, p, a.only) for p in a.models}
    variants = list(dict.fromkeys(v for p in a.models for v in bills[p]))
    head = ["method"]
    for p in a.models:
        head += [f"{p} trainable", f"{p} bill", f"{p} disk"]
    head += ["measured on CPU (peak increase vs bill's run part)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        row = [v]
        for p in a.models:
            got = bills[p].get(v)
            if got is None:
                row += ["-", "not rendered", "-"]
                continue
            b = got["bill"]
            active = f" ({b['trainable_active']:,} active)" if b["trainable_active"] != b["trainable"] else ""
            row += [f"{b['trainable']:,}{active}", _gb(b["total_mb"]), _gb(got["disk_mb"])]
        seen = []
        for p in a.models:
            f = a.results / f"{p}_{v}.json"
            if f.exists():
                m = json.loads(f.read_text())
                inc = m["measured"]["increase_mb"]
                seen.append(f"{p}: {inc:.0f} MB vs {m['bill_run_mb']:.0f} MB (x{m['bill_run_mb'] / inc:.2f})")
        row.append("; ".join(seen) or "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def measured_table(results: Path) -> str:
    """Every measured run in `results`: its peak increase, its bill, their ratio, when and under what load."""
    head = "| model | method | measured peak increase | bill (less overhead) | bill / measured | load average | when |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for f in sorted(results.glob("*.json")):
        m = json.loads(f.read_text())
        inc = m["measured"]["increase_mb"]
        lines.append(
            f"| {m['profile']} | {m['variant']} | {inc:.0f} MB | {m['bill_run_mb']:.0f} MB | "
            f"{m['bill_run_mb'] / inc:.2f} | {m['load_average']} | {m['when']} |"
        )
    return "\n".join(lines) + "\n"


@command(TableArgs, __doc__)
def main(a: TableArgs) -> int:
    a.results = a.results or cache_dir() / "bills"
    a.results.mkdir(parents=True, exist_ok=True)
    for profile in a.measure or []:
        variants = a.only or [r.run.variant for r in render_study(a.study, profile)]
        for v in variants:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    rec = measure_one(a.study, profile, v, a.results, Path(tmp))
                except RuntimeError as e:
                    print(f"not measured: {e}", flush=True)
                    continue
            inc = rec["measured"]["increase_mb"]
            print(f"measured {profile}/{v}: {inc:.0f} MB, billed {rec['bill_run_mb']:.0f} MB", flush=True)
    text = table(a) + "\n" + measured_table(a.results)
    print(text, end="")
    if a.out:
        atomic_write_text(a.out, text)
    return 0


if __name__ == "__main__":
    run_main(main)
