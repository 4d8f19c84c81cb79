"""Train one run: `llamafactory-cli train` in a child process, resumable, recorded in run.json and DONE.

A run with DONE, its adapter, the same data fingerprint and the same config is finished; one whose
data or config changed is moved aside (.<variant>.stale-<time>) and trained again; a killed run
resumes from its last complete checkpoint before its final step (`resume_point`). One trainer per run
at a time (a lock in its folder).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from filelib import atomic_write_json, atomic_write_text, read_json_object
from tools.core import warm
from tools.core.runinfo import data_fingerprint, now, run_child
from tools.train.trainstats import run_stats, train_command

ADAPTER = "adapter_model.safetensors"
FULL_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
)  # full / freeze / GaLore / APOLLO / BAdam


def has_weights(out: Path) -> bool:
    """The run saved what it trains: an adapter, or (full-parameter methods) a whole model."""
    return (out / ADAPTER).exists() or any((out / name).exists() for name in FULL_WEIGHTS)


RESOLVED = "train_config.yaml"  # the exact file the child trained from (absolute paths)

# glibc's mmap threshold: tools.train.measure fixes it at 128 KiB to measure the peak the bill bounds (the
# default heap keeps freed tensors: +10-20% resident on CPU). Training is not run that way: every freed
# tensor going back to the system doubles a CPU step (a demo stage, 2 steps: 37.5-40.9 s against 16.8-18.3 s
# of train_runtime). A value the user exports is passed to the child (a warm child applies it, see warm.py).
MMAP_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"


def child_env(job: dict, base: dict | None = None) -> dict:
    """The training child's environment: the caller's (an exported MMAP_THRESHOLD_ENV included) and the
    tracker's variables."""
    env = {**(os.environ if base is None else base), **job.get("env", {})}
    env.update(TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    # A TENSORBOARD_LOGGING_DIR from the shell would send every run's events to one folder; without it
    # transformers 5 writes them to <output_dir>/runs/, where the report looks.
    env.pop("TENSORBOARD_LOGGING_DIR", None)
    return env


# ---------------------------------------------------------------------------------------- one run
SET_ASIDE = ".retrain"


def _complete_checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoint-N folders, newest first (trainer_state.json is written last by the Trainer)."""
    found = []
    for p in Path(output_dir).glob("checkpoint-*"):
        step = p.name.split("-", 1)[1]
        if p.is_dir() and step.isdigit() and (p / "trainer_state.json").exists():
            found.append((int(step), p))
    return [p for _, p in sorted(found, reverse=True)]


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint-N."""
    found = _complete_checkpoints(output_dir)
    return found[0] if found else None


def resume_point(output_dir: Path) -> tuple[Path | None, list[Path]]:
    """(the checkpoint a resumed run starts from, the newer final-step checkpoints it trains again).

    A checkpoint of the run's last step taken inside an epoch (its trainer_state.json: global_step >=
    max_steps, epoch not whole) is not one to resume from: transformers 5.6 goes back into that epoch
    and trains one step past max_steps before it checks (measured: max_steps 6 at epoch 1.5, resumed
    from checkpoint-6: global_step 7). The run trains that last step again from the checkpoint before
    (the Trainer restores the data order and random state it saved there), or starts over without one.
    A last step that ends an epoch resumes as any other: the Trainer has no epoch left to enter.
    """
    final = []
    for ckpt in _complete_checkpoints(output_dir):
        state = read_json_object(ckpt / "trainer_state.json", {})
        step, end, epoch = state.get("global_step"), state.get("max_steps"), state.get("epoch")
        at_end = isinstance(step, int) and isinstance(end, int) and 0 < end <= step
        mid_epoch = isinstance(epoch, (int, float)) and not float(epoch).is_integer()
        if not (at_end and mid_epoch):
            return ckpt, final
        final.append(ckpt)
    return None, final


def config_hash(cfg: dict) -> str:
    """The rendered config's values (paths as rendered, comments ignored): what a finished run must match."""
    from filelib import sha256_text

    return sha256_text(json.dumps(cfg, sort_keys=True, default=str))


def _fingerprint(job: dict) -> dict:
    """The data a run trains on: its dataset files, and the adapter of the stage it continues."""
    from filelib import sha256_file

    fp = data_fingerprint(job["dataset"], job["dataset_dir"])
    if job.get("parent_dir"):
        adapter = Path(job["parent_dir"]) / ADAPTER
        fp[f"adapter:{job['parent']}"] = sha256_file(adapter) if adapter.exists() else None
    return fp


def _set_aside(final: list[Path]) -> None:
    """Final-step checkpoints the run trains again (resume_point), renamed out of the Trainer's and
    LLaMA-Factory's sight (they look for checkpoint-N) and kept until the run has finished again."""
    for ckpt in final:
        aside = ckpt.with_name(f".{ckpt.name}{SET_ASIDE}")
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(ckpt, aside)


def _clear_for_fresh_start(out: Path) -> None:
    """Remove what a killed attempt left (its log stays, appended to, and the checkpoints set aside), so
    LLaMA-Factory starts clean."""
    for p in out.iterdir() if out.exists() else []:
        if p.name == "train.log" or p.name.endswith(SET_ASIDE):
            continue
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _train_loss(out: Path) -> float | None:
    for name in ("train_results.json", "all_results.json"):
        loss = read_json_object(out / name, {}).get("train_loss")
        if loss is not None:
            return round(float(loss), 4)
    return None


def train_one(job: dict) -> dict:
    """Train (or skip, or resume) one run; never raises for a failed run, returns its result row.

    Holds a lock next to the run folder while it works, so two sweeps never train the same run at once.
    """
    import fcntl

    out = Path(job["output_dir"])
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            note = "another sweep is training this run right now"
            return {"run": job["run"], "variant": job["variant"], "status": "failed", "note": note}
        return _train_one_locked(job)


def _start(cmd: list[str], job: dict, log: Path, env: dict, python: str):
    """The training child: forked from the warm server (LLaMA-Factory imported once per sweep) when the
    sweep asked for it (`warm`), else a fresh process; the same command, log and measurements either way."""
    if job.get("warm") and python == sys.executable:
        return warm.run_command(cmd, log, Path(job["cwd"]), env)
    return run_child(cmd, log, cwd=Path(job["cwd"]), env=env)


def _train_one_locked(job: dict) -> dict:
    out = Path(job["output_dir"])
    log = out / "train.log"
    result = {"run": job["run"], "variant": job["variant"], "status": "failed", "note": ""}
    started = now()
    base_record = {
        "run": job["run"],
        "model": job["model"],
        "study": job["study"],
        "variant": job["variant"],
        "config": job["config"],
        "resolved_config": job["resolved_config"],
        "model_name_or_path": job["resolved_config"]["model_name_or_path"],
        "template": job["resolved_config"].get("template"),
        "scientific": job["scientific"],
        "hparams": job["hparams"],
        "parent": job.get("parent"),
        "eval_testset": job["eval_testset"],
        "git_commit": job["git_commit"],
        "versions": job["versions"],
        "log": str(log),
        # tools.train.memory's bill (MB), set beside the measured peak_gpu_mb / peak_rss_mb
        "memory_estimate": job.get("memory_estimate"),
        # where a Ray run trained (tools.train.ray_runner): the node it finished on, every attempt's node
        **{k: job[k] for k in ("node", "nodes", "attempts", "tracking") if job.get(k) is not None},
    }

    def fail(note: str, **extra) -> dict:
        out.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"\n==== {now()} sweep: {note}\n")
        atomic_write_json(
            out / "run.json",
            {**base_record, "status": "failed", "error": note, "started": started, "ended": now(), **extra},
        )
        note = "; ".join(x for x in (result["note"], note) if x)
        result.update(note=note, **{k: v for k, v in extra.items() if k in ("returncode", "wall_s")})
        return result

    if job.get("parent_dir") and not (Path(job["parent_dir"]) / "DONE").exists():
        return fail(f"the stage it continues ({job['parent']}) has not finished")
    try:
        fingerprint = _fingerprint(job)
    except (ValueError, OSError) as e:
        return fail(str(e))

    old = read_json_object(out / "run.json", {})
    if (out / "DONE").exists() and has_weights(out):
        same_config = old.get("config_sha256") == job["config_sha256"]
        if old.get("data_fingerprint") == fingerprint and same_config:
            result.update(status="done", note="already finished", wall_s=old.get("wall_s"))
            result.update(peak_rss_mb=old.get("peak_rss_mb"), train_loss=_train_loss(out))
            return result
        changed = sorted(
            k for k in fingerprint if (old.get("data_fingerprint") or {}).get(k) != fingerprint[k]
        )
        why = [f"data changed ({', '.join(changed)})"] if changed else []
        why += [] if same_config else ["config changed"]
        stale = out.with_name(f".{out.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(out, stale)
        result["note"] = f"{' and '.join(why)}: retrained; old run kept in {stale.name}"

    resolved = dict(job["resolved_config"])
    ckpt, final = resume_point(out)
    _set_aside(final)
    if ckpt is not None:
        resolved["resume_from_checkpoint"] = str(ckpt)
        result["note"] = (result["note"] + "; " if result["note"] else "") + f"resumed from {ckpt.name}"
    else:
        _clear_for_fresh_start(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RESOLVED, yaml.safe_dump(resolved, sort_keys=False))
    record = {
        **base_record,
        "resolved_config": resolved,
        "data_fingerprint": fingerprint,
        "config_sha256": job["config_sha256"],
        "resumed_from": str(ckpt) if ckpt else None,
        "status": "running",
        "started": started,
        "pid": os.getpid(),
    }
    atomic_write_json(out / "run.json", record)
    # job["env"]: the tracker's variables (tools.flows.tracking: MLFLOW_RUN_ID, WANDB_MODE, ...)
    env = child_env(job)
    python = job.get("python") or sys.executable
    cmd = train_command(resolved, job["cli"], python, out / RESOLVED)
    child = _start(cmd, job, log, env, python)
    ok = child.returncode == 0 and has_weights(out)
    stats = {
        "returncode": child.returncode,
        "wall_s": child.wall_s,
        "peak_rss_mb": child.peak_rss_mb,
        "peak_gpu_mb": child.peak_gpu_mb,
        "peak_gpu_basis": child.peak_gpu_basis,
    }
    if not ok:
        who = "llamafactory-cli" if cmd[: len(job["cli"])] == job["cli"] else cmd[2]
        why = f"{who} exited {child.returncode}" if child.returncode else "no adapter or model was saved"
        return fail(f"{why}; log: {log}", **{**stats, "data_fingerprint": fingerprint})
    for aside in out.glob(f".checkpoint-*{SET_ASIDE}"):  # trained again and saved in its place
        shutil.rmtree(aside)
    stats.update(run_stats(out, log))  # trainable params, s/step, final loss: what the method study compares
    atomic_write_json(out / "run.json", {**record, **stats, "status": "finished", "ended": now()})
    atomic_write_json(out / "DONE", {"run": job["run"], "finished": now()})
    result.update(status="finished", train_loss=_train_loss(out), **stats)
    return result
