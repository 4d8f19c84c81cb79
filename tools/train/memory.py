"""The memory bill of one run, before it runs, for every method: from the model's real structure (built on
the `meta` device with the run's adapter or method by LLaMA-Factory's own setup: tools/train/structure.py)
and the run's rendered config (batch, cutoff, precision, quantization, optimizer, checkpointing).

Terms (MB), each what LLaMA-Factory 0.9.5 does:
  weights      the frozen weights in the compute dtype (NF4 / LLM.int8 for QLoRA's linear layers) and buffers
  trained      the trainable parameters, as LLaMA-Factory keeps them (upcast to fp32; BAdam: half precision)
  gradients    one per trainable parameter (BAdam: only the active block, plus its fp32 copy's)
  optimizer    AdamW: two fp32 moments; 8-bit AdamW: two bytes; GaLore / APOLLO: moments of the rank-r
               projection (r x the larger side) plus the projector (r x the smaller side) for each projected
               matrix, AdamW for the rest; BAdam: the active block's fp32 master copy and its moments
  activations  with gradient checkpointing (LLaMA-Factory's default): each layer's input kept, one layer
               recomputed in full at a time (its activations and the gradients flowing through it); without: every layer's
               activations (SDPA attention: no score matrix; RMSNorm's fp32 internals; the adapters' inputs)
  logits       the logits, their fp32 copy for the loss, the log-softmax kept for backward, and the two
               gradients its backward holds at once
  transient    GaLore / APOLLO's step: an SVD of the largest projected gradient, or the two temporaries
               its per-parameter AdamW makes for the largest unprojected parameter (the embeddings)
  runtime      CPU only: what the training process allocates besides tensors (tokenizer, data, trainer)
  slack        CPU only: what the process holds beyond its live tensors (allocator, the mapped weights file),
               SLACK of the weights' bytes
  overhead     the process before the run: CUDA context and allocator (GPU), or the imports (CPU)

It is an upper bound by construction: every term at its peak at once, activations and logits at the full
`cutoff_len` (a real batch is padded to its longest row). Checked against measurement: the H100 table
(tests/train/test_preflight.py) and, on CPU, each method's measured peak (tests/train/test_bills.py:
bill >= peak increase <= 1.5 x bill). The table of docs/bills.md: `python -m tools.train.billtable`.
"""

from __future__ import annotations

import math

GB = 1024**3
MB = 1024**2
BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
# What a process holds besides the bill's terms, measured: CUDA context + allocator slack as seen by
# nvidia-smi on an H100 (torch 2.11), and a CPU training process's resident set after its imports (torch,
# transformers, datasets, peft, LLaMA-Factory's trainer, and ray, which LLaMA-Factory imports when it is
# installed: 1242 MB measured here, 1525 MB peak of a whole tiny run on CI against 1505 MB here), with room
# for the machine-to-machine spread.
OVERHEAD_MB = {"cuda": 600, "cpu": 1400}
# CPU: the run's own objects besides tensors (tokenizer, arrow data, trainer, TensorBoard writer), measured
# as the tiny model's peak increase less its tensors (~35 MB, tools.train.measure), with room.
RUNTIME_MB = 60
# CPU: what the process holds beyond the live tensors (allocator slack, pages of the memory-mapped weights),
# as a share of the weights' bytes: the largest excess measured (BAdam on SmolLM2-135M: +33%; docs/bills.md).
SLACK = 0.35
# NF4: half a byte a weight plus one absmax per block of 64 (double-quantised to 8 bits: ~1/64 byte);
# LLM.int8: one byte plus a row-wise fp32 scale (negligible).
QUANT_BYTES = {4: 0.5 + 1 / 64, 8: 1.0}
EIGHT_BIT = ("adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit_8bit")
TERMS = (
    "weights",
    "trained",
    "gradients",
    "optimizer",
    "activations",
    "logits",
    "transient",
    "runtime",
    "slack",
)
FULL_MODEL = ("full", "freeze")  # methods whose run saves a whole model, not an adapter
# Configs as their publishers ship them, to bill a model whose config.json is not at hand (offline, gated).
PUBLISHED = {
    "meta-llama/Llama-2-7b-hf": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32000,
        "tie_word_embeddings": False,
    }
}


def optimizer_kind(cfg: dict) -> str:
    if cfg.get("use_badam"):
        return "badam"
    if cfg.get("use_galore"):
        return "galore"
    if cfg.get("use_apollo"):
        return "apollo"
    return "adamw_8bit" if str(cfg.get("optim", "")) in EIGHT_BIT else "adamw"


def _layer_activation(h: int, q: int, kv: int, i: int, b: int) -> float:
    """Bytes a token leaves saved for backward in one LLaMA decoder layer (HF modelling, SDPA)."""
    norms = 2 * h * (8 if b == 4 else 12)  # two RMSNorms: fp32 copy, normalised fp32, output
    attn = b * (4 * q + 3 * kv)  # q, k, v; rotated q, k; attention output and o_proj's input
    mlp = b * 4 * i  # gate, up, SiLU(gate), the product (down_proj's input)
    return norms + attn + mlp + b * h  # + the residual between attention and MLP


