"""Train a pruned model with LLaMA-Factory: its own `run_exp`, with the model supplied by plugins.pruned.

The seam: LLaMA-Factory loads every model in `llamafactory.model.loader` (`load_tokenizer`, `load_config`,
`load_model`), and those functions reach the disk only through four names of that module's namespace:
`AutoTokenizer`, `AutoProcessor`, `AutoConfig` and `AutoModelForCausalLM`. `install` replaces those
four names with shims that answer for one path (the pruned model named by `model_name_or_path`) and
hand any other path to the real class. Everything else is LLaMA-Factory's unchanged: `patch_config`,
`patch_model`, `init_adapter` (PEFT LoRA on `lora_target`), the template, the data pipeline, the
Trainer, checkpoints, resume, logging and saving. Patching names rather than `load_model` itself
matters: the workflows import `load_model` by name, and a shim at the class level also serves
`llamafactory-cli`'s other entry points run in this process (chat, export, eval).

Our keys ride in the same YAML, which LLaMA-Factory's parser would refuse, so this launcher removes
them before calling `run_exp`: `launcher` (tools.train.trainer reads it to start this module instead of
`llamafactory-cli train`) and `trust_pickle` (the opt-in for unpickling, which runs code from the file;
`--trust-pickle` on the command line does the same).

Usage:
    python -m plugins.pruned_train CONFIG.yaml [--trust-pickle] [key=value ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from plugins.pruned import PrunedModelError, is_pruned, load

LAUNCHER = "plugins.pruned_train"
# Keys of ours that travel in the rendered YAML; removed before LLaMA-Factory parses it.
EXTRA_KEYS = ("launcher", "trust_pickle")
_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def split_config(cfg: dict) -> tuple[dict, dict]:
    """(LLaMA-Factory's keys, ours)."""
    ours = {k: cfg[k] for k in EXTRA_KEYS if k in cfg}
    return {k: v for k, v in cfg.items() if k not in EXTRA_KEYS}, ours


def _compute_dtype(cfg: dict):
    import torch

    for flag, name in _DTYPES.items():
        if cfg.get(flag):
            return getattr(torch, name)
    return torch.float32


def install(path: str | Path, trust_pickle: bool = False, dtype=None):
    """Make LLaMA-Factory's loader answer `path` with the pruned module; returns (model, tokenizer)."""
    import llamafactory.model.loader as loader

    model, tokenizer, _ = load(path, trust_pickle)
    if dtype is not None:
        model = model.to(dtype)
    model.config._name_or_path = model.name_or_path = str(path)  # what PEFT records as the base
    key = str(Path(path).resolve())

    def ours(name) -> bool:
        return name is not None and str(Path(str(name)).resolve()) == key

    def shim(real, answer):
        class Shim:
            # LLaMA-Factory picks a class by membership in these mappings; ours is the causal-LM fallback.
            _model_mapping = getattr(real, "_model_mapping", {})

            @staticmethod
            def from_pretrained(name=None, *args, **kwargs):
                name = kwargs.get("pretrained_model_name_or_path", name)
                if ours(name):
                    return answer(**kwargs)
                if "pretrained_model_name_or_path" in kwargs:
                    return real.from_pretrained(*args, **kwargs)
                return real.from_pretrained(name, *args, **kwargs)

        Shim.__name__ = f"Pruned{real.__name__}"
        return Shim

    def tokenizer_answer(**kwargs):
        tokenizer.padding_side = kwargs.get("padding_side", tokenizer.padding_side)
        return tokenizer

    def no_processor(**kwargs):
        raise OSError("a pruned text model has no processor")  # LLaMA-Factory then uses none

    loader.AutoTokenizer = shim(loader.AutoTokenizer, tokenizer_answer)
    loader.AutoProcessor = shim(loader.AutoProcessor, no_processor)
    loader.AutoConfig = shim(loader.AutoConfig, lambda **kw: model.config)
    loader.AutoModelForCausalLM = shim(loader.AutoModelForCausalLM, lambda **kw: model)
    return model, tokenizer


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    trust = "--trust-pickle" in argv
    argv = [a for a in argv if a != "--trust-pickle"]
    if not argv or not argv[0].endswith((".yaml", ".yml")):
        print(__doc__.split("Usage:")[1].strip(), file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        print(f"error: {path}: {e}", file=sys.stderr)
        return 2
    for item in argv[1:]:  # key=value overrides, as llamafactory-cli takes them
        k, _, v = item.partition("=")
        cfg[k] = yaml.safe_load(v)
    lf_cfg, ours = split_config(cfg)
    model_path = lf_cfg.get("model_name_or_path")
    if not model_path or not is_pruned(model_path):
        print(f"error: {path}: model_name_or_path {model_path!r} is not a pruned model", file=sys.stderr)
        return 2
    if lf_cfg.get("quantization_bit") is not None:
        print(f"error: {path}: quantization_bit: a pruned module is loaded as saved", file=sys.stderr)
        return 2
    try:
        install(model_path, trust or bool(ours.get("trust_pickle")), _compute_dtype(lf_cfg))
    except PrunedModelError as e:
        print(f"error: {path}: {e}", file=sys.stderr)
        return 2
    from llamafactory.train.tuner import run_exp

    run_exp(lf_cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
