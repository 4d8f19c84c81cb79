"""One short LoRA run on the embedded model: the first thing `make demo` grew from.

Writes 24 instruction rows built from Python's own documentation (the docstrings of builtins,
so nothing third-party is shipped), registers them in a private dataset_dir, trains LoRA r8 for
6 steps with LLaMA-Factory and prints where the adapter and TensorBoard events are.

Usage:
    python -m tools.train.smoke [--model models/smollm2-135m-instruct] [--steps 6] [--lr 2e-4] [--out saves/...]
"""

from __future__ import annotations

import builtins
import inspect
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from filelib import atomic_write_json, atomic_write_text, run_main
from tools.core.args import command, opt
from tools.core.paths import Run, llamafactory_cli
from tools.models import BASE_MODEL_DIR

SMOKE_RUN = Run("smollm2_135m", "smoke", "r8")


def doc_rows(n: int = 24) -> list[dict]:
    rows = []
    for name in sorted(dir(builtins)):
        obj = getattr(builtins, name)
        doc = inspect.getdoc(obj)
        if (
            name.startswith("_")
            or not callable(obj)
            or not doc
            or isinstance(obj, type)
            and issubclass(obj, BaseException)
        ):
            continue
        rows.append(
            {"instruction": f"What does the Python built-in `{name}` do?", "input": "", "output": doc}
        )
        if len(rows) == n:
            break
    return rows


def write_config(model: Path, steps: int, output_dir: Path, dataset_dir: Path, lr: float = 2.0e-4) -> Path:
    """The smoke config, in LLaMA-Factory's sections; the real grids come from templates/."""
    cfg = {
        "model_name_or_path": str(model),
        "template": "smollm2",
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_target": "all",
        "lora_rank": 8,
        "lora_alpha": 16,
        "dataset": "smoke_docs",
        "dataset_dir": str(dataset_dir),
        "cutoff_len": 256,
        "max_steps": steps,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": lr,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "tensorboard",
        "output_dir": str(output_dir),
        "overwrite_output_dir": True,
        "seed": 42,
    }
    path = dataset_dir / "smoke.yaml"
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(
    model: Path = BASE_MODEL_DIR, steps: int = 6, output_dir: Path | None = None, lr: float = 2.0e-4
) -> Path:
    output_dir = output_dir or SMOKE_RUN.output_dir
    dataset_dir = output_dir.parent / f".{output_dir.name}-data"
    atomic_write_json(dataset_dir / "smoke_docs.json", doc_rows())
    atomic_write_json(dataset_dir / "dataset_info.json", {"smoke_docs": {"file_name": "smoke_docs.json"}})
    cfg = write_config(model, steps, output_dir, dataset_dir, lr)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir.parent / f"{output_dir.name}.log", "w") as log:
        proc = subprocess.run([*llamafactory_cli(), "train", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"smoke run failed (exit {proc.returncode}); log: {log.name}")
    return output_dir


@dataclass
class SmokeArgs:
    model: Path = opt(BASE_MODEL_DIR, help="the model folder to train")
    steps: int = opt(6, help="optimizer steps", min=1)
    out: Path | None = opt(None, help="the run folder (default: a temporary one)")
    lr: float = opt(2.0e-4, help="learning rate", positive=True)


@command(SmokeArgs, __doc__)
def main(a: SmokeArgs) -> int:
    t0 = time.time()
    out = run(a.model, a.steps, a.out, a.lr)
    print(f"smoke run: adapter {out / 'adapter_model.safetensors'}")
    print(f"           TensorBoard events under {out / 'runs'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    run_main(main)
