"""`llamafactory-cli train` for a config whose `peft_type` LLaMA-Factory has no key for (AdaLoRA, VeRA, LoHa, LoKr).

LLaMA-Factory's parser refuses keys it does not know, so `peft_type` rides in our rendered YAML and this
launcher takes it out: it reads the YAML, removes `peft_type`, and runs LLaMA-Factory's own `run_exp` on
the rest with its adapter setup building that type (plugins.peft_types.use_peft_type) and, for AdaLoRA,
the rank re-allocation callback. Everything else (data, trainer, checkpoints, logs, the saved adapter)
is LLaMA-Factory's, so a killed run resumes the same way (resume_from_checkpoint in the YAML).

Usage:
    python -m plugins.peft_train CONFIG.yaml [key=value ...]    # the overrides, as llamafactory-cli takes them
    python -m plugins.peft_train --types                         # the adapter types it trains
"""

from __future__ import annotations

import sys
from pathlib import Path

from plugins.peft_types import PEFT_TYPES, PeftTypeError, check_peft_type

PLUGIN_KEY = "peft_type"


def read_config(path: Path, overrides: list[str] | None = None) -> tuple[dict, str]:
    """(LLaMA-Factory's arguments without our key, the adapter type); the overrides as llamafactory-cli reads them."""
    from omegaconf import OmegaConf

    if not path.exists():
        raise PeftTypeError(f"{path}: no such config")
    merged = OmegaConf.merge(OmegaConf.load(path.absolute()), OmegaConf.from_cli(list(overrides or [])))
    args = OmegaConf.to_container(merged)
    if not isinstance(args, dict):
        raise PeftTypeError(f"{path}: not a mapping of LLaMA-Factory arguments")
    peft_type = check_peft_type(args.pop(PLUGIN_KEY, "lora"))
    if peft_type != "lora" and args.get("finetuning_type", "lora") != "lora":
        raise PeftTypeError(f"{path}: peft_type {peft_type} needs finetuning_type: lora (the adapter path)")
    return args, peft_type


def train(args: dict, peft_type: str) -> None:
    from llamafactory.train.tuner import run_exp

    from plugins.peft_types import make_adalora_callback, use_peft_type

    callbacks = [make_adalora_callback()] if peft_type == "adalora" else []
    max_steps = args.get("max_steps")
    with use_peft_type(
        peft_type, total_step=max_steps if isinstance(max_steps, int) and max_steps > 0 else None
    ):
        run_exp(args, callbacks=callbacks)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    if argv[0] == "--types":
        for name, what in PEFT_TYPES.items():
            print(f"{name:<8} {what}")
        return 0
    try:
        args, peft_type = read_config(Path(argv[0]), argv[1:])
    except PeftTypeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"plugins.peft_train: peft_type {peft_type}: {PEFT_TYPES[peft_type]}", flush=True)
    train(args, peft_type)
    return 0


if __name__ == "__main__":
    sys.exit(main())
