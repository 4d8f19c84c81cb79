"""Benchmark: generation throughput by batch size on CPU, and ROUGE scoring time (one run, ratios).

Greedy answers from the embedded SmolLM2-135M for the same prompts at batch sizes 1, 4 and 16
(the engine and prompt encoding of tools.eval.generate: LLaMA-Factory template, left padding), so the
speed-up of batching is measured on this machine in one process; each size's tokens/s is the median of
REPEATS passes after a warm-up on one pinned thread, with its spread (tools.core.timing: marked noisy
above its share of the median). Then ROUGE-1/2/L with stemming for 150 prompts x 20 answers of HW5-like
length (the scoring cost of a full decoding grid). `--quick`: the tiny model and a few tokens, a check
that the benchmark runs (seconds), not figures to compare.

Usage:
    python -m tools.bench.generate [--quick]      (also run by `make bench`)
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from filelib import run_main
from tools.core.args import command, opt
from tools.eval import DecodingPoint

# Used when demo_eval is not registered yet: short instructions of similar length.
FALLBACK_PROMPTS = [
    f"Explain in two sentences what {x} is." for x in ("a list", "a tuple", "a dictionary", "recursion")
] * 4


def _prompts(n: int) -> list[dict]:
    from tools.eval import GenerateError, load_prompts

    try:
        rows = load_prompts("demo_eval")
    except (GenerateError, ValueError, OSError):
        rows = []
    rows = rows or [
        {"id": str(i), "instruction": p, "input": "", "reference": None}
        for i, p in enumerate(FALLBACK_PROMPTS)
    ]
    return [rows[i % len(rows)] for i in range(n)]


REPEATS = 3


def bench_throughput(
    sizes=(1, 4, 16), n_prompts: int = 16, new_tokens: int = 32, tiny: bool = False, repeats: int = REPEATS
) -> list[str]:
    import torch

    from tools.core.paths import Run
    from tools.core.timing import cell, measure, rate
    from tools.eval import Engine, Source
    from tools.models import BASE_MODEL_DIR, build

    if tiny:
        from tools.models.tiny import build as build_tiny

        model, profile, name = build_tiny(), "tiny", "tiny"
    else:
        model, profile, name = build(BASE_MODEL_DIR), "smollm2_135m", "smollm2-135m"
    engine = Engine(Source(Run.base(profile), "base", str(model), "smollm2"))
    point = DecodingPoint.greedy(max_new_tokens=new_tokens)
    encoded = [engine.encode(r)[0] for r in _prompts(n_prompts)]
    encoded.sort(key=len)  # as generate batches them: similar lengths together
    with torch.inference_mode():
        engine.generate(encoded[:1], DecodingPoint.greedy(max_new_tokens=2), 0)  # warm-up
    lines, base_rate = [], None
    for bs in sizes:
        counted = []

        def one_pass(bs=bs, counted=counted):
            counted.append(
                sum(
                    r["new_tokens"]
                    for b in range(0, len(encoded), bs)
                    for r in engine.generate(encoded[b : b + bs], point, b)
                )
            )

        # one thread: on a shared CPU, OpenMP threads spin-waiting for cores slow decoding ~20x
        t = measure(one_pass, repeats=repeats, warmup=0, threads=1)
        r = rate(counted[-1], t)
        base_rate = base_rate or r["per_s"]
        lines.append(
            f"generate {name} cpu (1 thread), batch {bs:2d}: {n_prompts} prompts x <= {new_tokens} tokens, "
            f"median of {repeats}: {cell(r['per_s'], r['spread'])} tokens/s (x{r['per_s'] / base_rate:.2f} vs batch {sizes[0]})"
        )
    return lines


def _text(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n))


def bench_rouge(n_prompts: int = 150, n_answers: int = 20) -> list[str]:
    from tools.eval import rouge_items

    rng = random.Random(0)
    vocab = [
        f"{a}{b}" for a in ("run", "walk", "data", "model", "answer", "fine") for b in ("", "s", "ing", "ed")
    ]
    vocab += "the a of to and in is for that with on as by this be are it".split()
    refs = [_text(rng, vocab, rng.randint(120, 300)) for _ in range(n_prompts)]
    answers = [_text(rng, vocab, rng.randint(80, 250)) for _ in range(n_prompts * n_answers)]
    t0 = time.perf_counter()
    scores = rouge_items(answers, [refs[i // n_answers] for i in range(len(answers))])
    dt = time.perf_counter() - t0
    assert len(scores) == len(answers)
    return [
        f"rouge-score (1/2/L, stemming): {n_prompts} x {n_answers} = {len(answers)} answers of 80-250 words "
        f"in {dt:.1f} s ({len(answers) / dt:.0f} answers/s)"
    ]


def bench(quick: bool = False) -> list[str]:
    if quick:
        return bench_throughput((1, 4), n_prompts=4, new_tokens=4, tiny=True, repeats=2) + bench_rouge(10, 2)
    return bench_throughput() + bench_rouge()


@dataclass
class BenchArgs:
    quick: bool = opt(False, help="smaller sizes, for a first look")


@command(BenchArgs, __doc__)
def main(a: BenchArgs) -> int:
    for line in bench(a.quick):
        print(line)
    return 0


if __name__ == "__main__":
    run_main(main)
