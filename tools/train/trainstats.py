"""What a finished training run cost, read from LLaMA-Factory's own outputs (for run.json and the report).

- trainable / all parameters: the line LLaMA-Factory's loader prints ("trainable params: 36,992 || all
  params: 3,219,776 || trainable%: 1.1489"), the last one in train.log (a resumed run prints it again);
- seconds per optimizer step: train_runtime / global_step (train_results.json, trainer_state.json);
- first and final loss: the first and last logged training loss (trainer_log.jsonl), beside the run's mean
  train_loss, and whether the run learned (`learned`: the last below the first by more than LEARNED_DROP);
- the command that trains it: `llamafactory-cli train`, or plugins.launchers where the config needs it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from filelib import read_json_object
from plugins.launchers import LAUNCHER, needs_launcher

# The least relative fall from the first logged loss to the last that counts as learning (the report's column).
LEARNED_DROP = 0.001
PARAMS_LINE = re.compile(r"trainable params: ([\d,]+) \|\| all params: ([\d,]+) \|\| trainable%: ([\d.]+)")


def train_command(cfg: dict, cli: list[str], python: str, config_file: Path) -> list[str]:
    """The child command for a resolved config: the project's launcher where the config needs what
    LLaMA-Factory lacks (a `peft_type`, a pruned model), else `llamafactory-cli train`."""
    if needs_launcher(cfg):
        if cfg.get("launcher", LAUNCHER) != LAUNCHER:
            raise ValueError(f"{config_file}: launcher {cfg['launcher']!r}: the one launcher is {LAUNCHER}")
        return [python, "-m", LAUNCHER, str(config_file)]
    return [*cli, "train", str(config_file)]


def trainable_params(log: Path) -> dict:
    """{trainable_params, all_params, trainable_pct} from the last such line in the log ({} when none)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    found = PARAMS_LINE.findall(text)
    if not found:
        return {}
    trainable, total, pct = found[-1]
    return {
        "trainable_params": int(trainable.replace(",", "")),
        "all_params": int(total.replace(",", "")),
        "trainable_pct": float(pct),
    }


def step_stats(out: Path) -> dict:
    """{train_steps, s_per_step, final_loss} from LLaMA-Factory's files in the output folder."""
    results = read_json_object(out / "train_results.json", {}) or read_json_object(
        out / "all_results.json", {}
    )
    steps = read_json_object(out / "trainer_state.json", {}).get("global_step")
    stats: dict = {}
    if steps:
        stats["train_steps"] = int(steps)
        if results.get("train_runtime"):
            stats["s_per_step"] = round(float(results["train_runtime"]) / int(steps), 3)
    return {**stats, **learning(out)}


def learning(out: Path) -> dict:
    """{first_loss, final_loss, learned} from the run's own log of training losses ({} when none)."""
    losses = []
    try:
        for line in (out / "trainer_log.jsonl").read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("loss") is not None:
                losses.append(float(row["loss"]))
    except (OSError, ValueError):
        pass
    if not losses:
        return {}
    first, last = losses[0], losses[-1]
    learned = len(losses) > 1 and last < first * (1 - LEARNED_DROP)
    return {"first_loss": round(first, 4), "final_loss": round(last, 4), "learned": learned}


def run_stats(out: Path, log: Path) -> dict:
    return {**trainable_params(log), **step_stats(out)}