def _adapter_inputs(cfg: dict, h: int, q: int, i: int, b: int, trainable_dtype: str | None) -> float:
    """Bytes a token adds in one layer for adapter layers: each adapted input cast to the adapter's dtype
    (fp32) and, with dropout, dropout's output and its mask."""
    if cfg.get("finetuning_type", "lora") not in ("lora", "oft"):
        return 0.0
    width = 5 * h + q + i  # the inputs of q, k, v, gate, up (h), o (q) and down (i)
    kept = 4 if trainable_dtype == "float32" else b  # the input as the adapter's first matmul keeps it
    dropout = cfg.get("lora_dropout") or cfg.get("module_dropout") or 0
    if dropout:
        return width * (kept + 1)  # dropout's output (in the adapter's dtype) and its mask
    return width * (kept if kept != b else 0)  # a cast copy, or the input itself (already counted)


def activations(cfg: dict, s: dict, b: int, tokens: int) -> float:
    h = s["hidden"]
    per_layer = [
        _layer_activation(h, q, kv, i, b) + _adapter_inputs(cfg, h, q, i, b, s["trainable_dtype"])
        for q, kv, i in s["widths"]
    ]
    if cfg.get("disable_gradient_checkpointing"):
        return tokens * sum(per_layer)
    i_max, q_max = max(w[2] for w in s["widths"]), max(w[0] for w in s["widths"])
    flowing = b * (2 * i_max + 2 * h + q_max)  # the gradients alive at once in the recomputed layer
    return tokens * (len(per_layer) * h * b + max(per_layer) + flowing)


def optimizer_terms(cfg: dict, s: dict, kind: str) -> tuple[float, float, float]:
    """(optimizer state, gradients, transient) bytes."""
    n, tb = s["trainable"], s["trainable_bytes"]
    if kind == "badam":  # one block active: its fp32 master copy, that copy's gradient, AdamW moments
        block = s["largest_layer"]
        per = tb / max(n, 1)
        return block * (4 + 8), block * (per + 4), 0.0
    if kind in ("galore", "apollo"):
        r = int(cfg.get(f"{kind}_rank", 16))
        shapes = [tuple(x) for x in s["projected"]]
        proj_n = sum(m * k for m, k in shapes)
        states = sum(r * (2 * max(m, k) + min(m, k)) * 4 for m, k in shapes) + (n - proj_n) * 8
        big = max(shapes, key=lambda x: x[0] * x[1], default=(0, 0))
        svd = 3 * big[0] * big[1] * 4  # the largest projected gradient's fp32 copy, U and Vh of its SVD
        # the rest is plain AdamW, one parameter at a time, with two temporaries of its size (sqrt, ratio)
        rest = 2 * 4 * s.get("largest_unprojected", 0)
        return states, tb, max(svd, rest)
    per_state = 2 if kind == "adamw_8bit" else 2 * tb / max(n, 1)  # moments in the parameters' dtype
    return n * per_state, tb, 0.0


def _quantised(s: dict, b: int, qbit: int) -> float:
    """The frozen weights with the decoder's linear layers in 4 or 8 bits."""
    h = s["hidden"]
    linear = sum(2 * h * q + 2 * h * kv + 3 * h * i for q, kv, i in s["widths"])
    return s["frozen_bytes"] - linear * b + linear * QUANT_BYTES[qbit]


def bill(
    cfg: dict,
    mc: dict | None,
    device: str = "cuda",
    model_path: str | None = None,
    struct: dict | None = None,
) -> dict:
    """The estimate in MB, term by term, for a rendered run config `cfg` and a model config `mc` (or the
    pruned model at `model_path`)."""
    from tools.train.structure import precision, structure

    s = dict(struct or structure(cfg, mc, model_path))
    vocab = (mc or {}).get("vocab_size") or s.get("vocab")
    s.setdefault("hidden", (mc or {}).get("hidden_size"))
    prec = precision(cfg)
    b = BYTES[prec]
    qbit = cfg.get("quantization_bit")
    kind = optimizer_kind(cfg)
    batch, t = int(cfg.get("per_device_train_batch_size", 1)), int(cfg.get("cutoff_len", 1024))
    tokens = batch * t
    states, grads, transient = optimizer_terms(cfg, s, kind)
    weights = _quantised(s, b, int(qbit)) if qbit else s["frozen_bytes"]
    terms = {
        "weights": weights + s["buffer_bytes"],
        "trained": s["trainable_bytes"],
        "gradients": grads,
        "optimizer": states,
        "activations": activations(cfg, s, b, tokens),
        # the logits, their fp32 copy (16-bit runs), the log-softmax kept for backward, and in its backward
        # the gradient coming in and the one going out, all alive at once
        "logits": tokens * vocab * (b + (4 if b < 4 else 0) + 4 + 4 + 4),
        "transient": transient,
        "runtime": RUNTIME_MB * MB if device == "cpu" else 0,
        "slack": SLACK * (s["frozen_bytes"] + s["trainable_bytes"]) if device == "cpu" else 0,
        "overhead": OVERHEAD_MB["cpu" if device == "cpu" else "cuda"] * MB,
    }
    out = {k: round(v / MB, 1) for k, v in terms.items()}
    out["total_mb"] = round(sum(terms.values()) / MB, 1)
    out["run_mb"] = round((sum(terms.values()) - terms["overhead"]) / MB, 1)
    out.update(
        basis="upper bound: every term at its peak, activations and logits at the full cutoff_len",
        structure=s["basis"],
        device=device,
        method=method_name(cfg),
        optimizer_kind=kind,
        gradient_checkpointing=not cfg.get("disable_gradient_checkpointing"),
        params=int(s["params"]),
        trainable=int(s["trainable"]),
        trainable_active=int(s["largest_layer"]) if kind == "badam" else int(s["trainable"]),
        precision=prec,
        quantization_bit=int(qbit) if qbit else None,
        batch=batch,
        cutoff_len=t,
    )
    return out


