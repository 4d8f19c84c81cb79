"""What a finished adapter run is made of (base model, template, adapter settings), or a clear refusal.

Shared by export and merge: both refuse a missing or unfinished run, a quantised base, and
adapters of different bases before loading anything.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from filelib import read_json_object
from tools.core.paths import Run
from tools.core.profiles import PROFILES, resolve_model_path, same_model
from tools.core.profiles import load_profile as _load_profile


class Refused(Exception):
    """Something that cannot work, said clearly before anything is written."""


# PEFT adapter types whose update folds into the base weights (merge_and_unload), as PEFT 0.18 implements
# them; any other type is refused by name before anything is loaded.
MERGEABLE_PEFT_TYPES = frozenset({"LORA", "ADALORA", "VERA", "LOHA", "LOKR", "OFT"})


def _rank(acfg: dict) -> int:
    """The largest rank: LoRA's rank_pattern holds ints, AdaLoRA's a keep-mask per module (its rank = kept)."""
    ranks = [int(acfg.get("r", 0) or 0)]
    for value in (acfg.get("rank_pattern") or {}).values():
        ranks.append(sum(map(bool, value)) if isinstance(value, list) else int(value))
    return max(ranks)


# ---------------------------------------------------------------- what a run is made of
def load_profile(model: str) -> dict | None:
    """The model profile, or None when there is no such profile (a broken one is still an error)."""
    if not (PROFILES / f"{model}.yaml").exists():
        return None
    return _load_profile(model)


def _read_json(path: Path) -> dict:
    try:
        return read_json_object(path)
    except ValueError as e:
        raise Refused(str(e)) from None


def check_safetensors(path: Path) -> None:
    """A .safetensors file whose header and tensor data are complete (a truncated copy is refused
    here, by name, rather than failing inside PEFT or torch with a traceback)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n <= 0 or 8 + n > size:
            raise Refused(f"{path}: truncated or not a safetensors file ({size} bytes; header says {n})")
        try:
            header = json.loads(f.read(n))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            raise Refused(f"{path}: broken safetensors header") from None
    if 8 + n + end != size:
        raise Refused(
            f"{path}: truncated ({size} bytes, its header needs {8 + n + end}): copy it again or retrain"
        )


def run_info(run: Run) -> dict[str, Any]:
    """A finished adapter run's base model, template and adapter settings, or a clear refusal.

    Base model and template come from run.json, else adapter_config.json's
    base_model_name_or_path and the model profile (templates/profiles/<model>.yaml).
    """
    out = run.output_dir
    if run.is_base:
        raise Refused(f"run {run}: the base model has no adapter to export or merge")
    if not out.exists():
        raise Refused(f"run {run}: no output folder {out} (train it first: make sweep / tools.flows.sweep)")
    rj = _read_json(run.run_json) if run.run_json.exists() else {}
    if not run.is_finished() or rj.get("status", "finished") != "finished":
        missing = [p.name for p in (run.done_marker, run.adapter) if not p.exists()]
        raise Refused(
            f"run {run} is not finished (status {rj.get('status', 'unknown')!r}"
            + (f", missing {', '.join(missing)}" if missing else "")
            + f" in {out}): finish or retrain it first"
        )
    if run.is_full_model:
        raise Refused(
            f"run {run} trained the model's own weights (finetuning_type "
            f"{(rj.get('resolved_config') or {}).get('finetuning_type', 'full')}): {out} already is the whole "
            "model, with no adapter to merge; evaluate or copy it as it is"
        )
    acfg_path = run.adapter_dir / "adapter_config.json"  # an epoch's checkpoint folder, or the run's
    if not acfg_path.exists():
        raise Refused(f"run {run}: no adapter_config.json in {run.adapter_dir}")
    acfg = _read_json(acfg_path)
    for weights in run.adapter_dir.glob("adapter_model*.safetensors"):
        try:
            check_safetensors(weights)
        except Refused as e:
            raise Refused(f"run {run}: {e}") from None
    peft_type = str(acfg.get("peft_type") or "LORA").upper()
    if peft_type not in MERGEABLE_PEFT_TYPES:
        raise Refused(
            f"run {run}: its adapter is a {peft_type} adapter ({acfg_path}), which PEFT cannot merge into the "
            f"base weights (mergeable: {', '.join(sorted(MERGEABLE_PEFT_TYPES))}); serve it as an adapter"
        )
    profile = load_profile(run.model) or {}
    base = (
        rj.get("model_name_or_path")
        or acfg.get("base_model_name_or_path")
        or profile.get("model_name_or_path")
    )
    template = rj.get("template") or profile.get("template")
    if not base:
        raise Refused(f"run {run}: no base model in run.json, adapter_config.json or profile {run.model}")
    if not template:
        raise Refused(f"run {run}: no template in run.json or templates/profiles/{run.model}.yaml")
    trained_on = acfg.get("base_model_name_or_path")
    if trained_on and not same_model(trained_on, base):
        raise Refused(
            f"run {run}: its adapter was trained on {trained_on!r} ({acfg_path}) but run.json names "
            f"{base!r}: an adapter of another base model"
        )
    resolved = rj.get("resolved_config") or {}
    if resolved.get("create_new_adapter") and resolved.get("adapter_name_or_path"):
        raise Refused(
            f"run {run} stacks a new adapter on {resolved['adapter_name_or_path']} (create_new_adapter): "
            "its folder holds only the top adapter; merge the earlier one first"
        )
    qbit = resolved.get("quantization_bit") or (rj.get("hparams") or {}).get("quantization_bit")
    return {
        "run": run.name,
        "adapter_dir": str(run.adapter_dir),
        "model_name_or_path": base,
        "base_path": resolve_model_path(base),
        "template": template,
        "quantization_bit": qbit,
        "rank": _rank(acfg),
        "peft_type": peft_type,
        "use_dora": bool(acfg.get("use_dora")),
        "run_json": rj,
        "profile": profile,
    }


def refuse_quantised_base(info: dict, allow_full_precision_base: bool = False) -> None:
    """A LoRA adapter cannot be merged into a quantised base; a QLoRA run only into its fp base."""
    cfg = Path(info["base_path"]) / "config.json"
    if cfg.exists() and json.loads(cfg.read_text()).get("quantization_config"):
        raise Refused(
            f"run {info['run']}: base model {info['base_path']} is quantised; a LoRA adapter cannot be "
            "merged into quantised weights. Merge into the full-precision base, then quantise (--quantize)."
        )
    if info["quantization_bit"] and not allow_full_precision_base:
        raise Refused(
            f"run {info['run']} was trained on a {info['quantization_bit']}-bit quantised base (QLoRA): "
            "merging into a quantised base is not possible. Pass --full-precision-base to merge into "
            f"{info['model_name_or_path']} unquantised (LLaMA-Factory's advice for QLoRA); the result "
            "differs slightly from the model that was trained and evaluated."
        )


def default_dtype(info: dict) -> str:
    """float32 on CPU profiles; the precision the run trained in on GPU profiles."""
    cfg = {**(info.get("profile") or {}), **((info.get("run_json") or {}).get("resolved_config") or {})}
    if cfg.get("bf16") or cfg.get("precision") == "bf16":
        return "bfloat16"
    if cfg.get("fp16") or cfg.get("precision") == "fp16":
        return "float16"
    return "float32"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("llamafactory", "transformers", "peft", "torch"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out
