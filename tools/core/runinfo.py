"""What a run was: the facts a sweep records in its run.json, and the child process that trains it.

- `git_commit()`, `package_versions()`: the code and the stack that trained it.
- `data_fingerprint(datasets, dataset_dir)`: sha256 of each registered dataset file a run trains on,
  so a finished run whose data changed is noticed (dataset names never change with the pool).
- `run_child(cmd, log, ...)`: runs a command with stdout+stderr to a log and measures wall time,
  the child's peak RSS (from the kernel's own accounting, `wait4`: it counts from the parent's size at
  fork, so a large parent process inflates it; a sweep's parent is small) and, where CUDA is present, the
  peak GPU memory of the child's processes (sampled from nvidia-smi).

Usage:
    python -m tools.core.runinfo [--dataset alpaca_top100 --dataset-dir data]   # print the facts as JSON
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from filelib import run_main, sha256_file
from tools.core.args import command, opt
from tools.core.paths import DATA, ROOT

PACKAGES = ("llamafactory", "transformers", "torch", "peft", "trl", "datasets", "accelerate", "ray")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_commit(root: Path = ROOT) -> str | None:
    """HEAD's commit, with `-dirty` when tracked files differ from it (what trained may not be committed)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}-dirty" if dirty else head


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def dataset_files(datasets: str | list[str], dataset_dir: str | Path = DATA) -> dict[str, Path]:
    """Registered name -> its file (LLaMA-Factory's comma-separated `dataset` accepted)."""
    from plugins.publishing import resolve

    names = [d.strip() for d in datasets.split(",")] if isinstance(datasets, str) else list(datasets)
    return {name: resolve(name, dataset_dir) for name in names if name}


def data_fingerprint(datasets: str | list[str], dataset_dir: str | Path = DATA) -> dict[str, str]:
    """{dataset name: sha256 of its file} (a folder hashes its files in name order; a hub dataset, which
    LLaMA-Factory downloads itself, is named by its address and revision)."""
    from plugins.publishing import load_info

    names = [d.strip() for d in datasets.split(",")] if isinstance(datasets, str) else list(datasets)
    info, out, local = load_info(dataset_dir), {}, []
    for name in filter(None, names):
        entry = info.get(name)
        if isinstance(entry, dict) and "file_name" not in entry and entry.get("hf_hub_url"):
            out[name] = f"hub:{entry['hf_hub_url']}@{entry.get('revision', 'main')}"
        else:
            local.append(name)
    for name, path in dataset_files(local, dataset_dir).items():
        if path.is_dir():
            parts = [
                f"{p.relative_to(path)}:{sha256_file(p)}" for p in sorted(path.rglob("*")) if p.is_file()
            ]
            from filelib import sha256_text

            out[name] = sha256_text(*parts)
        else:
            out[name] = sha256_file(path)
    return out


def parse_compute_apps(text: str) -> dict[int, int]:
    """nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits -> {pid: MiB}."""
    out: dict[int, int] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            out[int(parts[0])] = out.get(int(parts[0]), 0) + int(parts[1])
    return out


def parse_gpu_used(text: str) -> dict[int, int]:
    """nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -> {index: MiB}."""
    return parse_compute_apps(text)


def visible_gpus(env: dict | None = None) -> set[int] | None:
    """The GPU indices CUDA_VISIBLE_DEVICES names (None: all, or names given as UUIDs)."""
    value = (env if env is not None else os.environ).get("CUDA_VISIBLE_DEVICES")
    if value is None or not value.strip():
        return None
    parts = [x.strip() for x in value.split(",")]
    return {int(x) for x in parts} if all(x.isdigit() for x in parts) else None


