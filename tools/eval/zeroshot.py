"""Zero-shot accuracy through lm-eval (EleutherAI's harness) on a model already loaded in this process.

The model may be any causal LM module (a pruned one included): lm-eval's HFLM wraps the module and its
tokenizer as they are. Tasks:
- `python_mc` (templates/zeroshot/): a small multiple-choice task shipped here, which runs offline;
- LLM-Pruner's standard set (boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa), or
  any other lm-eval task, when the Hugging Face hub is reachable (lm-eval downloads its data); with
  HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, from the local cache, task by task; otherwise, or when the
  cache lacks it, each is recorded as skipped with the reason, never as a score. A name lm-eval does
  not know is an error (ValueError), not a skip.
Each task's accuracy is `acc` (and `acc_norm`, length-normalised, where lm-eval reports it).

Usage: imported by tools.eval.recovery, metrics and study (`zero_shot(model, tokenizer, tasks)`);
    python -m tools.eval.zeroshot --check python_mc arc_easy   (exit 2 naming any task lm-eval does not know;
                                                               the sweep's preflight runs it)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

from filelib import run_main
from tools.core.args import command, opt
from tools.core.hub import hub_offline, hub_reachable
from tools.core.paths import TEMPLATES

LOCAL_TASKS = {"python_mc": TEMPLATES / "zeroshot" / "python_mc.yaml"}
STANDARD_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


class _TaskYaml(yaml.SafeLoader):
    """lm-eval's task YAML: a `!function module.name` tag read as its text (lm-eval's own CLI resolves it)."""


_TaskYaml.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def local_task_config(name: str) -> dict:
    """A shipped task's lm-eval config with its data file made absolute; its `custom_dataset` (what lets
    lm-eval's own CLI find the file from any folder) is not needed once the path is absolute."""
    path = LOCAL_TASKS[name]
    cfg = yaml.load(path.read_text(), Loader=_TaskYaml)  # noqa: S506 (a SafeLoader with one tag more)
    cfg.pop("custom_dataset", None)
    files = cfg["dataset_kwargs"]["data_files"]
    cfg["dataset_kwargs"]["data_files"] = {k: str(Path(path).parent / v) for k, v in files.items()}
    return cfg


def expand(tasks: list[str]) -> list[str]:
    """`local` and `standard` stand for those sets; anything else is an lm-eval task name."""
    out: list[str] = []
    for t in tasks:
        out += list(LOCAL_TASKS) if t == "local" else list(STANDARD_TASKS) if t == "standard" else [t]
    return list(dict.fromkeys(out))


@functools.cache
def _task_index():
    """lm-eval's index of its task files: built once per process (seconds), not once per run evaluated."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


@functools.cache
def _no_index():
    """A task manager that indexes none of lm-eval's files: enough for the configs of our own tasks."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False)


def check_tasks(tasks: list[str]) -> None:
    """Every name is a task lm-eval (or templates/zeroshot/) knows; lm-eval's index is read only for
    names that are not ours."""
    theirs = [t for t in expand(tasks) if t not in LOCAL_TASKS]
    unknown = [t for t in theirs if t not in _task_index().all_tasks] if theirs else []
    if unknown:
        raise ValueError(f"lm-eval knows no task {', '.join(unknown)} (`lm-eval ls tasks` lists them)")


def zero_shot(model, tokenizer, tasks: list[str], batch_size: int = 8, limit: int | None = None) -> dict:
    """{task: {"acc": .., "acc_norm": .., "n": ..} or {"skipped": why}}."""
    names = expand(tasks)
    check_tasks(names)
    remote = [t for t in names if t not in LOCAL_TASKS]
    results: dict[str, dict] = {}
    lm = None

    def run(wanted: list) -> None:
        nonlocal lm
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        if lm is None:  # one wrapper for every call
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        ours = all(isinstance(w, dict) for w in wanted)  # our configs, given whole: no name to look up
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=wanted,
            task_manager=_no_index() if ours else _task_index(),
            limit=limit,
            log_samples=False,
            verbosity="ERROR",
        )
        for task, metrics in (out or {}).get("results", {}).items():
            row = {k.split(",")[0]: v for k, v in metrics.items() if k.split(",")[0] in ("acc", "acc_norm")}
            n = (out.get("n-samples") or {}).get(task, {})
            results[task] = {**{k: round(float(v), 4) for k, v in row.items()}, "n": n.get("effective")}

    local = [local_task_config(t) for t in names if t in LOCAL_TASKS]
    if local:
        run(local)
    if remote and hub_offline():
        for t in remote:  # one by one: a task missing from the cache must not sink the others
            try:
                run([t])
            except Exception as e:  # noqa: BLE001 (whatever the cache lacks, the task is skipped and says why)
                results[t] = {
                    "skipped": f"offline and not in the local cache ({type(e).__name__}: {str(e)[:120]})"
                }
    elif remote and not hub_reachable():
        results.update({t: {"skipped": "the Hugging Face hub is not reachable"} for t in remote})
    elif remote:
        run(remote)
    return {t: results[t] for t in names if t in results}


@dataclass
class ZeroshotArgs:
    check: list[str] = opt(help="task names to check", required=True, metavar="TASK")


@command(ZeroshotArgs, __doc__)
def main(a: ZeroshotArgs) -> int:
    import sys

    try:
        check_tasks(a.check)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"zero-shot tasks known: {', '.join(expand(a.check))}")
    return 0


if __name__ == "__main__":
    run_main(main)
