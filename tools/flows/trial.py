"""One trial of a search (tools.flows.tune): its search space read from the study spec, its run rendered
through the normal configs path and trained by the sweep's own trainer, watched epoch by epoch.

A trial is an ordinary run: the spec's base variant rendered by `tools.flows.sweep.plan` with the trial's
parameters as overrides (checked like any `--set`), renamed `t<number>_<params>` (e.g. `t003_lr3.2e-4_r8`),
its config written under cache/experiments/<study>/, trained by `tools.train.train_one` (same folders,
run.json, DONE, resumable from its last checkpoint, a failure recorded and isolated).

Pruning watches the run while it trains: LLaMA-Factory saves a checkpoint at the end of every epoch
(save_strategy epoch) after evaluating the dev set, so each new checkpoint-*/trainer_state.json carries that
epoch's dev eval_loss. The watcher reports it to Optuna; when the pruner says stop, the training child (and
its children) are sent SIGTERM, by pid, and the run is recorded as pruned at that epoch. The run trains
with its full schedule (the learning rate decays over all its epochs, as in the grid), so a trial that is
not pruned is exactly the run the grid would have trained; nothing in LLaMA-Factory is patched.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path

import yaml

from filelib import atomic_write_json, atomic_write_text, read_json_object
from tools.core.paths import ROOT, Run, cache_dir
from tools.core.profiles import ConfigError
from tools.flows.sweep import plan
from tools.report import epoch_steps, epoch_values, planned_steps
from tools.train import config_hash, train_one

SHORT = {
    "learning_rate": "lr",
    "lora_rank": "r",
    "lora_alpha": "a",
    "lora_target": "tgt",
    "lora_dropout": "do",
}
KINDS = ("float", "int", "categorical")


# ---------------------------------------------------------------------------------------- the space
def parse_space(search: object, where: str) -> dict[str, dict]:
    """`search: params:` -> {key: {type, low, high, log, step | choices}}; every problem at once."""
    if not isinstance(search, dict) or not isinstance(search.get("params"), dict) or not search["params"]:
        raise ConfigError(f"{where}: `search:` needs `params:` mapping keys to ranges (see docs/tune.md)")
    extra = set(search) - {"params", "sampler", "pruner", "objective", "base", "trials"}
    problems = [f"unknown key(s) {sorted(extra)}"] if extra else []
    space = {}
    for key, d in search["params"].items():
        d = dict(d or {})
        kind = d.get("type", "categorical" if "choices" in d else "float")
        if kind not in KINDS:
            problems.append(f"{key}: type {kind!r} is not one of {KINDS}")
        elif kind == "categorical":
            if not isinstance(d.get("choices"), list) or not d["choices"]:
                problems.append(f"{key}: categorical needs `choices: [...]`")
        else:
            lo, hi = d.get("low"), d.get("high")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lo, hi)) or lo >= hi:
                problems.append(f"{key}: needs numbers low < high (got {lo!r}, {hi!r})")
            elif d.get("log") and lo <= 0:
                problems.append(f"{key}: a log range needs low > 0")
        space[str(key)] = {**d, "type": kind}
    if problems:
        raise ConfigError(f"{where}: search: " + "; ".join(problems))
    return space


def suggest(trial, space: dict[str, dict]) -> dict:
    """The trial's parameters, asked of Optuna (an enqueued trial gets its fixed values back)."""
    out = {}
    for key, d in space.items():
        if d["type"] == "categorical":
            out[key] = trial.suggest_categorical(key, d["choices"])
        elif d["type"] == "int":
            out[key] = trial.suggest_int(
                key, int(d["low"]), int(d["high"]), step=int(d.get("step", 1)), log=bool(d.get("log"))
            )
        else:
            out[key] = trial.suggest_float(key, float(d["low"]), float(d["high"]), log=bool(d.get("log")))
    return out


