"""The export check: base+adapter (PEFT) and the merged model must give the same logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Largest allowed |logit difference| between base+adapter and the merged model. Merging W + s*B@A
# in float32 changes logits only by rounding (about 1e-5 on the tiny and 135M models); storing the
# merged weights in half precision rounds every weight to 8 (bf16) or 11 (fp16) mantissa bits,
# which moves logits of a 7B model by a few hundredths to tenths. A wrong or mismatched adapter
# moves them by far more, and export.json records that effect (`adapter_effect`) beside the check.
TOLERANCE = {"float32": 1e-3, "float16": 0.1, "bfloat16": 0.5}

# Fixed prompts for the check: short, varied, tokenised the same way for both models.
CHECK_PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Give three tips for staying healthy.",
]


class CheckFailed(Exception):
    """The merged model does not reproduce base+adapter: the export is discarded."""


# ---------------------------------------------------------------- the check
def prompt_ids(tokenizer, prompts: list[str]) -> list:
    return [tokenizer(p, return_tensors="pt").input_ids for p in prompts]


def _logits(model, ids: list) -> list:
    import torch

    with torch.no_grad():
        return [model(input_ids=x).logits.float() for x in ids]


def _max_diff(a: list, b: list) -> float:
    if any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        return float("inf")
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def logit_check(
    base: str | Path, adapter: str | Path, merged: str | Path, prompts: list[str], tolerance: float
) -> dict[str, Any]:
    """Compare base+adapter (PEFT) with the merged model in float32 on the CPU."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(base)
    ids = prompt_ids(tok, prompts)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, device_map="cpu")
    peft_model = PeftModel.from_pretrained(model, str(adapter)).eval()
    want = _logits(peft_model, ids)
    with peft_model.disable_adapter():
        plain = _logits(peft_model, ids)
    del peft_model, model
    merged_model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32, device_map="cpu").eval()
    got = _logits(merged_model, ids)
    diff = _max_diff(want, got)
    effect = _max_diff(want, plain)
    return {
        "passed": diff <= tolerance,
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "adapter_effect": effect,
        "check_is_informative": effect > tolerance,
        "prompts": prompts,
        "tokens": [int(x.shape[1]) for x in ids],
        "computed_in": "float32 on cpu",
    }