def method_name(cfg: dict) -> str:
    """A short name for what a config trains: the PEFT type, LLaMA-Factory's method, its options."""
    ft = cfg.get("finetuning_type", "lora")
    for flag, name in (("use_galore", "galore"), ("use_apollo", "apollo"), ("use_badam", "badam")):
        if cfg.get(flag):
            return name
    if cfg.get("use_llama_pro"):
        return "llama_pro"
    if ft != "lora":
        return ft
    name = cfg.get("peft_type", "lora")
    if name == "lora":
        name = "dora" if cfg.get("use_dora") else "lora"
        name = ("q" + name) if cfg.get("quantization_bit") else name
    return name


# ---------------------------------------------------------------------------------------- disk
def checkpoints(cfg: dict, rows: int | None = None) -> tuple[int, str]:
    """(how many checkpoints a run keeps, why): `save_total_limit` (null = keep all), else one per epoch
    (save_strategy epoch) or per `save_steps` steps of the run."""
    epochs = float(cfg.get("num_train_epochs", 3))
    if cfg.get("max_steps") and int(cfg["max_steps"]) > 0:
        steps = int(cfg["max_steps"])
    elif rows:
        per_step = int(cfg.get("per_device_train_batch_size", 1)) * int(
            cfg.get("gradient_accumulation_steps", 1)
        )
        steps = math.ceil(rows / per_step) * math.ceil(epochs)
    else:
        steps = None
    if cfg.get("save_strategy", "steps") == "epoch" or cfg.get("save_steps") in (None, 0):
        made, why = math.ceil(epochs), "one per epoch"
        if steps is not None and cfg.get("max_steps"):
            made = 1  # a capped run ends inside its first epoch (save at the end)
    elif steps is not None:
        made, why = math.ceil(steps / int(cfg["save_steps"])), f"one per {cfg['save_steps']} steps"
    else:
        made, why = math.ceil(epochs), "rows unknown: one per epoch assumed"
    limit = cfg.get("save_total_limit")
    if limit:
        return min(made, int(limit)), f"{why}, the last {limit} kept"
    return made, f"{why}, all kept (save_total_limit: null)"


def disk_mb(
    cfg: dict,
    mc: dict | None,
    rows: int | None = None,
    model_path: str | None = None,
    struct: dict | None = None,
) -> float:
    """What one run keeps on disk: its final weights, plus each kept checkpoint (the same weights, the
    optimizer's state, scheduler and RNG), plus tokenizer and logs (~20 MB). Adapter methods save the
    trainable parameters; full-model methods (full, freeze, GaLore, APOLLO, BAdam, LLaMA-Pro) the whole model."""
    from tools.train.structure import structure

    s = struct or structure(cfg, mc, model_path)
    full = cfg.get("finetuning_type", "lora") in FULL_MODEL
    weights = s["frozen_bytes"] + s["trainable_bytes"] if full else s["trainable_bytes"]
    states, _, _ = optimizer_terms(cfg, s, optimizer_kind(cfg))
    keep, _ = checkpoints(cfg, rows)
    return round((weights + keep * (weights + states)) / MB + 20, 1)


def render_bill(b: dict) -> str:
    parts = ", ".join(f"{k} {b[k] / 1024:.2f}" for k in (*TERMS, "overhead") if b.get(k))
    trained = f"{b['trainable']:,} trainable" + (
        f" ({b['trainable_active']:,} active at a time)" if b["trainable_active"] != b["trainable"] else ""
    )
    return f"{b['total_mb'] / 1024:.2f} GB ({parts}; {trained}, {b['optimizer_kind']})"
