"""A run's model as it will train, built on PyTorch's `meta` device: every parameter's shape and dtype,
which of them train, and the shapes the optimizer keeps state for; no weight is read or allocated.

The model is built from its config alone (`from_config` under `torch.device("meta")`), then given its
adapter or method by LLaMA-Factory's own `init_adapter` (the same call its loader makes: LoRA, DoRA, OFT,
freeze, full, LLaMA-Pro's layer choice, the fp32 upcast of trainable weights, BAdam's half-precision
weights), with plugins.launchers' `use_peft_type` for the PEFT types LLaMA-Factory has no key for (AdaLoRA,
VeRA, LoHa, LoKr). So the trainable count is the one LLaMA-Factory prints when it trains, to the parameter.
PiSSA is counted as LoRA (the same shapes; its SVD start needs real weights). A structurally pruned model
is built at its real per-layer widths: from its `pruned.json`, or, for LLM-Pruner's pickle, from the
`<file>.prune.json` tools.models.prune writes beside it and the config of the model it came from.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
OURS = ("peft_type", "launcher", "trust_pickle")  # plugins.launchers' keys, not LLaMA-Factory's


class StructureError(ValueError):
    """The model cannot be built from what is at hand (the message says what is missing)."""


def precision(cfg: dict) -> str:
    if cfg.get("bf16"):
        return "bf16"
    if cfg.get("fp16"):
        return "fp16"
    return cfg.get("precision") or "fp32"


# ---------------------------------------------------------------------------------------- the model
def pruned_manifest(path: str | Path, trust_pickle: bool = False) -> dict | None:
    """The per-layer shape manifest of a pruned model (None for an ordinary one), read without weights: its
    `pruned.json`; for a pickle the `<file>.prune.json` beside it, else (with `trust_pickle`) the pickled
    module itself unpickled onto the meta device (its tensors are not read)."""
    from plugins.launchers import is_pruned, layer_widths

    p = Path(path)
    if not is_pruned(p):
        return None
    if p.is_dir():
        return json.loads((p / "pruned.json").read_text())
    side = p.with_name(p.name + ".prune.json")
    keys = ("num_attention_heads", "num_key_value_heads", "intermediate_size")
    if side.exists():
        info = json.loads(side.read_text())
        source = Path(info["source"])
        if (source / "config.json").exists():
            config = json.loads((source / "config.json").read_text())
            return {
                "format": "smalldata-pruned/1",
                "architecture": (config.get("architectures") or ["LlamaForCausalLM"])[0],
                "config": config,
                "layers": [{k: layer[k] for k in keys} for layer in info["layers"]],
            }
    if not trust_pickle:
        raise StructureError(
            f"{p}: a pickled pruned model whose shapes are not written beside it ({side.name}); set "
            "trust_pickle for a file you trust, or convert it to the safe format "
            "(python -m plugins.launchers.pruned convert IN OUT --trust-pickle)"
        )
    import torch

    model = torch.load(p, map_location="meta", weights_only=False)["model"]
    return {
        "format": "smalldata-pruned/1",
        "architecture": type(model).__name__,
        "config": model.config.to_dict(),
        "layers": layer_widths(model),
    }


def _empty_model(mc: dict, manifest: dict | None, dtype_name: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = getattr(torch, dtype_name)
    if manifest is not None:
        from plugins.launchers import build_from_manifest

        return build_from_manifest(manifest).to(dtype), None
    keys = {
        k: v for k, v in mc.items() if not k.startswith("_") and k not in ("transformers_version", "dtype")
    }
    config = AutoConfig.for_model(**keys)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model, config


def _lf_args(cfg: dict):
    from llamafactory.hparams import FinetuningArguments, ModelArguments
    from transformers import HfArgumentParser

    keys = {k: v for k, v in cfg.items() if k not in OURS and v is not None}
    keys["pissa_init"] = False  # PiSSA's start is an SVD of the real weights; its shapes are LoRA's
    keys.pop("quantization_bit", None)  # counted in full precision; memory.py bills the 4/8-bit weights
    keys.pop("adapter_name_or_path", None)  # a continued stage trains a new adapter of the same shape
    return HfArgumentParser([ModelArguments, FinetuningArguments]).parse_dict(keys, allow_extra_keys=True)


def _layer_index(name: str) -> int | None:
    parts = name.split(".")
    for a, b in zip(parts, parts[1:], strict=False):
        if a == "layers" and b.isdigit():
            return int(b)
    return None


def _targets(model, names: list[str]) -> list[str]:
    if len(names) == 1 and names[0] == "all":
        from llamafactory.model.model_utils.misc import find_all_linear_modules

        return list(find_all_linear_modules(model, False))
    return names


def describe(model, cfg: dict, fa) -> dict:
    """What the bill needs from a built model: counts and bytes by role, per-layer widths, projected shapes."""
    import torch

    seen, params = set(), []
    for name, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            params.append((name, p))
    trainable = [(n, p) for n, p in params if p.requires_grad]
    per_layer: dict[int, int] = {}
    for n, p in trainable:
        i = _layer_index(n)
        if i is not None:
            per_layer[i] = per_layer.get(i, 0) + p.numel()
    projected, ids = [], set()
    method = "galore" if cfg.get("use_galore") else "apollo" if cfg.get("use_apollo") else None
    if method:
        targets = _targets(model, list(getattr(fa, f"{method}_target")))
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and any(t in name for t in targets):
                mine = [p for p in module.parameters() if p.requires_grad and p.dim() > 1]
                projected += [tuple(p.shape) for p in mine]
                ids |= {id(p) for p in mine}
    unprojected = [p.numel() for _, p in trainable if id(p) not in ids]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    widths = []
    for layer in base.get_decoder().layers:
        attn, mlp = layer.self_attn, layer.mlp
        q, kv = _out(attn.q_proj), _out(attn.k_proj)
        widths.append((q, kv, _out(mlp.gate_proj)))
    return {
        "params": sum(p.numel() for _, p in params),
        "trainable": sum(p.numel() for _, p in trainable),
        "trainable_bytes": sum(p.numel() * p.element_size() for _, p in trainable),
        "frozen_bytes": sum(p.numel() * p.element_size() for _, p in params if not p.requires_grad),
        "buffer_bytes": sum(b.numel() * b.element_size() for b in model.buffers()),
        "largest_layer": max(per_layer.values(), default=0),
        "projected": projected,
        "largest_unprojected": max(unprojected, default=0),
        "widths": widths,
        "hidden": int(base.config.hidden_size),
        "vocab": int(base.get_output_embeddings().weight.shape[0]),
        "trainable_dtype": str(trainable[0][1].dtype).removeprefix("torch.") if trainable else None,
    }


def _out(module) -> int:
    base = getattr(module, "base_layer", module)  # an adapted layer wraps the original Linear
    return int(base.out_features)


@functools.lru_cache(maxsize=64)
def _cached(key: str) -> str:
    args = json.loads(key)
    return json.dumps(_build(args["cfg"], args["mc"], args["manifest"]))


def _build(cfg: dict, mc: dict, manifest: dict | None) -> dict:
    import torch
    from llamafactory.model.adapter import init_adapter

    from plugins.launchers import use_peft_type

    model, config = _empty_model(mc, manifest, DTYPES[precision(cfg)])
    base_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    model_args, fa = _lf_args(cfg)
    # the adapter's new layers on the meta device too: shapes and dtypes, no memory or random init spent
    with use_peft_type(cfg.get("peft_type", "lora")), torch.device("meta"):
        model = init_adapter(config or model.config, model, model_args, fa, is_trainable=True)
    out = describe(model, cfg, fa)
    out.update(base_params=base_params, basis="meta device, LLaMA-Factory's init_adapter")
    return out


def structure(cfg: dict, mc: dict | None, model_path: str | Path | None = None) -> dict:
    """The counts for a run config on a model config `mc` (or the pruned model at `model_path`)."""
    manifest = pruned_manifest(model_path, bool(cfg.get("trust_pickle"))) if model_path else None
    if manifest is None and mc is None:
        raise StructureError("no model config at hand")
    key = json.dumps({"cfg": cfg, "mc": mc, "manifest": manifest}, sort_keys=True, default=str)
    return json.loads(_cached(key))
