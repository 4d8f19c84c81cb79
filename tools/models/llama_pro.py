"""LLaMA-Pro block expansion: a copy of a LLaMA-architecture model with N identity blocks added.

After every L/N original decoder layers, a copy of the last one is inserted whose output projections
(`self_attn.o_proj`, `mlp.down_proj`) are zero, so each new block adds nothing to the residual stream and
the expanded model computes exactly what the original did (Wu et al. 2024, LLaMA-Pro). Training then
updates only the new blocks (`finetuning_type: freeze`, `use_llama_pro: true`, `freeze_trainable_layers:
N`), which LLaMA-Factory finds at every (L/N + 1)-th index. This is what LLaMA-Factory's
scripts/llama_pro.py does; its wheel does not ship the script. Written atomically.

Usage:
    python -m tools.models.llama_pro --model models/smollm2-135m-instruct --blocks 6 --out models/smollm2_135m_pro6
    python -m tools.models.llama_pro --model meta-llama/Llama-2-7b-hf --blocks 8 --out models/llama2_7b_pro8
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from filelib import atomic_dir, check_output, claim, run_main
from tools.core.args import command, opt
from tools.core.portable import make_portable

ZEROED = ("self_attn.o_proj", "mlp.down_proj")  # the block's writes into the residual stream


OWNER = "tools.models.llama_pro (a LLaMA-Pro expansion)"


def expanded_order(layers: int, blocks: int) -> list[tuple[int, bool]]:
    """(source layer, is a new zero-output copy) for each layer of the expanded model."""
    if blocks <= 0 or layers % blocks:
        raise ValueError(f"the model has {layers} layers: --blocks must divide it (got {blocks})")
    split = layers // blocks
    order = []
    for i in range(layers):
        order.append((i, False))
        if (i + 1) % split == 0:
            order.append((i, True))
    return order


def expand(model_path: str, blocks: int, out: Path) -> Path:
    check_output(out, OWNER, inputs=[model_path])  # never over its input or someone else's folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype="auto")
    layers = model.config.num_hidden_layers
    order = expanded_order(layers, blocks)
    state = model.state_dict()
    pattern = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
    per_layer: dict[int, dict[str, torch.Tensor]] = {}
    new_state = {}
    for name, tensor in state.items():
        m = pattern.match(name)
        if m:
            per_layer.setdefault(int(m.group(1)), {})[m.group(2)] = tensor
        else:
            new_state[name] = tensor
    for target, (source, is_new) in enumerate(order):
        for rest, tensor in per_layer[source].items():
            copy = tensor.clone()
            if is_new and any(rest.startswith(z) for z in ZEROED):
                copy.zero_()
            new_state[f"model.layers.{target}.{rest}"] = copy
    model.config.num_hidden_layers = len(order)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[s] for s, _ in order]
    expanded = AutoModelForCausalLM.from_config(model.config, dtype=model.dtype)
    expanded.load_state_dict(new_state, strict=False)
    expanded.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    with atomic_dir(out) as tmp:
        expanded.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for line in make_portable(tmp):  # transformers 4.x's spellings too (tools.core.portable)
            print(f"note: {line}")
        claim(tmp, OWNER)
    return out


@dataclass
class LlamaProArgs:
    model: str = opt(help="a LLaMA-architecture model folder or hub id", required=True)
    blocks: int = opt(help="blocks to add (must divide the layer count)", required=True, min=1)
    out: Path = opt(help="the expanded model's folder", required=True)


@command(LlamaProArgs, __doc__)
def main(a: LlamaProArgs) -> int:
    try:
        path = expand(a.model, a.blocks, a.out)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"expanded {a.model} by {a.blocks} blocks into {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
