"""The rank study on a GPU, for a LLaMA-2-7B-shaped model: peak memory and seconds per step.

No weights can be fetched here, so the model is LLaMA-2-7B's architecture (hidden 4096, 32 layers,
32 heads, MLP 11008) with random weights in bf16, built on the GPU and saved once. It uses the
embedded SmolLM2 tokenizer (49,152 tokens instead of LLaMA-2's 32,000: 0.14 B more embedding
parameters, about 0.27 GB in bf16, which the table says). Speed and memory of LoRA training do not
depend on the weights' values, only on the shapes, the rank and the batch.

For each rank it takes the committed config `experiments/rank/llama2_7b_lora_sft_r<R>.yaml`
(what a GPU user runs), points it at the random model and a 100-row dataset, trains a few steps
with `llamafactory-cli train`, and records peak GPU memory (nvidia-smi, sampled) and seconds per
optimizer step after warm-up. HW5's T4 notes (4-bit QLoRA, batch 1 x accumulation 4) are printed
beside it for comparison.

Usage:
    python -m tools.bench.gpu [--ranks 4,8,16,32,64] [--steps 12] [--workdir /tmp/bench-gpu] [--out results.json]
        [--tokenizer models/smollm2-135m-instruct]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from filelib import atomic_write_json, run_main
from tools.core.args import command, opt
from tools.core.paths import EMBEDDED_MODEL, EXPERIMENTS, llamafactory_cli

# HW5's notes: LLaMA-2-7B, 4-bit QLoRA on a Colab T4, 100 samples, batch 1 x grad-accum 4.
T4_TABLE = {4: (5.9, 6), 8: (6.3, 7), 16: (6.8, 8), 32: (7.5, 10)}  # rank: (GB, minutes per epoch)
TOKENIZER_FROM = EMBEDDED_MODEL


def build_llama2_7b_shaped(out: Path, tokenizer: Path = TOKENIZER_FROM) -> Path:
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def write_dataset(folder: Path, rows: int = 100) -> Path:
    """100 Alpaca rows of HW5-like lengths (a 120-word answer on average)."""
    words = "the model learns to follow an instruction with a clear and detailed answer".split()
    data = []
    for i in range(rows):
        n = 40 + (i * 37) % 200
        data.append(
            {
                "instruction": f"Explain step {i} of the procedure in detail.",
                "input": "",
                "output": " ".join(words[j % len(words)] for j in range(n)),
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench100.json").write_text(json.dumps(data))
    (folder / "dataset_info.json").write_text(json.dumps({"bench100": {"file_name": "bench100.json"}}))
    return folder


class GpuPeak(threading.Thread):
    """Samples nvidia-smi's used memory every 0.2 s; `peak_mb` is the largest seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            ).stdout.split()
            if out:
                self.peak_mb = max(self.peak_mb, int(out[0]))
            self._halt.wait(0.2)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak_mb


def run_rank(rank: int, model: Path, dataset_dir: Path, workdir: Path, steps: int) -> dict:
    cfg = yaml.safe_load((EXPERIMENTS / "rank" / f"llama2_7b_lora_sft_r{rank}.yaml").read_text())
    out = workdir / f"r{rank}"
    cfg.update(
        model_name_or_path=str(model),
        dataset="bench100",
        dataset_dir=str(dataset_dir),
        output_dir=str(out),
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        overwrite_output_dir=True,
    )
    cfg.pop("eval_dataset", None)
    cfg.pop("val_size", None)
    cfg["do_eval"] = False
    cfg["eval_strategy"] = "no"
    yml = workdir / f"r{rank}.yaml"
    yml.write_text(yaml.safe_dump(cfg, sort_keys=False))
    mon = GpuPeak()
    mon.start()
    t0 = time.time()
    with open(workdir / f"r{rank}.log", "w") as log:
        rc = subprocess.run(
            [*llamafactory_cli(), "train", str(yml)], stdout=log, stderr=subprocess.STDOUT
        ).returncode
    peak = mon.stop()
    res = {
        "rank": rank,
        "alpha": cfg.get("lora_alpha"),
        "returncode": rc,
        "wall_s": round(time.time() - t0, 1),
        "peak_gpu_gb": round(peak / 1024, 2),
        "per_device_train_batch_size": cfg.get("per_device_train_batch_size"),
        "gradient_accumulation_steps": cfg.get("gradient_accumulation_steps"),
        "cutoff_len": cfg.get("cutoff_len"),
    }
    if rc == 0:
        # train_runtime is a float in seconds (the log's elapsed_time has whole seconds only);
        # it includes the first, slower steps, so the steady-state figure is a little lower.
        s = json.loads((out / "all_results.json").read_text())["train_runtime"] / steps
        eff = res["per_device_train_batch_size"] * res["gradient_accumulation_steps"]
        res.update(sec_per_step=round(s, 3), min_per_epoch_100=round(s * (100 / eff) / 60, 2))
    else:
        res["log_tail"] = (workdir / f"r{rank}.log").read_text()[-3000:]
    return res


def table(results: list[dict]) -> str:
    lines = [
        "| rank | alpha | batch x accum | peak GPU GB | s/step | min/epoch (100 rows) | T4 QLoRA GB | T4 min/epoch |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        t4 = T4_TABLE.get(r["rank"], ("-", "-"))
        lines.append(
            f"| {r['rank']} | {r['alpha']} | {r['per_device_train_batch_size']} x {r['gradient_accumulation_steps']}"
            f" | {r['peak_gpu_gb']} | {r.get('sec_per_step', 'failed')} | {r.get('min_per_epoch_100', '-')}"
            f" | {t4[0]} | {t4[1]} |"
        )
    return "\n".join(lines)


def no_gpu() -> str | None:
    """One line saying why this machine cannot run the benchmark, or None when a CUDA GPU is there."""
    import torch

    if torch.cuda.is_available():
        return None
    return (
        "tools.bench.gpu needs a CUDA GPU and this machine has none (torch.cuda.is_available() is False); "
        "run it on a GPU machine (`make bench-gpu` there), or `make bench` for the CPU benchmarks"
    )


@dataclass
class GpuArgs:
    ranks: list[int] = opt([4, 8, 16, 32, 64], help="LoRA ranks to train", split=",", min=1)
    steps: int = opt(12, help="optimizer steps per rank", min=1)
    workdir: Path = opt(Path(os.environ.get("TMPDIR", "/tmp")) / "bench-gpu", help="model, data and runs")
    out: Path | None = opt(None, help="write the results as JSON here")
    tokenizer: Path = opt(TOKENIZER_FROM, help="a folder with SmolLM2's tokenizer")


@command(GpuArgs, __doc__)
def main(a: GpuArgs) -> int:
    refusal = no_gpu()
    if refusal:
        print(f"error: {refusal}", file=sys.stderr, flush=True)
        return 2
    a.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model = build_llama2_7b_shaped(a.workdir / "llama2-7b-shaped", a.tokenizer)
    print(f"model: {model} ({time.time() - t0:.0f} s)", flush=True)
    data = write_dataset(a.workdir / "data")
    results = []
    for rank in a.ranks:
        res = run_rank(rank, model, data, a.workdir, a.steps)
        results.append(res)
        print(json.dumps(res), flush=True)
    print(table(results))
    if a.out:
        atomic_write_json(a.out, {"results": results, "table": table(results)})
    return 0 if all(r["returncode"] == 0 for r in results) else 1


if __name__ == "__main__":
    run_main(main)