def _short_value(v) -> str:
    if isinstance(v, float):
        mant, exp = f"{v:.1e}".split("e")
        return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"
    return str(v).replace(",", "+").replace(" ", "")


def trial_name(number: int, params: dict) -> str:
    """`t003_lr3.2e-4_r8`: the trial's number and its parameters, path-safe."""
    parts = [f"t{number:03d}"] + [f"{SHORT.get(k, k)}{_short_value(v)}" for k, v in params.items()]
    name = "_".join(parts)
    Run("m", "s", name)  # raises for a name that is not path-safe
    return name


# ---------------------------------------------------------------------------------------- the run
def trial_job(
    study: str, model: str, base: str, variant: str, params: dict, overrides: dict, dataset_dir: Path
):
    """The sweep's job for the trial's run: rendered from `base` with the trial's values as overrides."""
    scratch = cache_dir() / "tune" / study / "render"
    job = plan(study, model, scratch, dataset_dir, [base], {**overrides, **params})[0]
    run = Run(model, study, variant)
    text = (scratch / study / Run(model, study, base).config.name).read_text()
    text = text.replace(f"lora/{study}/{base}\n", f"lora/{study}/{variant}\n")
    text = text.replace(f"(variant `{base}`)", f"(variant `{variant}`: tune trial from `{base}`)")
    cfg_path = cache_dir() / "experiments" / study / run.config.name
    shown = str(cfg_path.relative_to(ROOT)) if cfg_path.is_relative_to(ROOT) else str(cfg_path)
    base_cfg = Run(model, study, base).config
    text = text.replace(
        str(base_cfg.relative_to(ROOT)) if base_cfg.is_relative_to(ROOT) else str(base_cfg), shown
    )
    atomic_write_text(cfg_path, text)
    cfg = yaml.safe_load(text)
    job["resolved_config"]["output_dir"] = str(run.output_dir)
    job.update(run=run.name, variant=variant, output_dir=str(run.output_dir), config_sha256=config_hash(cfg))
    job["config"] = shown
    job["hparams"] = {**job["hparams"], **params}
    return job


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    return kids


