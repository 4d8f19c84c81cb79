"""What LLaMA-Factory lacks at training time: adapter types it has no key for (`peft_types`), pruned models
it cannot load from a folder (`pruned`), and the one launcher that supplies both to its `run_exp` (`launch`,
started as `python -m plugins.launchers CONFIG`)."""

from plugins.launchers.launch import (
    LAUNCHER,
    PROJECT_KEYS,
    LaunchError,
    install,
    needs_launcher,
    read_config,
    split_config,
)
from plugins.launchers.launch import main as launch_main
from plugins.launchers.peft_types import PEFT_TYPES, PeftTypeError, check_peft_type, use_peft_type
from plugins.launchers.pruned import (
    PrunedModelError,
    build_from_manifest,
    is_pruned,
    layer_widths,
    load,
    param_count,
    resize_layer,
    save_hf,
    save_like,
    save_pickle,
    save_safe,
    uniform_widths,
)

__all__ = [
    "LAUNCHER",
    "PEFT_TYPES",
    "PROJECT_KEYS",
    "LaunchError",
    "PeftTypeError",
    "PrunedModelError",
    "build_from_manifest",
    "check_peft_type",
    "install",
    "is_pruned",
    "launch_main",
    "layer_widths",
    "load",
    "needs_launcher",
    "param_count",
    "read_config",
    "resize_layer",
    "save_hf",
    "save_like",
    "save_pickle",
    "save_safe",
    "split_config",
    "uniform_widths",
    "use_peft_type",
]
