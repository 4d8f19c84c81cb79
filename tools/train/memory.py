"""The memory bill of one LoRA run, before it runs: weights + LoRA parameters + gradients + optimizer
states + activations + logits + the process's own overhead, from the model's config.json and the
run's rendered config (rank, target modules, batch, cutoff, precision, quantization bit).

It is an upper bound in one respect: activations and logits are billed at the full `cutoff_len`,
while a real batch is padded only to its longest row. The other terms are what LLaMA-Factory 0.9.5
does: gradient checkpointing on (its default), trainable LoRA parameters upcast to fp32, AdamW (two
fp32 states), SDPA attention (no score matrix kept), the loss computed on fp32 logits.

Checked against measurements (tests/train/test_preflight.py): the README's H100 table (LLaMA-2-7B
shape, bf16, r8, 4 x 2 rows: 16.11 GB measured) and the tiny model's peak RSS on this CPU.
"""

from __future__ import annotations

GB = 1024**3
MB = 1024**2
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# What a process holds besides the bill's terms, measured: CUDA context + allocator slack as seen by
# nvidia-smi on an H100 (torch 2.11), and a CPU LLaMA-Factory training process's RSS before the model
# (torch, transformers, datasets, gradio imports: ~1.2 GB on this machine with the tiny model).
OVERHEAD_MB = {"cuda": 600, "cpu": 1200}
BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
# NF4: half a byte a weight plus one absmax per block of 64 (double-quantised to 8 bits: ~1/64 byte);
# LLM.int8: one byte plus a row-wise fp32 scale (negligible).
QUANT_BYTES = {4: 0.5 + 1 / 64, 8: 1.0}


def linear_shapes(mc: dict) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer in one decoder block of a LLaMA-shaped model."""
    h, i = mc["hidden_size"], mc["intermediate_size"]
    heads = mc["num_attention_heads"]
    kv = mc.get("num_key_value_heads") or heads
    hd = mc.get("head_dim") or h // heads
    return {
        "q_proj": (h, heads * hd),
        "k_proj": (h, kv * hd),
        "v_proj": (h, kv * hd),
        "o_proj": (heads * hd, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }


def targets(lora_target: str) -> list[str]:
    if str(lora_target).strip() == "all":
        return list(ALL_LINEAR)
    names = [t.strip() for t in str(lora_target).split(",") if t.strip()]
    return [n for n in names if n in ALL_LINEAR]


def bill(cfg: dict, mc: dict, device: str = "cuda") -> dict:
    """The estimate in MB, term by term, for a rendered run config `cfg` and a model config `mc`."""
    layers, h, vocab = mc["num_hidden_layers"], mc["hidden_size"], mc["vocab_size"]
    shapes = linear_shapes(mc)
    precision = _precision(cfg)
    act_bytes = BYTES[precision]
    qbit = cfg.get("quantization_bit")
    linear = layers * sum(a * b for a, b in shapes.values())
    embed = vocab * h * (1 if mc.get("tie_word_embeddings") else 2)
    norms = (2 * layers + 1) * h
    weight_bytes = linear * (QUANT_BYTES[int(qbit)] if qbit else act_bytes) + (embed + norms) * act_bytes
    rank = int(cfg.get("lora_rank", 8))
    chosen = targets(cfg.get("lora_target", "all"))
    lora = layers * sum(rank * sum(shapes[t]) for t in chosen)
    if cfg.get("use_dora"):
        lora += layers * sum(shapes[t][1] for t in chosen)  # one magnitude per output column
    b, t = int(cfg.get("per_device_train_batch_size", 1)), int(cfg.get("cutoff_len", 1024))
    tokens = b * t
    # gradient checkpointing: each block's input is kept, one block at a time is recomputed in full
    # (Korthikanti et al. 2022: 34 bytes x hidden a token in 16-bit, attention scores not kept with SDPA)
    activations = layers * tokens * h * act_bytes + 34 * tokens * h * act_bytes / 2
    logits = tokens * vocab * (act_bytes + 4 + 4)  # the logits, their fp32 copy for the loss, its gradient
    terms = {
        "weights": weight_bytes,
        "lora_params": lora * 4,  # trainable parameters are upcast to fp32
        "gradients": lora * 4,
        "optimizer": lora * 8,  # AdamW: two fp32 moments
        "activations": activations,
        "logits": logits,
        "overhead": OVERHEAD_MB["cpu" if device == "cpu" else "cuda"] * MB,
    }
    out = {k: round(v / MB, 1) for k, v in terms.items()}
    out["total_mb"] = round(sum(terms.values()) / MB, 1)
    out.update(
        basis="upper bound: activations and logits at the full cutoff_len",
        device=device,
        params=int(linear + embed + norms),
        trainable=int(lora),
        precision=precision,
        quantization_bit=int(qbit) if qbit else None,
        batch=b,
        cutoff_len=t,
        lora_rank=rank,
        lora_target=cfg.get("lora_target", "all"),
    )
    return out


def _precision(cfg: dict) -> str:
    if cfg.get("bf16"):
        return "bf16"
    if cfg.get("fp16"):
        return "fp16"
    return cfg.get("precision") or "fp32"


def disk_mb(cfg: dict, mc: dict) -> float:
    """What one run keeps on disk: its adapter, plus `save_total_limit` checkpoints (adapter + AdamW
    states), plus tokenizer and logs (~20 MB)."""
    shapes = linear_shapes(mc)
    lora = mc["num_hidden_layers"] * sum(
        int(cfg.get("lora_rank", 8)) * sum(shapes[t]) for t in targets(cfg.get("lora_target", "all"))
    )
    keep = int(cfg.get("save_total_limit", 1) or 1)
    return round((lora * 4 + keep * lora * (4 + 8)) / MB + 20, 1)


def render_bill(b: dict) -> str:
    parts = ", ".join(
        f"{k.replace('_', ' ')} {b[k] / 1024:.2f}"
        for k in ("weights", "lora_params", "gradients", "optimizer", "activations", "logits", "overhead")
    )
    return f"{b['total_mb'] / 1024:.2f} GB ({parts})"
