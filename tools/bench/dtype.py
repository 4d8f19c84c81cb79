"""Benchmark: fp32 against bf16 on this CPU, for generation and for training (one run, ratios).

Generation: greedy answers of the embedded SmolLM2-135M to the demo's prompts with a bare Hugging Face
`generate` (AutoModelForCausalLM, the tokenizer's chat template, left padding) in float32 and in
bfloat16 at the same batch: tokens/s of each, and how far bf16 moves the answers (share identical,
mean ROUGE-L of the bf16 answer against the fp32 one). Then the engine of tools.eval (LLaMA-Factory
template and loader) at its default dtype and batch, against the faster of the two bare runs: the
engine must stay within 0.9x of plain transformers.

Training: a few steps of `llamafactory-cli train` on the embedded model (the smoke config: LoRA r8,
4 rows a step) in fp32 and with `bf16: true` (mixed precision: autocast to bf16, fp32 master
weights): seconds per step (after the first) and the loss at each step.

Usage:
    python -m tools.bench.dtype [--quick] [--no-train]      (also run by `make bench`)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

DEMO_NEW_TOKENS = 128


def _prompts(n: int) -> list[dict]:
    from tools.bench.generate import _prompts as demo_prompts

    return demo_prompts(n)


def bare_hf(model_dir: Path, rows: list[dict], dtype: str, batch: int, new_tokens: int) -> tuple[float, list]:
    """(tokens/s, answers) of plain transformers: no LLaMA-Factory, no engine of ours."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tools.eval import user_message

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": user_message(r)}], tokenize=False, add_generation_prompt=True
        )
        for r in rows
    ]
    order = sorted(range(len(texts)), key=lambda i: len(tok(texts[i])["input_ids"]))
    answers: list = [None] * len(rows)
    with torch.inference_mode():
        model.generate(**tok(texts[:1], return_tensors="pt"), max_new_tokens=2, do_sample=False)  # warm-up
        t0, tokens = time.perf_counter(), 0
        for b in range(0, len(order), batch):
            idx = order[b : b + batch]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True)
            out = model.generate(
                **enc, max_new_tokens=new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None
            )
            for i, seq in zip(idx, out[:, enc["input_ids"].shape[1] :].tolist(), strict=True):
                end = next((k for k, t in enumerate(seq) if t == tok.eos_token_id), len(seq))
                tokens += end
                answers[i] = tok.decode(seq[:end], skip_special_tokens=True).strip()
        dt = time.perf_counter() - t0
    return tokens / dt, answers


def engine_rate(model_dir: Path, rows: list[dict], batch: int, new_tokens: int, dtype: str | None) -> tuple:
    """(tokens/s, dtype) of tools.eval's engine on the same prompts (its own batching: length-sorted)."""
    from tools.core.paths import Run
    from tools.eval import DecodingPoint, Engine, Source

    extra = {"infer_dtype": dtype} if dtype else {}
    engine = Engine(Source(Run.base("smollm2_135m"), "base", str(model_dir), "smollm2", extra=extra))
    point = DecodingPoint.greedy(max_new_tokens=new_tokens)
    encoded = sorted((engine.encode(r)[0] for r in rows), key=len)
    engine.generate(encoded[:1], DecodingPoint.greedy(max_new_tokens=2), 0)  # warm-up
    t0, tokens = time.perf_counter(), 0
    for b in range(0, len(encoded), batch):
        tokens += sum(r["new_tokens"] for r in engine.generate(encoded[b : b + batch], point, b))
    return tokens / (time.perf_counter() - t0), str(engine.dtype).replace("torch.", "")


