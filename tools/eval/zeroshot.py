"""Zero-shot accuracy through lm-eval (EleutherAI's harness) on a model already loaded in this process.

The model may be any causal LM module (a pruned one included): lm-eval's HFLM wraps the module and its
tokenizer as they are. Tasks:
- `python_mc` (templates/zeroshot/): a small multiple-choice task shipped here, which runs offline;
- LLM-Pruner's standard set (boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa)
  when the Hugging Face hub is reachable (lm-eval downloads them); otherwise each is recorded as
  unreachable, never as a score.
Each task's accuracy is `acc` (and `acc_norm`, length-normalised, where lm-eval reports it).

Usage: imported by tools.eval.recovery (`zero_shot(model, tokenizer, tasks)`).
"""

from __future__ import annotations

import socket
from pathlib import Path

import yaml

from tools.core.paths import TEMPLATES

LOCAL_TASKS = {"python_mc": TEMPLATES / "zeroshot" / "python_mc.yaml"}
STANDARD_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine skips hub data at once instead of waiting on retries."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def local_task_config(name: str) -> dict:
    """A shipped task's lm-eval config with its data file made absolute (lm-eval reads it from the CWD)."""
    path = LOCAL_TASKS[name]
    cfg = yaml.safe_load(path.read_text())
    files = cfg["dataset_kwargs"]["data_files"]
    cfg["dataset_kwargs"]["data_files"] = {k: str(Path(path).parent / v) for k, v in files.items()}
    return cfg


def expand(tasks: list[str]) -> list[str]:
    """`local` and `standard` stand for those sets; anything else is an lm-eval task name."""
    out: list[str] = []
    for t in tasks:
        out += list(LOCAL_TASKS) if t == "local" else list(STANDARD_TASKS) if t == "standard" else [t]
    return list(dict.fromkeys(out))


def zero_shot(model, tokenizer, tasks: list[str], batch_size: int = 8, limit: int | None = None) -> dict:
    """{task: {"acc": .., "acc_norm": .., "n": ..} or {"skipped": why}}."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    names = expand(tasks)
    results: dict[str, dict] = {}
    remote = [t for t in names if t not in LOCAL_TASKS]
    if remote and not hub_reachable():
        results.update({t: {"skipped": "the Hugging Face hub is not reachable"} for t in remote})
        remote = []
    wanted = [local_task_config(t) for t in names if t in LOCAL_TASKS] + remote
    if not wanted:
        return results
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(
        model=lm, tasks=wanted, task_manager=TaskManager(), limit=limit, log_samples=False, verbosity="ERROR"
    )
    for task, metrics in (out or {}).get("results", {}).items():
        row = {k.split(",")[0]: v for k, v in metrics.items() if k.split(",")[0] in ("acc", "acc_norm")}
        n = (out.get("n-samples") or {}).get(task, {})
        results[task] = {**{k: round(float(v), 4) for k, v in row.items()}, "n": n.get("effective")}
    return results