class GpuPeak(threading.Thread):
    """Samples GPU memory every `every` seconds while a process tree runs.

    `peak_mb` is the largest sum over the tree's own processes; inside a container nvidia-smi often
    cannot see the container's process ids, and then the peak of the memory used on the visible GPUs
    is reported instead (`basis` says which: "process" or "device").
    """

    def __init__(self, pid: int, every: float = 0.5, env: dict | None = None) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.process_mb = self.device_mb = 0
        self.gpus = visible_gpus(env)
        self._stop = threading.Event()

    def _tree(self) -> set[int]:
        import psutil

        try:
            proc = psutil.Process(self.pid)
            return {self.pid, *(c.pid for c in proc.children(recursive=True))}
        except psutil.Error:
            return {self.pid}

    def _query(self, what: str) -> str:
        cmd = ["nvidia-smi", what, "--format=csv,noheader,nounits"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                apps = parse_compute_apps(self._query("--query-compute-apps=pid,used_memory"))
                used = parse_gpu_used(self._query("--query-gpu=index,memory.used"))
            except (OSError, subprocess.TimeoutExpired):
                return
            tree = self._tree()
            self.process_mb = max(self.process_mb, sum(mb for pid, mb in apps.items() if pid in tree))
            mine = [mb for i, mb in used.items() if self.gpus is None or i in self.gpus]
            self.device_mb = max(self.device_mb, sum(mine))
            self._stop.wait(self.every)

    @property
    def basis(self) -> str:
        return "process" if self.process_mb else "device"

    @property
    def peak_mb(self) -> int:
        return self.process_mb or self.device_mb

    def stop(self) -> int:
        self._stop.set()
        self.join(timeout=15)
        return self.peak_mb


@dataclass
class ChildResult:
    returncode: int
    wall_s: float
    peak_rss_mb: float | None
    peak_gpu_mb: int | None
    peak_gpu_basis: str | None = None


def watch(pid: int, env: dict | None, on_start, wait, kill):
    """Wait for a started child (`wait()`): tell `on_start` its pid, sample its GPU memory meanwhile, and
    kill it (`kill()`) when the wait is interrupted (Ctrl-C). Returns (what wait returned, peak GPU MB or
    None; 0 from nvidia-smi, which saw nothing, is None too)."""
    if on_start:
        on_start(pid)
    gpu = GpuPeak(pid, env=env) if shutil.which("nvidia-smi") else None
    if gpu:
        gpu.start()
    try:
        result = wait()
    except BaseException:
        kill()
        raise
    return result, (gpu.stop() or None) if gpu else None


def command_of(main: Callable) -> list[str]:
    """`python -m <module>` for a tool's imported `main`: a child started from the function itself, so the
    import graph shows who starts whom (tests/core/test_layout.py) and a renamed module cannot go stale."""
    module = main.__module__
    if module == "__main__":  # the tool itself was started with -m: its real name is in its spec
        module = getattr(sys.modules["__main__"].__spec__, "name", module)
    return [sys.executable, "-m", module.removesuffix(".__main__")]


def run_child(
    cmd: list[str], log: Path, cwd: Path = ROOT, env: dict | None = None, on_start=None
) -> ChildResult:
    """Run cmd with stdout+stderr appended to log; measure wall time, peak RSS and peak GPU memory.

    The RSS is the kernel's high-water mark for the child and the descendants it waited for
    (`os.wait4`), so it is the training process's own peak, not the sweep's.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n==== {now()} $ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        (_, status, usage), peak_gpu = watch(
            proc.pid, env, on_start, lambda: os.wait4(proc.pid, 0), lambda: (proc.kill(), proc.wait())
        )
        proc.returncode = os.waitstatus_to_exitcode(status)
    # Linux reports ru_maxrss in KiB.
    return ChildResult(
        proc.returncode, round(time.time() - t0, 1), round(usage.ru_maxrss / 1024, 1), peak_gpu
    )


@dataclass
class InfoArgs:
    dataset: list[str] | None = opt(None, help="registered dataset name(s), comma-separated", split=",")
    dataset_dir: Path = opt(DATA, help="the folder holding dataset_info.json")

    def check(self) -> list[str]:
        if not self.dataset:
            return []
        from plugins.publishing import RegistryError, load_info

        try:
            names = load_info(self.dataset_dir)
        except (RegistryError, OSError) as e:
            return [f"--dataset-dir {self.dataset_dir}: {e}"]
        known = ", ".join(sorted(names)) or "(none)"
        where = Path(self.dataset_dir) / "dataset_info.json"
        return [
            f"--dataset {d!r}: not registered in {where}; registered: {known}"
            for d in self.dataset
            if d not in names
        ]


@command(InfoArgs, __doc__)
def main(a: InfoArgs) -> int:
    facts = {"git_commit": git_commit(), "versions": package_versions()}
    if a.dataset:
        facts["data_fingerprint"] = data_fingerprint(a.dataset, a.dataset_dir)
    print(json.dumps(facts, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
