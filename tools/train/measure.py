"""The peak memory of one training run, measured in the training process itself (what the bill is checked
against: tests/train/test_bills.py, docs/bills.md).

What is measured, precisely: the training process imports everything training needs (torch, transformers,
peft, datasets, LLaMA-Factory's trainer, the project's launcher), collects garbage and reads its resident
set (`VmRSS` of /proc/self/status): the *baseline*. It then resets the kernel's high-water mark
(`echo 5 > /proc/self/clear_refs`) and trains the config exactly as the sweep would (`plugins.launchers`,
which is LLaMA-Factory's own `run_exp` for plain configs). When the Trainer starts, the peak so far (the
loading's: model, tokenizer, data) is noted (`loaded_peak_mb`). At the end `VmHWM` (the peak resident set since
the reset) minus the baseline is the run's *peak increase*: the model, its adapter, gradients, optimizer
states, activations, logits, tokenizer, data and trainer, everything the run itself added. Unlike `wait4`'s
`ru_maxrss` (run.json's `peak_rss_mb`), it does not count a parent's pages copied at fork. glibc's mmap
threshold is fixed at 128 KiB first (`mallopt`), so a freed tensor goes back to the system and the peak is
the run's own, not the heap's history (`fixed_mmap_threshold`).

As a child of the warm fork server (`measure_run(..., warm_start=True)`, the bill tests), it first maps the
file pages its server has mapped (`refault_as`), so its baseline is a fresh process's; where it cannot, it
reports no increase and `measure_run` measures in a fresh process instead.

Usage:
    python -m tools.train.measure CONFIG.yaml [--out FILE.json] [--default-malloc] [key=value ...]
    (--default-malloc: leave glibc's dynamic mmap threshold, to see what the heap keeps)
"""

from __future__ import annotations

import errno
import gc
import json
import os
import sys
import time
from pathlib import Path

from filelib import atomic_write_json, run_main
from tools.core import warm
from tools.core.paths import ROOT
from tools.core.runinfo import command_of, run_child

MB = 1024**2
M_MMAP_THRESHOLD = -3  # mallopt's parameter (malloc.h)
MMAP_THRESHOLD = 128 * 1024
MADV_POPULATE_READ = 22  # madvise's advice (Linux >= 5.14): fault the range's pages in, as reading them would


def status_mb(key: str) -> float | None:
    """A `VmRSS` / `VmHWM` line of /proc/self/status in MB (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset this process's high-water mark to its current resident set (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def fixed_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """glibc: every allocation from `size` up is its own mapping, returned to the system when freed. By
    default the threshold grows with the blocks freed (up to 32 MB), so freed tensors stay in the heap and
    the resident set keeps what the order of frees leaves behind (10-20% more over 2 steps, measured)."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, size))
    except (OSError, AttributeError):
        return False