def _writes_log(pid: int, log: str) -> bool:
    try:
        return any(os.readlink(f) == log for f in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def _all_under(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], list(kids.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def stop_training(output_dir: Path) -> list[int]:
    """SIGTERM (then SIGKILL) the training child this process started for the run, and its children."""
    kids, marker = _children(), str(Path(output_dir) / "train_config.yaml")
    log = str(Path(output_dir) / "train.log")
    tree, todo = [], list(kids.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd or _writes_log(pid, log):  # the child training this run (a fresh process or
            tree.append(pid)  # one forked by the warm server, whose command line is the server's)
            tree += _all_under(pid, kids)
        else:
            todo += kids.get(pid, [])  # e.g. the warm server between us and the child
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in tree:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGTERM:
            time.sleep(2)
    return tree


def watch_train(job: dict, on_epoch, poll: float = 0.5) -> tuple[dict, int | None, bool]:
    """Train the job while calling on_epoch() every `poll` seconds and once at the end; on_epoch returns the
    epoch to stop at (the pruner said so) or None. Returns (train_one's result, stop epoch, killed)."""
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(res=train_one(job)), daemon=True)
    t.start()
    stop, killed = None, False
    while t.is_alive():
        t.join(poll)
        if stop is None and t.is_alive():
            stop = on_epoch()
            if stop is not None:
                killed = bool(stop_training(Path(job["output_dir"])))
    if stop is None:
        stop = on_epoch()
    return (
        box.get("res") or {"status": "failed", "note": "the trainer thread ended without a result"},
        stop,
        killed,
    )


def mark_pruned(run: Run, epoch: int, steps: dict) -> None:
    """run.json says pruned (not failed), with the epoch reached and the steps: what the report reads."""
    rec = read_json_object(run.run_json, {})
    rec.update(status="pruned", pruned_at_epoch=epoch, error=None, **steps)
    atomic_write_json(run.run_json, rec)


# ---------------------------------------------------------------------------------------- on Ray
def stop_file(output_dir: Path | str) -> Path:
    """Where a search asks a trial training elsewhere (a Ray worker) to stop: beside the run's folder, in the
    saves/ that every node of the cluster shares; its text is the epoch the pruner stopped it at."""
    out = Path(output_dir)
    return out.parent / f".{out.name}.stop"


def train_trial(job: dict) -> dict:
    """Train a trial in a Ray worker (tools.train.ray_runner passes it the job): watch_train, stopping the
    training child, by pid, once the search has written the run's stop file. Adds `stop` and `killed`."""
    marker = stop_file(job["output_dir"])

    def asked() -> int | None:
        try:
            return int(marker.read_text())
        except (OSError, ValueError):
            return None

    # a stat every tenth of a second: the stop lands within the epoch after the one it was decided on
    res, stop, killed = watch_train(job, asked, 0.1)
    return {**res, "stop": stop, "killed": killed}


# ---------------------------------------------------------------------------------------- ask, report, tell
def start_trial(ost, space: dict, ctx: dict):
    """Ask Optuna for a trial and render its run: (trial, run, job), or its FAIL row if it cannot render."""
    from optuna.trial import TrialState

    trial = ost.ask()
    params = suggest(trial, space)
    variant = trial.user_attrs.get("resume_run") or trial_name(trial.number, params)
    trial.set_user_attr("run", variant)
    run = Run(ctx["model"], ctx["study"], variant)
    try:
        job = trial_job(
            ctx["study"], ctx["model"], ctx["base"], variant, params, ctx["overrides"], ctx["data"]
        )
    except (ConfigError, ValueError) as e:
        ost.tell(trial, state=TrialState.FAIL)
        return {"number": trial.number, "run": run.name, "state": "FAIL", "note": str(e)}
    return trial, run, job


def report_epochs(trial, run: Run, metric: str, reported: dict[int, float]) -> int | None:
    """Report each epoch the run kept since the last look; the epoch to stop at if the pruner says so."""
    for e, v in sorted(epoch_values(run, metric).items()):
        if e in reported:
            continue
        reported[e] = v
        trial.report(v, e)
        if trial.should_prune():
            return e
    return None


def finish_trial(ost, trial, run: Run, reported: dict, res: dict, stop, killed: bool, objective) -> dict:
    """Tell Optuna how the trial ended (COMPLETE, PRUNED at its epoch, or FAIL) with the steps it spent."""
    from optuna.trial import TrialState

    steps = epoch_steps(run)
    planned = planned_steps(run)
    last = max(steps.values(), default=0)
    per_epoch = steps.get(1) or 0
    spent = min(planned, last + per_epoch) if killed and planned else last
    info = {
        "steps_planned": planned,
        "steps_run": spent,
        "steps_saved": max(0, planned - spent) if planned else 0,
    }
    for k, v in info.items():
        trial.set_user_attr(k, v)
    row = {"number": trial.number, "run": run.name, "params": dict(trial.params), "epochs": dict(reported)}
    row |= info
    if stop is not None:
        trial.set_user_attr("epoch_reached", stop)
        mark_pruned(run, stop, info)
        ost.tell(trial, state=TrialState.PRUNED)
        return {
            **row,
            "state": "PRUNED",
            "note": f"pruned at epoch {stop}" + ("" if killed else " (had finished)"),
        }
    if res["status"] not in ("finished", "done") or not reported:
        why = res.get("note") or "no dev value per epoch (does the profile set eval_dataset?)"
        trial.set_user_attr("error", why)
        ost.tell(trial, state=TrialState.FAIL)
        return {**row, "state": "FAIL", "note": why}
    best = (min if objective.direction == "minimize" else max)(reported.values())
    trial.set_user_attr("epoch_reached", max(reported))
    ost.tell(trial, best)
    return {**row, "state": "COMPLETE", "value": best, "note": res.get("note", "")}
