"""What a quantised export needs, checked before anything is merged or written.

LLaMA-Factory's export checks GPTQ's packages (`optimum>=1.24.0`, `gptqmodel>=2.0.0`) only when it loads the
model to quantise it: after `tools.export` has merged the adapter, written the export YAML and the calibration
file. `check_quantize` asks the same questions first (the packages, and a CUDA GPU: gptqmodel quantises on
one) and refuses with the commands that install what is missing.
"""

from __future__ import annotations

import importlib.util

# package -> LLaMA-Factory 0.9.5's requirement (llamafactory/model/model_utils/quantization.py)
GPTQ_PACKAGES = {"optimum": "optimum>=1.24.0", "gptqmodel": "gptqmodel>=2.0.0"}
INSTALL = {
    "optimum": "make setup-gpu (requirements-gpu.lock pins optimum)",
    "gptqmodel": "pip install 'gptqmodel>=2.0.0' (not pinned: see requirements-gpu.lock for a venv that holds it)",
}


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def quantize_problems(bits: int) -> list[str]:
    """Why a `--quantize bits` export cannot run here (empty when it can)."""
    problems = [
        f"GPTQ needs {need}, not installed: {INSTALL[name]}"
        for name, need in GPTQ_PACKAGES.items()
        if not _importable(name)
    ]
    if not _cuda():
        problems.append(
            "GPTQ quantises on a CUDA GPU and there is none here (run the export on a GPU machine)"
        )
    return problems


def check_quantize(bits: int, refused: type[Exception] = ValueError) -> None:
    """Raise `refused` naming every missing need of a `--quantize bits` export; nothing has been written."""
    problems = quantize_problems(bits)
    if problems:
        raise refused(f"--quantize {bits}: " + "; ".join(problems) + " (nothing was merged or written)")
