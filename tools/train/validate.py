"""Rendered configs checked as LLaMA-Factory parses them: its dataclasses, its field types, no extra keys."""

from __future__ import annotations

from functools import cache
from typing import Any

from plugins.launchers import LAUNCHER, PEFT_TYPES, PROJECT_KEYS
from tools.core.profiles import ConfigError

TEMPLATE_ONLY_TYPES: dict[str, tuple[type, ...]] = {
    "precision": (str,),
    "lora_alpha_per_rank": (int, float),
    "continue_from": (str,),
    "train_rows": (int,),
    "devices": (int,),
    "step_budget_epochs": (int, float),
    "max_steps_cap": (int,),
    "eval_testset": (str,),
    "pruned_model": (str,),
    "llama_pro_blocks": (int,),
    "llama_pro_model": (str,),
}
PRECISIONS = ("fp32", "bf16", "fp16")


@cache
def _lf_field_types() -> dict[str, Any]:
    """LLaMA-Factory's training arguments: name -> annotation, from its own dataclasses."""
    import typing

    from llamafactory.hparams.parser import _TRAIN_ARGS

    types: dict[str, Any] = {}
    for cls in _TRAIN_ARGS:
        types.update(typing.get_type_hints(cls))
    return types


def _accepts(annotation: Any, value: Any) -> bool:
    import enum
    import types as pytypes
    import typing

    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, pytypes.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None) or value is None:
        return annotation is type(None) and value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in {m.value for m in annotation} or value in annotation.__members__
    if origin in (list, dict) or annotation in (list, dict):
        return isinstance(value, origin or annotation)
    return True  # an annotation this check does not model: LLaMA-Factory's parser has the last word


def check_value(key: str, value: Any, where: str) -> None:
    """A value a profile, study or variant sets: the right type for the key it sets."""
    if key in PROJECT_KEYS:
        # the launcher's keys (plugins.launchers), removed before LLaMA-Factory reads the rest
        ok, want = isinstance(value, PROJECT_KEYS[key]), PROJECT_KEYS[key].__name__
        if key == "peft_type" and ok and value not in PEFT_TYPES:
            raise ConfigError(f"{where}: peft_type = {value!r}: use one of {', '.join(PEFT_TYPES)}")
        if key == "launcher" and ok and value != LAUNCHER:
            raise ConfigError(f"{where}: launcher = {value!r}: the one launcher is {LAUNCHER}")
    elif key in TEMPLATE_ONLY_TYPES:
        ok = value is None or (isinstance(value, TEMPLATE_ONLY_TYPES[key]) and not isinstance(value, bool))
        if key == "precision" and value not in PRECISIONS:
            raise ConfigError(f"{where}: precision = {value!r}: use one of {PRECISIONS}")
        want = " or ".join(t.__name__ for t in TEMPLATE_ONLY_TYPES[key])
    else:
        ann = _lf_field_types().get(key)
        # None leaves a key to the template (save_steps: none -> a checkpoint per epoch); where the
        # template writes it out, LLaMA-Factory's own parse of the rendered file has the last word
        ok = ann is None or value is None or _accepts(ann, value)
        want = ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "")
    if not ok:
        raise ConfigError(f"{where}: {key} = {value!r} is a {type(value).__name__}; it must be {want}")


# Template variables with an obvious range: (lowest, lowest allowed, highest, highest allowed).
AT_LEAST_1, POSITIVE, NONNEG = (1, True, None, False), (0, False, None, False), (0, True, None, False)
RANGES: dict[str, tuple] = {
    **dict.fromkeys(("lora_rank", "per_device_train_batch_size", "per_device_eval_batch_size"), AT_LEAST_1),
    **dict.fromkeys(("gradient_accumulation_steps", "devices", "train_rows", "cutoff_len"), AT_LEAST_1),
    **dict.fromkeys(("max_samples", "max_steps_cap", "llama_pro_blocks"), AT_LEAST_1),
    **dict.fromkeys(("lora_alpha", "lora_alpha_per_rank", "learning_rate", "num_train_epochs"), POSITIVE),
    **dict.fromkeys(("step_budget_epochs", "max_grad_norm"), POSITIVE),
    **dict.fromkeys(("warmup_steps", "weight_decay", "seed"), NONNEG),
    "val_size": POSITIVE,  # a share below 1, a count of rows above
    "lora_dropout": (0, True, 1, False),
}


def range_problems(values: dict, where: str, form: str = "{where}: {key} = {value!r}") -> list[str]:
    """Every number outside its variable's range (NaN and infinity too), one line each."""
    import math

    out = []
    for key, value in values.items():
        if key not in RANGES or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # None leaves it to the template; a wrong type is check_value's to name
        low, low_in, high, high_in = RANGES[key]
        name = form.format(where=where, key=key, value=value)
        if not math.isfinite(value):
            out.append(f"{name}: must be a finite number")
        elif (value < low) if low_in else (value <= low):
            out.append(f"{name}: must be {'at least' if low_in else 'above'} {low}")
        elif high is not None and ((value > high) if high_in else (value >= high)):
            out.append(f"{name}: must be {'at most' if high_in else 'below'} {high}")
    return out


def check_ranges(values: dict, where: str, form: str = "{where}: {key} = {value!r}") -> None:
    problems = range_problems(values, where, form)
    if problems:
        raise ConfigError("\n".join(problems))


@cache
def _train_parser():
    """LLaMA-Factory's own parser for `llamafactory-cli train` (hparams/parser.py: _TRAIN_ARGS)."""
    from llamafactory.hparams.parser import _TRAIN_ARGS
    from transformers import HfArgumentParser

    return HfArgumentParser(_TRAIN_ARGS)


def validate_config(cfg: dict, where: str) -> None:
    """The rendered config as LLaMA-Factory 0.9.5 parses it: its dataclasses, no extra keys, right types.

    The parse runs with `use_cpu` so a bf16 GPU config validates on a CPU-only machine (the device
    check belongs to the machine that trains, the keys and values to CI).
    """
    import contextlib
    import io
    import logging

    from llamafactory.hparams.parser import _verify_model_args

    for key, value in cfg.items():
        if key in _lf_field_types() or key in PROJECT_KEYS:
            check_value(key, value, where)
    check_ranges(cfg, where)
    if cfg.get("peft_type", "lora") != "lora" and cfg.get("finetuning_type", "lora") != "lora":
        raise ConfigError(f"{where}: peft_type {cfg['peft_type']} needs finetuning_type: lora")
    cfg = {k: v for k, v in cfg.items() if k not in PROJECT_KEYS}
    parser = _train_parser()
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            model_args, data_args, _, finetuning_args, _ = parser.parse_dict(
                {**cfg, "use_cpu": True}, allow_extra_keys=False
            )
        _verify_model_args(model_args, data_args, finetuning_args)
    except (ValueError, TypeError, AssertionError) as e:
        raise ConfigError(f"{where}: LLaMA-Factory rejects this config: {e}") from e
    finally:
        logging.disable(logging.NOTSET)