def refault_as(pid: int) -> float:
    """Map into this process the file pages that process `pid`, the fork server it was forked from, has
    mapped; the MB mapped. Fork copies no page-table entry of a file mapping (the kernel lets a fault fill
    them), so a forked child faults the libraries' pages in again as it trains and its high-water mark
    counts them as the run's: 70-80 MB more than a fresh process that touched them while importing
    (docs/bills.md). Read from the server's /proc/PID/pagemap: the pages the server itself had mapped (and
    the kernel's fault-around neighbours), so the child starts from the resident set a fresh process has
    after its imports. Only a mapping the child holds unchanged (span, permissions, offset, device, file)
    and may read; a range the kernel will not populate (a truncated file) is left alone. OSError when the
    server's maps cannot be read (the server gone, no /proc/PID/pagemap)."""
    import ctypes

    import numpy as np

    page = os.sysconf("SC_PAGE_SIZE")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    own = {tuple(line.split()[:5]) for line in Path("/proc/self/maps").read_text().splitlines()}
    mapped, populate = 0, True
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap, open("/proc/self/mem", "rb", buffering=0) as mem:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            fields = line.split()
            span, perms, inode = fields[0], fields[1], fields[4]
            path = fields[5] if len(fields) > 5 else ""
            if inode == "0" or perms[0] != "r" or path.startswith("/dev/") or tuple(fields[:5]) not in own:
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            pagemap.seek(start // page * 8)
            entries = np.frombuffer(pagemap.read((end - start) // page * 8), dtype=np.uint64)
            present = np.flatnonzero(entries >> np.uint64(63))
            if not len(present):
                continue
            breaks = np.flatnonzero(np.diff(present) != 1)
            for first, last in zip(
                present[np.r_[0, breaks + 1]], present[np.r_[breaks, len(present) - 1]], strict=True
            ):
                addr, size = start + int(first) * page, (int(last) - int(first) + 1) * page
                if populate and libc.madvise(addr, size, MADV_POPULATE_READ) == 0:
                    mapped += size
                elif populate and ctypes.get_errno() != errno.EINVAL:
                    continue  # EFAULT / ENOMEM: a page that would fault (a file truncated since): not read
                else:  # a kernel before 5.14 knows no MADV_POPULATE_READ: read each page instead
                    populate = False
                    mapped += sum(_read_own(mem, a, page) for a in range(addr, addr + size, page))
    return mapped / MB


def _read_own(mem, addr: int, size: int) -> int:
    """Bytes read of this process's memory through /proc/self/mem (`mem`): a page that cannot be read is an
    OSError (EIO) here, 0 bytes, not the signal a direct read would raise."""
    try:
        return len(os.pread(mem.fileno(), size, addr))
    except OSError:
        return 0


def baseline() -> dict:
    """Import what training imports, then read the resident set and reset the peak."""
    import datasets  # noqa: F401
    import llamafactory.train.tuner  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import plugins.launchers  # noqa: F401

    extra: dict = {}
    if warm.SERVER_PID:  # a warm child: the server's pages first, or no increase to report (main)
        try:
            extra["server_pages_mb"] = round(refault_as(warm.SERVER_PID), 1)
        except OSError as e:
            extra["server_pages_error"] = f"{type(e).__name__}: {e}"
    gc.collect()
    rss = status_mb("VmRSS")
    return {"baseline_mb": round(rss, 1) if rss else None, "peak_reset": reset_peak()} | extra


def mark_training_start(rec: dict) -> None:
    """Record the peak and resident set when the Trainer starts (after model, tokenizer and data are
    loaded): the loading's own peak, apart from the training steps'."""
    from transformers import Trainer

    original = Trainer.train

    def train(self, *args, **kwargs):
        peak, rss = status_mb("VmHWM"), status_mb("VmRSS")
        rec["loaded_peak_mb"] = round(peak - rec["baseline_mb"], 1) if peak and rec["baseline_mb"] else None
        rec["loaded_rss_mb"] = round(rss - rec["baseline_mb"], 1) if rss and rec["baseline_mb"] else None
        return original(self, *args, **kwargs)

    Trainer.train = train


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = None
    if "--out" in argv:
        i = argv.index("--out")
        out, argv = Path(argv[i + 1]), argv[:i] + argv[i + 2 :]
    default_malloc = "--default-malloc" in argv
    argv = [x for x in argv if x != "--default-malloc"]
    if not argv or not argv[0].endswith((".yaml", ".yml")):
        print(__doc__.split("Usage:")[1].strip(), file=sys.stderr)
        return 2
    from plugins.launchers import launch_main

    fixed = False if default_malloc else fixed_mmap_threshold()
    rec = baseline()
    rec["mmap_threshold"] = MMAP_THRESHOLD if fixed else "glibc default (dynamic)"
    mark_training_start(rec)
    t0 = time.perf_counter()
    rc = launch_main(argv)
    peak = status_mb("VmHWM")
    rec.update(
        config=argv[0],
        returncode=rc,
        seconds=round(time.perf_counter() - t0, 1),
        peak_mb=round(peak, 1) if peak else None,
        basis="VmHWM after training minus VmRSS after imports (peak reset at the baseline)",
    )
    if rec["baseline_mb"] and peak and rec["peak_reset"] and "server_pages_error" not in rec:
        rec["increase_mb"] = round(peak - rec["baseline_mb"], 1)
    line = json.dumps(rec)
    print(f"measure: {line}", flush=True)
    if out:
        atomic_write_json(out, rec)
    return rc


def measure_run(config: Path, out: Path, warm_start: bool = False) -> tuple[int, str]:
    """Measure CONFIG in a process of its own, its record written to OUT: a fresh `python -m
    tools.train.measure`, or (`warm_start`, where the fork server is available) a child of the warm fork
    server, which maps the server's file pages before its baseline (`refault_as`) and so reads what a fresh
    process reads (within 5 MB on the tiny model and SmolLM2-135M, docs/bills.md) in a third of the time.
    Returns its exit status and its output."""
    cmd = [*command_of(main), str(config), "--out", str(out)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    log = out.with_name(out.stem + ".log")
    res = warm.run_command(cmd, log, ROOT, env) if warm_start else run_child(cmd, log, ROOT, env)
    if warm_start and "server_pages_error" in _record(out):  # measured fresh, as it would be
        res = run_child(cmd, log, ROOT, env)
    return res.returncode, log.read_text(encoding="utf-8", errors="replace")


def _record(out: Path) -> dict:
    try:
        return json.loads(out.read_text())
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    run_main(main)
