"""Preflight: what a sweep needs, checked before it spends anything (GPU hours, downloads, disk).

  - a GPU for GPU profiles (profile `capabilities`: cuda, bf16) and bitsandbytes for quantised runs
    (`quantization_bit`), liger-kernel for `enable_liger_kernel`;
  - the base model reachable: a local folder, or in the Hugging Face cache, or (online) accessible on
    the hub. LLaMA-2 is a gated model: accept its licence on its hub page with your account, then
    `hf auth login`, or export HF_TOKEN=hf_...;
  - the weights at hand (a folder, the cache, or online); with only the model's config.json at hand the
    check fails but the bills are still computed and shown;
  - free disk for what the study keeps (each run's final weights and its checkpoints: `save_total_limit`,
    null = all of them, one per epoch or `save_steps`; a full-model method saves the whole model);
  - a memory bill per run (tools/train/memory.py: the run's model, with its method, built on the meta
    device), printed, each run checked against the device's memory (a run that does not fit is named),
    and stored in run.json as `memory_estimate` beside the measured `peak_gpu_mb` / `peak_rss_mb`.

A failed check refuses the sweep with exit status 2 before anything is written; `--skip-preflight`
on the sweep overrides it. The command (`python -m tools.flows.preflight`) adds the evaluation's checks.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from plugins.launchers import is_pruned
from tools.core.hub import hub_id_shaped, hub_reachable
from tools.core.paths import out_root
from tools.core.profiles import ConfigError, load_profile, local_model, resolve_model_path
from tools.train.configs import Rendered
from tools.train.memory import MB, PUBLISHED, bill, disk_mb, render_bill
from tools.train.structure import StructureError, pruned_manifest

GATED_HELP = (
    "it is a gated model: open https://huggingface.co/{repo} while logged in and accept its licence, then "
    "`hf auth login` or export HF_TOKEN=hf_... on this machine"
)


class PreflightError(ConfigError):
    """A check failed: the sweep refuses before spending anything."""


@dataclass
class Report:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    bills: dict[str, dict] = field(default_factory=dict)  # variant -> memory bill (MB)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))

    def lines(self) -> list[str]:
        out = [f"preflight {'ok  ' if ok else 'FAIL'} {name}: {detail}" for name, ok, detail in self.checks]
        out += [f"preflight memory {v}: {render_bill(b)}" for v, b in self.bills.items()]
        return out


# ---------------------------------------------------------------------------------------- devices
def device_info() -> dict:
    """What this machine has: cuda (bool), bf16, GPU memory (MB) and system memory (MB)."""
    import torch

    info = {"cuda": torch.cuda.is_available(), "bf16": False, "gpu_mb": None, "gpu_name": None}
    if info["cuda"]:
        props = torch.cuda.get_device_properties(0)
        info.update(bf16=torch.cuda.is_bf16_supported(), gpu_mb=props.total_memory // MB, gpu_name=props.name)
    pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    info["ram_mb"] = pages * size // MB
    return info


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ---------------------------------------------------------------------------------------- the model
def model_config(ref: str) -> tuple[dict | None, str]:
    """(config.json, where it came from) for a local folder or a hub id, or (None, why not)."""
    local = local_model(ref)
    if local is not None:
        cfg = local / "config.json"
        if not cfg.exists():
            return (
                None,
                f"{local}: no config.json (not a model folder; for the embedded one: make base-model)",
            )
        return json.loads(cfg.read_text()), f"local folder {local}"
    if not hub_id_shaped(ref):
        return None, f"{ref}: neither a folder here nor a hub id (org/name)"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(ref, "config.json")
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text()), f"Hugging Face cache ({Path(cached).parents[2].name})"
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        gated = ", and " + GATED_HELP.format(repo=ref) if ref.startswith("meta-llama/") else ""
        return None, (
            f"{ref} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: download it first on a machine "
            f"with internet (hf download {ref}){gated}"
        )
    return _hub_config(ref)


def _hub_config(ref: str) -> tuple[dict | None, str]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    gated = "; " + GATED_HELP.format(repo=ref) if ref.startswith("meta-llama/") else ""
    if not hub_reachable():  # at once, not after the client's five retries
        return None, f"{ref}: not in the Hugging Face cache and the hub is not reachable from here{gated}"
    try:
        path = hf_hub_download(ref, "config.json", etag_timeout=10)
    except GatedRepoError:
        return None, f"{ref}: no access; " + GATED_HELP.format(repo=ref)
    except RepositoryNotFoundError:
        return None, f"{ref}: no such model on the hub (or private: log in, see HF_TOKEN)"
    except Exception as e:  # offline, DNS, proxy: the sweep would fail the same way after loading
        return (
            None,
            f"{ref}: the hub is not reachable ({type(e).__name__}); set HF_HUB_OFFLINE=1 with a cached copy",
        )
    return json.loads(
        Path(path).read_text()
    ), "the hub (config.json fetched; the weights download at the first run)"


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def weights_at_hand(ref: str) -> tuple[bool, str]:
    """Whether the model's weights are here (a folder or a pruned file, the Hugging Face cache) or will
    download (online); (False, what to do) when only its config is."""
    local = local_model(ref)
    if local is not None:
        if (
            local.is_file()
            or any((local / f).exists() for f in WEIGHT_FILES)
            or any(local.glob("*.safetensors"))
        ):
            return True, "weights here"
        return False, f"{local} holds config.json but no weights (*.safetensors / *.bin)"
    from huggingface_hub import try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(ref, f), str) for f in WEIGHT_FILES):
        return True, "weights in the cache"
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return (
            False,
            f"only config.json of {ref} is in the cache: download the weights (hf download {ref})",
        )
    return True, "the weights download at the first run"


def run_model_config(cfg: dict, base_ref: str, base_mc: dict | None) -> tuple[dict | None, str | None, str]:
    """(model config, pruned model path, where) for one run: the run's own model when it names another
    (a pruned model, an expanded LLaMA-Pro folder), the profile's otherwise; LLaMA-Pro's expanded model,
    when not built yet, as the base with `freeze_trainable_layers` more layers."""
    ref = resolve_model_path(str(cfg.get("model_name_or_path") or base_ref))
    if ref == base_ref:
        return base_mc, None, "the profile's model"
    try:
        if pruned_manifest(ref, bool(cfg.get("trust_pickle"))) is not None:
            return base_mc, ref, f"the pruned model {ref} (its real widths)"
    except StructureError as e:
        return None, None, str(e)
    mc, where = model_config(ref)
    if mc is not None:
        return mc, None, where
    if cfg.get("use_llama_pro") and base_mc is not None:
        n = int(cfg.get("freeze_trainable_layers", 0))
        return (
            dict(base_mc, num_hidden_layers=base_mc["num_hidden_layers"] + n),
            None,
            f"the base + {n} blocks",
        )
    return None, None, where


# ---------------------------------------------------------------------------------------- checks
def check(
    rendered: list[Rendered],
    model: str,
    dev: dict | None = None,
    disk_root: Path | None = None,
    remote: str | None = None,
) -> Report:
    """Every check for these runs of one profile; nothing is written. `remote`: the runs train on a Ray
    cluster at that address, so this machine's GPU and memory are not the ones that count."""
    rep = Report()
    prof = load_profile(model)
    caps = set(prof.get("capabilities") or [])
    dev = dev if dev is not None else device_info()
    gpu = "cuda" in caps
    if remote:
        rep.add("gpu", True, f"runs go to the Ray cluster at {remote}: its GPUs are not checked from here")
        dev = dict(dev, gpu_mb=None, ram_mb=None)
    elif gpu:
        ok = dev["cuda"]
        rep.add(
            "gpu",
            ok,
            f"{dev['gpu_name']} ({dev['gpu_mb']} MB)"
            if ok
            else f"profile {model} needs a CUDA GPU; none here",
        )
        if "bf16" in caps and ok and not dev["bf16"]:
            rep.add(
                "bf16", False, f"profile {model} trains in bf16; this GPU has none (use llama2_7b_t4: fp16)"
            )
    cfgs = [r.config for r in rendered]
    if any(c.get("quantization_bit") for c in cfgs):
        ok = _importable("bitsandbytes")
        rep.add(
            "bitsandbytes", ok, "installed" if ok else "quantization_bit needs bitsandbytes: make setup-gpu"
        )
    if any(c.get("enable_liger_kernel") for c in cfgs):
        ok = _importable("liger_kernel")
        rep.add(
            "liger-kernel",
            ok,
            "installed" if ok else "enable_liger_kernel needs liger-kernel: make setup-gpu",
        )
    ref = resolve_model_path(str(prof["model_name_or_path"]))
    refs = {resolve_model_path(str(r.config.get("model_name_or_path") or ref)) for r in rendered}
    if len(refs) == 1 and not is_pruned(next(iter(refs))):  # `--set model_name_or_path=...`: that model
        ref = refs.pop()
    mc, where = model_config(ref)
    if mc is None:
        rep.add("model", False, where)
        if ref in PUBLISHED:  # still billed: the config as its publisher ships it
            mc = PUBLISHED[ref]
            rep.add("bill", True, f"billed on {ref}'s config.json as published (tools/train/memory.py)")
    else:
        ok, detail = weights_at_hand(ref)
        rep.add("model", ok, f"{ref}: {where}; {detail}")
    device = "cuda" if gpu else "cpu"
    disk, problems = 0.0, []
    for r in rendered:
        run_mc, pruned, why = run_model_config(r.config, ref, mc)
        if run_mc is None and pruned is None:
            problems.append(f"{r.run.variant}: {why}")
            continue
        try:
            rep.bills[r.run.variant] = bill(r.config, run_mc, device, model_path=pruned)
            if not r.run.is_finished():
                disk += disk_mb(r.config, run_mc, r.config.get("train_rows"), model_path=pruned)
        except (StructureError, ValueError, KeyError, OSError) as e:
            problems.append(f"{r.run.variant}: no bill ({type(e).__name__}: {e})")
    if problems:
        rep.add("bill", False, "; ".join(problems))
    limit = dev["gpu_mb"] if gpu else dev["ram_mb"]
    if rep.bills and limit:
        what = "GPU" if gpu else "system"
        worst = max(rep.bills, key=lambda v: rep.bills[v]["total_mb"])
        over = [v for v, b in rep.bills.items() if b["total_mb"] > limit]
        need = rep.bills[worst]["total_mb"]
        detail = f"largest run ({worst}) needs ~{need / 1024:.1f} GB of {limit / 1024:.1f} GB {what} memory"
        if over:
            sizes = ", ".join(f"{v} ~{rep.bills[v]['total_mb'] / 1024:.1f} GB" for v in over)
            detail += f"; too big: {sizes}"
            detail += " (a smaller per_device_train_batch_size or cutoff_len, a LoRA method, or QLoRA: llama2_7b_t4)"
        rep.add("memory", not over, detail)
    root = disk_root or out_root()
    probe = next((p for p in (root, *root.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free / MB
    if rep.bills:
        rep.add(
            "disk",
            free >= disk,
            f"{disk:.0f} MB for final weights and checkpoints, {free / 1024:.1f} GB free under {probe}",
        )
    return rep
