"""PEFT adapter types LLaMA-Factory 0.9.5 has no key for (AdaLoRA, VeRA, LoHa, LoKr), trained by its own trainer.

LLaMA-Factory builds a `LoraConfig` from its `lora_*` arguments (target modules resolved from `lora_target:
all`, rank, alpha, dropout, modules to save) and hands it to `peft.get_peft_model`, which it imported into
`llamafactory.model.adapter`. That call is the seam: `use_peft_type` swaps it, inside this process only, for
one that translates the LoraConfig into the chosen type's config and calls PEFT's own `get_peft_model`.
Everything around it stays LLaMA-Factory's: the target discovery, the fp32 upcast of trainable weights,
the trainer, checkpointing, resuming (PeftModel.from_pretrained reads the saved type) and the
"trainable params" line. The saved adapter_config.json names its `peft_type`, so generation and export,
which load adapters through PeftModel.from_pretrained, need no change.

AdaLoRA also needs its rank re-allocation run every optimizer step (`update_and_allocate`, after the step
and before the gradients are zeroed): `AdaLoraCallback` does it from the Trainer's `on_optimizer_step`, and
sets AdaLoRA's schedule (total_step, tinit, tfinal) from the trainer's real step count when training begins.
"""

from __future__ import annotations

import contextlib
from typing import Any

# type -> what it changes (one line, shown by --help and the docs)
PEFT_TYPES = {
    "lora": "plain LoRA: LLaMA-Factory's own path, nothing swapped",
    "adalora": "AdaLoRA: SVD-form adapters whose ranks are re-allocated by importance during training",
    "vera": "VeRA: one frozen random A/B pair shared by all layers; only two scaling vectors per layer train",
    "loha": "LoHa: the update is a Hadamard product of two low-rank products (rank up to r^2)",
    "lokr": "LoKr: the update is a Kronecker product of a small matrix and a low-rank one",
}
# AdaLoRA starts every matrix at 1.5x the target rank and prunes down to it (the AdaLoRA paper's budget).
ADALORA_INIT_FACTOR = 1.5
ADALORA_PLACEHOLDER_STEPS = (
    1000  # AdaLoraConfig needs a total before the trainer knows it; reset at train begin
)


class PeftTypeError(ValueError):
    pass


def check_peft_type(name: Any) -> str:
    if name not in PEFT_TYPES:
        raise PeftTypeError(f"peft_type = {name!r}: use one of {', '.join(PEFT_TYPES)}")
    return str(name)


def convert_config(lora: Any, peft_type: str, total_step: int | None = None) -> Any:
    """The PEFT config of `peft_type` for what LLaMA-Factory's LoraConfig asks (targets, rank, alpha, dropout)."""
    import peft

    check_peft_type(peft_type)
    if peft_type == "lora":
        return lora
    targets = sorted(lora.target_modules) if isinstance(lora.target_modules, set) else lora.target_modules
    common = {
        "task_type": lora.task_type,
        "inference_mode": lora.inference_mode,
        "target_modules": targets,
        "modules_to_save": lora.modules_to_save,
    }
    if (
        lora.use_dora
        or getattr(lora, "use_rslora", False)
        or lora.init_lora_weights not in (True, "gaussian")
    ):
        raise PeftTypeError(
            f"peft_type {peft_type}: use_dora / use_rslora / pissa_init are LoRA-only options"
        )
    if peft_type == "adalora":
        steps = total_step or ADALORA_PLACEHOLDER_STEPS
        return peft.AdaLoraConfig(
            **common,
            init_r=max(lora.r, round(lora.r * ADALORA_INIT_FACTOR)),
            target_r=lora.r,
            lora_alpha=lora.lora_alpha,
            lora_dropout=lora.lora_dropout,
            total_step=steps,
            **adalora_schedule(steps),
        )
    if peft_type == "vera":
        # save_projection: the shared random A/B go into the adapter file, so it loads without the seed.
        return peft.VeraConfig(**common, r=lora.r, vera_dropout=lora.lora_dropout, save_projection=True)
    if peft_type == "loha":
        return peft.LoHaConfig(**common, r=lora.r, alpha=lora.lora_alpha, module_dropout=lora.lora_dropout)
    return peft.LoKrConfig(**common, r=lora.r, alpha=lora.lora_alpha, module_dropout=lora.lora_dropout)


def adalora_schedule(total_step: int) -> dict:
    """tinit / tfinal as shares of the run (AdaLoRA's warm-up and final fine-tuning phases), deltaT 1.

    10% warm-up at full budget, the last 20% at the final ranks, re-allocation every step in between;
    on a 2-3 step test run the final allocation still happens (tfinal >= 1).
    """
    tfinal = max(1, total_step // 5) if total_step > 1 else 0
    tinit = total_step // 10
    if tinit >= total_step - tfinal:
        tinit = 0
    return {"tinit": tinit, "tfinal": tfinal, "deltaT": 1}


def _adalora_model(model: Any) -> Any:
    """The AdaLoraModel inside a PeftModel (or None): the object that owns update_and_allocate."""
    inner = getattr(model, "base_model", None)
    return inner if inner is not None and hasattr(inner, "update_and_allocate") else None


def make_adalora_callback():
    from transformers import TrainerCallback

    class AdaLoraCallback(TrainerCallback):
        """Runs AdaLoRA's budget schedule: its total from the trainer, one re-allocation per optimizer step."""

        calls = 0

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            ada = _adalora_model(model)
            if ada is None:
                return
            cfg = ada.peft_config[ada.trainable_adapter_name]
            cfg.total_step = max(1, int(state.max_steps))
            for key, value in adalora_schedule(cfg.total_step).items():
                setattr(cfg, key, value)

        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            ada = _adalora_model(model)
            if ada is not None:  # after optimizer.step(), before zero_grad(): the gradients are still there
                ada.update_and_allocate(state.global_step)
                type(self).calls += 1

    return AdaLoraCallback()


@contextlib.contextmanager
def use_peft_type(peft_type: str, total_step: int | None = None):
    """Within the block, LLaMA-Factory's adapter setup builds a `peft_type` adapter instead of LoRA."""
    import peft
    from llamafactory.model import adapter

    check_peft_type(peft_type)
    original = adapter.get_peft_model

    def get_peft_model(model, peft_config, *args, **kwargs):
        if isinstance(peft_config, peft.LoraConfig) and peft_type != "lora":
            peft_config = convert_config(peft_config, peft_type, total_step)
        return peft.get_peft_model(model, peft_config, *args, **kwargs)

    adapter.get_peft_model = get_peft_model
    try:
        yield
    finally:
        adapter.get_peft_model = original
