"""Preflight: what a sweep needs, checked before it spends anything (GPU hours, downloads, disk).

  - a GPU for GPU profiles (profile `capabilities`: cuda, bf16) and bitsandbytes for quantised runs
    (`quantization_bit`), liger-kernel for `enable_liger_kernel`;
  - the base model reachable: a local folder, or in the Hugging Face cache, or (online) accessible on
    the hub. LLaMA-2 is a gated model: accept its licence on its hub page with your account, then
    `huggingface-cli login` (or `hf auth login`), or export HF_TOKEN=hf_...;
  - free disk for what the study keeps (each run's adapter and `save_total_limit` checkpoints);
  - a memory bill per run (tools/train/memory.py), printed, checked against the device's memory, and
    stored in run.json as `memory_estimate` beside the measured `peak_gpu_mb` / `peak_rss_mb`.

A failed check refuses the sweep with exit status 2 before anything is written; `--skip-preflight`
on the sweep overrides it. The command (`python -m tools.flows.preflight`) adds the evaluation's checks.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tools.core.hub import hub_reachable
from tools.core.paths import out_root
from tools.core.profiles import ConfigError, load_profile, local_model, resolve_model_path
from tools.train.configs import Rendered
from tools.train.memory import MB, bill, disk_mb, render_bill

GATED_HELP = (
    "it is a gated model: open https://huggingface.co/{repo} while logged in and accept its licence, then "
    "`huggingface-cli login` (or `hf auth login`) or export HF_TOKEN=hf_... on this machine"
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
    if "/" not in ref:
        return None, f"{ref}: neither a folder nor a hub id (org/name)"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(ref, "config.json")
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text()), f"Hugging Face cache ({Path(cached).parents[2].name})"
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        gated = ", and " + GATED_HELP.format(repo=ref) if ref.startswith("meta-llama/") else ""
        return None, (
            f"{ref} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: download it first on a machine "
            f"with internet (huggingface-cli download {ref}){gated}"
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
    mc, where = model_config(ref)
    rep.add("model", mc is not None, f"{ref}: {where}" if mc is not None else where)
    if mc is None:
        return rep
    device = "cuda" if gpu else "cpu"
    for r in rendered:
        rep.bills[r.run.variant] = bill(r.config, mc, device)
    worst = max(rep.bills.values(), key=lambda b: b["total_mb"], default=None)
    limit = dev["gpu_mb"] if gpu else dev["ram_mb"]
    if worst is not None and limit:
        ok = worst["total_mb"] <= limit
        what = "GPU" if gpu else "system"
        rep.add(
            "memory",
            ok,
            f"largest run needs ~{worst['total_mb'] / 1024:.1f} GB of {limit / 1024:.1f} GB {what} memory"
            + (
                "" if ok else " (a smaller per_device_train_batch_size or cutoff_len, or QLoRA: llama2_7b_t4)"
            ),
        )
    need = sum(disk_mb(r.config, mc) for r in rendered if not r.run.is_finished())
    root = disk_root or out_root()
    probe = next((p for p in (root, *root.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free / MB
    rep.add(
        "disk",
        free >= need,
        f"{need:.0f} MB for adapters and checkpoints, {free / 1024:.1f} GB free under {probe}",
    )
    return rep
