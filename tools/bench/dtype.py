"""Benchmark: fp32 against bf16 on this CPU, for generation and for training (one run, ratios).

Generation: greedy answers of the embedded SmolLM2-135M to the demo's prompts with a bare Hugging Face
`generate` (AutoModelForCausalLM, the tokenizer's chat template, left padding) in float32 and in
bfloat16 at the same batch: tokens/s of each, and how far bf16 moves the answers (share identical,
mean ROUGE-L of the bf16 answer against the fp32 one). Then the engine of tools.eval (LLaMA-Factory
template and loader) at its default dtype and batch, against the faster of the two bare runs: the
engine must stay within 0.9x of plain transformers.

Training: a few steps of `llamafactory-cli train` on the embedded model (the smoke config: LoRA r8,
4 rows a step) in fp32 and with `bf16: true` (mixed precision: autocast to bf16, fp32 master
weights): seconds per step (after the first, from the run's own log) and the loss at each step. Both runs
are children of the warm fork server where there is one (tools.core.warm: LLaMA-Factory imported once).

Usage:
    python -m tools.bench.dtype [--quick] [--no-train]      (also run by `make bench`)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from filelib import run_main
from tools.core.args import command, opt

DEMO_NEW_TOKENS = 128


def _prompts(n: int) -> list[dict]:
    from tools.bench.generate import _prompts as demo_prompts

    return demo_prompts(n)


class BareHF:
    """Plain transformers: AutoModelForCausalLM, the tokenizer's chat template, left padding."""

    def __init__(self, model_dir: Path, dtype: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()

    def text(self, row: dict) -> str:
        from tools.eval import user_message

        msgs = [{"role": "user", "content": user_message(row)}]
        return self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def generate(self, rows: list[dict], new_tokens: int) -> tuple[int, list[str]]:
        import torch

        enc = self.tok([self.text(r) for r in rows], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = self.model.generate(
                **enc, max_new_tokens=new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None
            )
        tokens, answers = 0, []
        for seq in out[:, enc["input_ids"].shape[1] :].tolist():
            end = next((k for k, t in enumerate(seq) if t == self.tok.eos_token_id), len(seq))
            tokens += end
            answers.append(self.tok.decode(seq[:end], skip_special_tokens=True).strip())
        return tokens, answers


def _model(tiny: bool) -> tuple[Path, str]:
    """(model folder, profile): the embedded SmolLM2-135M, or for --quick the tiny random model."""
    if tiny:
        from tools.models.tiny import build as build_tiny

        return build_tiny(), "tiny"
    from tools.models import BASE_MODEL_DIR, build

    return build(BASE_MODEL_DIR), "smollm2_135m"


def bench_generation(n_prompts: int, batch: int, new_tokens: int, tiny: bool = False) -> list[str]:
    """fp32, bf16 and the engine, batch by batch in turn, so a neighbour's load hits all three alike."""
    import torch

    from tools.core.paths import Run
    from tools.eval import DecodingPoint, Engine, Source, rouge_items

    model_dir, profile = _model(tiny)
    torch.set_num_threads(1)  # on a shared CPU, OpenMP threads spin-waiting for cores slow decoding ~20x
    rows = _prompts(n_prompts)
    bare = {d: BareHF(model_dir, d) for d in ("float32", "bfloat16")}
    engine = Engine(Source(Run.base(profile), "base", str(model_dir), "smollm2"))
    point = DecodingPoint.greedy(max_new_tokens=new_tokens)
    order = sorted(range(len(rows)), key=lambda i: len(engine.encode(rows[i])[0]))
    secs = {"float32": 0.0, "bfloat16": 0.0, "engine": 0.0}
    toks = dict.fromkeys(secs, 0)
    answers = {d: [None] * len(rows) for d in bare}
    for m in bare.values():  # warm-up
        m.generate(rows[:1], 2)
    engine.generate([engine.encode(rows[0])[0]], DecodingPoint.greedy(max_new_tokens=2), 0)
    for b in range(0, len(order), batch):
        idx = order[b : b + batch]
        for name, m in bare.items():
            t0 = time.perf_counter()
            n, ans = m.generate([rows[i] for i in idx], new_tokens)
            secs[name] += time.perf_counter() - t0
            toks[name] += n
            for i, a in zip(idx, ans, strict=True):
                answers[name][i] = a
        t0 = time.perf_counter()
        res = engine.generate([engine.encode(rows[i])[0] for i in idx], point, b)
        secs["engine"] += time.perf_counter() - t0
        toks["engine"] += sum(r["new_tokens"] for r in res)
    rate = {k: toks[k] / secs[k] for k in secs}
    a32, a16 = answers["float32"], answers["bfloat16"]
    same = sum(a == b for a, b in zip(a32, a16, strict=True)) / len(rows)
    rl = [s["rougeL"] for s in rouge_items(a16, a32)]
    best = max(rate["float32"], rate["bfloat16"])
    dtype = str(engine.dtype).replace("torch.", "")
    return [
        f"bare HF generate, {model_dir.name} cpu (1 thread), {len(rows)} prompts x <= {new_tokens} tokens, "
        f"batch {batch}: fp32 {rate['float32']:.1f} tokens/s, bf16 {rate['bfloat16']:.1f} tokens/s "
        f"(bf16 x{rate['bfloat16'] / rate['float32']:.2f})",
        f"greedy answers bf16 vs fp32: {same:.0%} identical, mean ROUGE-L {sum(rl) / len(rl):.3f}",
        f"engine (tools.eval, default dtype {dtype}), batch {batch}: {rate['engine']:.1f} tokens/s = "
        f"x{rate['engine'] / best:.2f} the faster bare HF run (target >= 0.9)",
    ]


def train_steps(bf16: bool, steps: int, root: Path, tiny: bool = False) -> dict:
    """Seconds per step (after the first) and the loss curve of one llamafactory-cli run."""
    from tools.core import warm
    from tools.core.paths import ROOT, llamafactory_cli
    from tools.train.smoke import doc_rows, write_config

    data = root / "data"
    from filelib import atomic_write_json

    atomic_write_json(data / "docs.json", doc_rows(24))
    atomic_write_json(data / "dataset_info.json", {"smoke_docs": {"file_name": "docs.json"}})
    out = root / ("bf16" if bf16 else "fp32")
    cfg_path = write_config(_model(tiny)[0], steps, out, data)
    import yaml

    cfg = yaml.safe_load(cfg_path.read_text())
    cfg.update(report_to="none", bf16=bf16, cutoff_len=128)
    if bf16:  # transformers refuses bf16 without a GPU unless told it is on the CPU on purpose
        cfg["use_cpu"] = True
    cfg_path.write_text(yaml.safe_dump(cfg))
    # one thread, as for generation: on a shared CPU two OpenMP threads spin-waiting for each other
    # make a step ~10x slower and the comparison meaningless
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # LLaMA-Factory imported once for both runs where warm starts are available; s/step is read from the log
    train_log = root / f"{out.name}.log"
    res = warm.run_command([*llamafactory_cli(), "train", str(cfg_path)], train_log, ROOT, env)
    if res.returncode != 0:  # the log is in a temporary folder: its tail goes with the error
        tail = "\n".join(train_log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"llamafactory-cli train failed ({res.returncode}):\n{tail}")
    log = [json.loads(x) for x in (out / "trainer_log.jsonl").read_text().splitlines() if x.strip()]
    # elapsed_time is "H:MM:SS" in LLaMA-Factory's log: use its per-step timestamps where given
    times = [_secs(r["elapsed_time"]) for r in log]
    per_step = (times[-1] - times[0]) / max(1, len(times) - 1)
    return {"loss": [r.get("loss") for r in log], "s_per_step": per_step}


def _secs(hms: str) -> float:
    parts = [float(x) for x in str(hms).split(":")]
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


def bench_training(steps: int, tiny: bool = False) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        f32 = train_steps(False, steps, Path(tmp), tiny)
        b16 = train_steps(True, steps, Path(tmp), tiny)
    fmt = lambda xs: " ".join(f"{x:.3f}" for x in xs if x is not None)  # noqa: E731
    diff = max(abs(a - b) for a, b in zip(f32["loss"], b16["loss"], strict=False) if a and b)
    return [
        f"llamafactory-cli train, {'tiny' if tiny else 'smollm2-135m'} cpu (1 thread), LoRA r8, 4 rows x 128 tokens a step, {steps} steps: "
        f"fp32 {f32['s_per_step']:.2f} s/step, bf16 mixed {b16['s_per_step']:.2f} s/step "
        f"(bf16 x{f32['s_per_step'] / max(b16['s_per_step'], 1e-9):.2f} faster)",
        f"loss fp32: {fmt(f32['loss'])}",
        f"loss bf16: {fmt(b16['loss'])}  (largest gap {diff:.3f})",
    ]


def bench(quick: bool = False, train: bool = True):
    """Lines as they are measured (a generator: the generation figures print before training starts)."""
    if quick:  # the tiny model, a few tokens and steps: that it runs, not figures to compare
        yield from bench_generation(4, 4, 4, tiny=True)
        if train:
            yield from bench_training(2, tiny=True)
        return
    yield from bench_generation(20, 20, DEMO_NEW_TOKENS)
    if train:
        yield from bench_training(6)


@dataclass
class BenchArgs:
    quick: bool = opt(False, help="smaller sizes, for a first look")
    train: bool = opt(True, help="leave out the training comparison")


@command(BenchArgs, __doc__)
def main(a: BenchArgs) -> int:
    for line in bench(a.quick, a.train):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