def bench_generation(n_prompts: int, batch: int, new_tokens: int) -> list[str]:
    from tools.eval import rouge_items
    from tools.models import BASE_MODEL_DIR, build

    build(BASE_MODEL_DIR)
    rows = _prompts(n_prompts)
    r32, a32 = bare_hf(BASE_MODEL_DIR, rows, "float32", batch, new_tokens)
    r16, a16 = bare_hf(BASE_MODEL_DIR, rows, "bfloat16", batch, new_tokens)
    same = sum(a == b for a, b in zip(a32, a16, strict=True)) / len(rows)
    rl = [s["rougeL"] for s in rouge_items(a16, a32)]
    eng, dtype = engine_rate(BASE_MODEL_DIR, rows, batch, new_tokens, None)
    best = max(r32, r16)
    return [
        f"bare HF generate, smollm2-135m cpu, {len(rows)} prompts x <= {new_tokens} tokens, batch {batch}: "
        f"fp32 {r32:.1f} tokens/s, bf16 {r16:.1f} tokens/s (bf16 x{r16 / r32:.2f})",
        f"greedy answers bf16 vs fp32: {same:.0%} identical, mean ROUGE-L {sum(rl) / len(rl):.3f}",
        f"engine (tools.eval, default dtype {dtype}), batch {batch}: {eng:.1f} tokens/s = "
        f"x{eng / best:.2f} the faster bare HF run (target >= 0.9)",
    ]


def train_steps(bf16: bool, steps: int, root: Path) -> dict:
    """Seconds per step (after the first) and the loss curve of one llamafactory-cli run."""
    import subprocess

    from tools.core.paths import llamafactory_cli
    from tools.models import BASE_MODEL_DIR
    from tools.train.smoke import doc_rows, write_config

    data = root / "data"
    from plugins.fileio import atomic_write_json

    atomic_write_json(data / "docs.json", doc_rows(24))
    atomic_write_json(data / "dataset_info.json", {"smoke_docs": {"file_name": "docs.json"}})
    out = root / ("bf16" if bf16 else "fp32")
    cfg_path = write_config(BASE_MODEL_DIR, steps, out, data)
    import yaml

    cfg = yaml.safe_load(cfg_path.read_text())
    cfg.update(report_to="none", bf16=bf16, fp32=not bf16, cutoff_len=128)
    cfg_path.write_text(yaml.safe_dump(cfg))
    subprocess.run([llamafactory_cli(), "train", str(cfg_path)], check=True, capture_output=True)
    log = [json.loads(x) for x in (out / "trainer_log.jsonl").read_text().splitlines() if x.strip()]
    # elapsed_time is "H:MM:SS" in LLaMA-Factory's log: use its per-step timestamps where given
    times = [_secs(r["elapsed_time"]) for r in log]
    per_step = (times[-1] - times[0]) / max(1, len(times) - 1)
    return {"loss": [r.get("loss") for r in log], "s_per_step": per_step}


def _secs(hms: str) -> float:
    parts = [float(x) for x in str(hms).split(":")]
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


def bench_training(steps: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        f32 = train_steps(False, steps, Path(tmp))
        b16 = train_steps(True, steps, Path(tmp))
    fmt = lambda xs: " ".join(f"{x:.3f}" for x in xs if x is not None)  # noqa: E731
    diff = max(abs(a - b) for a, b in zip(f32["loss"], b16["loss"], strict=False) if a and b)
    return [
        f"llamafactory-cli train, smollm2-135m cpu, LoRA r8, 4 rows x 128 tokens a step, {steps} steps: "
        f"fp32 {f32['s_per_step']:.2f} s/step, bf16 mixed {b16['s_per_step']:.2f} s/step "
        f"(bf16 x{f32['s_per_step'] / max(b16['s_per_step'], 1e-9):.2f} faster)",
        f"loss fp32: {fmt(f32['loss'])}",
        f"loss bf16: {fmt(b16['loss'])}  (largest gap {diff:.3f})",
    ]


def bench(quick: bool = False, train: bool = True) -> list[str]:
    lines = bench_generation(8 if quick else 20, 8 if quick else 20, 32 if quick else DEMO_NEW_TOKENS)
    if train:
        lines += bench_training(3 if quick else 6)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-train", action="store_true")
    a = ap.parse_args(argv)
    for line in bench(a.quick, not a.no_train):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
