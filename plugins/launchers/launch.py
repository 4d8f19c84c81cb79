"""The one launcher: LLaMA-Factory's own training (`run_exp`) for a config that needs what it lacks.

Two things LLaMA-Factory 0.9.5 cannot do from a YAML, both supplied in this process only:
- an adapter type it has no key for (`peft_type`: AdaLoRA, VeRA, LoHa, LoKr): its adapter setup is
  swapped to build that type (`peft_types.use_peft_type`), with AdaLoRA's rank re-allocation callback;
- a structurally pruned model (layers of different widths, no config.json describes them): the four
  `Auto*` names of `llamafactory.model.loader` answer the pruned model's path with the loaded module
  (`install`), and hand any other path to the real class.

Everything else (data, template, trainer, checkpoints, resume, logs, the saved adapter) is LLaMA-Factory's.
The project's keys ride in the same YAML, which LLaMA-Factory's parser would refuse: they are listed once,
in `PROJECT_KEYS`, and removed here before `run_exp`. Overrides are read the way llamafactory-cli reads
them (OmegaConf's dotlist), so `key=value` means the same to both.

Usage:
    python -m plugins.launchers CONFIG.yaml [--trust-pickle] [key=value ...]
    python -m plugins.launchers --types      # the adapter types it trains
"""

from __future__ import annotations

import sys
from pathlib import Path

from plugins.launchers.peft_types import PEFT_TYPES, PeftTypeError, check_peft_type
from plugins.launchers.pruned import PrunedModelError, is_pruned, load

# The module a rendered config names in `launcher:`; the trainer starts it instead of llamafactory-cli.
LAUNCHER = "plugins.launchers"
# Every key of ours that may ride in a rendered config, with its type; nothing else is ours.
PROJECT_KEYS: dict[str, type] = {"launcher": str, "peft_type": str, "trust_pickle": bool}
_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


class LaunchError(ValueError):
    pass


def read_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    """The YAML with `key=value` overrides applied, as llamafactory-cli reads them."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    if not path.is_file():
        raise LaunchError(f"{path}: no such config")
    try:
        merged = OmegaConf.merge(OmegaConf.load(path.absolute()), OmegaConf.from_cli(list(overrides or [])))
    except (OmegaConfBaseException, ValueError) as e:
        raise LaunchError(f"{path}: {e}") from None
    cfg = OmegaConf.to_container(merged)
    if not isinstance(cfg, dict):
        raise LaunchError(f"{path}: not a mapping of LLaMA-Factory arguments")
    return cfg


def split_config(cfg: dict) -> tuple[dict, dict]:
    """(LLaMA-Factory's keys, ours)."""
    ours = {k: cfg[k] for k in PROJECT_KEYS if k in cfg}
    return {k: v for k, v in cfg.items() if k not in PROJECT_KEYS}, ours


def needs_launcher(cfg: dict) -> bool:
    """Whether a config must be trained by this launcher rather than `llamafactory-cli train`."""
    return cfg.get("launcher") is not None or cfg.get("peft_type", "lora") != "lora"


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


def prepare(path: str | Path, overrides: list[str], trust_pickle: bool = False) -> tuple[dict, str]:
    """(LLaMA-Factory's arguments, the adapter type), with a pruned model installed in the loader."""
    lf_cfg, ours = split_config(read_config(path, overrides))
    for key, value in ours.items():
        if not isinstance(value, PROJECT_KEYS[key]):
            raise LaunchError(f"{path}: {key} = {value!r}: expected {PROJECT_KEYS[key].__name__}")
    if ours.get("launcher", LAUNCHER) != LAUNCHER:
        raise LaunchError(f"{path}: launcher = {ours['launcher']!r}: the one launcher is {LAUNCHER}")
    try:
        peft_type = check_peft_type(ours.get("peft_type", "lora"))
    except PeftTypeError as e:
        raise LaunchError(f"{path}: {e}") from None
    if peft_type != "lora" and lf_cfg.get("finetuning_type", "lora") != "lora":
        raise LaunchError(f"{path}: peft_type {peft_type} needs finetuning_type: lora (the adapter path)")
    model_path = lf_cfg.get("model_name_or_path")
    if model_path and is_pruned(model_path):
        if lf_cfg.get("quantization_bit") is not None:
            raise LaunchError(f"{path}: quantization_bit: a pruned module is loaded as saved")
        try:
            install(model_path, trust_pickle or bool(ours.get("trust_pickle")), _compute_dtype(lf_cfg))
        except PrunedModelError as e:
            raise LaunchError(f"{path}: {e}") from None
    elif ours.get("trust_pickle"):
        raise LaunchError(f"{path}: trust_pickle is set but model_name_or_path {model_path!r} is not pruned")
    return lf_cfg, peft_type


def train(lf_cfg: dict, peft_type: str) -> None:
    from llamafactory.train.tuner import run_exp

    from plugins.launchers.peft_types import make_adalora_callback, use_peft_type

    callbacks = [make_adalora_callback()] if peft_type == "adalora" else []
    max_steps = lf_cfg.get("max_steps")
    total = max_steps if isinstance(max_steps, int) and max_steps > 0 else None
    with use_peft_type(peft_type, total_step=total):
        run_exp(lf_cfg, callbacks=callbacks)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--types":
        for name, what in PEFT_TYPES.items():
            print(f"{name:<8} {what}")
        return 0
    trust = "--trust-pickle" in argv
    argv = [a for a in argv if a != "--trust-pickle"]
    if not argv or argv[0] in ("-h", "--help") or not argv[0].endswith((".yaml", ".yml")):
        print(
            __doc__.split("Usage:")[1].rstrip(),
            file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr,
        )
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    try:
        lf_cfg, peft_type = prepare(argv[0], argv[1:], trust)
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if peft_type != "lora":
        print(f"{LAUNCHER}: peft_type {peft_type}: {PEFT_TYPES[peft_type]}", flush=True)
    train(lf_cfg, peft_type)
    return 0
