"""Start-up paid once: children forked from a process that has imported LLaMA-Factory already.

Importing LLaMA-Factory (torch, transformers, peft, datasets, trl) costs 10-20 s of a 2-core CPU; a
study trains several runs and the demo runs several tools, each of which paid it again. Here one fork
server (multiprocessing's `forkserver`, with LLaMA-Factory in its preload list) imports it once, and
each job is a child forked from it: it starts at once and is still a process of its own (its crash,
memory and open files end with it, its exit status is its own, Ctrl-C and kills reach it as before).

Why a fork server and not `os.fork()` of the caller: a process that has run a parallel torch operation
has an OpenMP thread pool, and a child forked from it hangs at its first parallel operation (measured
here: libgomp). The server only imports, never computes, so its children are safe; it never touches
CUDA either, so GPU runs are safe too.

A job is a module run as `__main__` (`python -m module argv...` without the interpreter start), or a
script (`python script.py argv...`: its folder first on the path, then the child's PYTHONPATH, then the
server's path, where a fresh interpreter has only the first two before the standard ones), with
its own environment, working directory and log (stderr, and stdout unless the caller keeps it). Its
peak RSS is the child's own high-water mark, as `run_child` reports for a subprocess.
Linux only (fork); `SMALLDATA_WARM=0` turns it off, and then callers start a fresh process as before.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import runpy
import sys
import tempfile
import time
from pathlib import Path

from tools.core.paths import cache_dir, llamafactory_cli
from tools.core.runinfo import ChildResult, now, run_child, watch
from tools.core.streams import streams_to
from tools.core.threads import omp_threads

# What a child would import anyway, in the order it would: the whole cost of `llamafactory-cli train`'s start.
# The server's one preload, tools/core/warm_imports.py, imports these, then what the model loader imports on
# its first load, and freezes the heap.
MODULES = [
    "torch",
    "transformers",
    "peft",
    "llamafactory.cli",
    "llamafactory.launcher",
    "llamafactory.train.tuner",
    "tools.core.warm",
]
PRELOAD = ["tools.core.warm_imports"]

_context = None
_JOB_NAME = "smalldata-warm-job"
SERVER_PID: int | None = None  # in a child: the fork server it was forked from (None in any other process)


def available() -> bool:
    return (
        sys.platform.startswith("linux")
        and "forkserver" in mp.get_all_start_methods()
        and os.environ.get("SMALLDATA_WARM", "1") != "0"
    )


def running() -> bool:
    """Whether this process has started its fork server already: a child of it costs nothing to start,
    where starting the server would cost what a fresh process costs."""
    return _context is not None


def context():
    """The fork server's context, its server started (importing PRELOAD) with its output in a log: what
    the libraries print at import (bitsandbytes' kernel notice, for one) belongs there, not on a terminal."""
    global _context
    if _context is None:
        from multiprocessing import forkserver, spawn

        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        spawn.get_preparation_data = _without_main(spawn.get_preparation_data)
        log = cache_dir() / "warm-server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with streams_to(log):
            forkserver.ensure_running()  # the server inherits these two, not the caller's terminal
        _context = ctx
    return _context


def _without_main(get_preparation_data):
    """multiprocessing has each child import its parent's `__main__` (as `__mp_main__`) before it runs
    the target, for targets defined there. A job's target is `_job` and its module is run by name, so a
    job skips that: a second copy of the caller (a command's module: 1-2 s of imports, and its
    "found in sys.modules" warning in the job's log). Other processes are left as multiprocessing makes them."""
    if getattr(get_preparation_data, "_skips_main_for_jobs", False):
        return get_preparation_data

    def prepared(name):
        data = get_preparation_data(name)
        if name == _JOB_NAME:
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
        return data

    prepared._skips_main_for_jobs = True
    return prepared


class _CallersFd:
    """The caller's file descriptor, handed to the child: a fork server's child inherits the server's
    streams, not the caller's, so the caller's stdout travels with the job (multiprocessing's DupFd)."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        from multiprocessing.reduction import DupFd

        return (_detach, (DupFd(self.fd),))


def _detach(dup) -> int:
    return dup.detach()


def _mmap_threshold(value: str | None) -> None:
    """glibc reads MALLOC_MMAP_THRESHOLD_ when a process starts; a forked child's allocator is the
    server's, so the child's own value is applied here (mallopt), as a fresh process would apply it."""
    if value and value.isdigit():
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").mallopt(-3, int(value))  # M_MMAP_THRESHOLD (malloc.h)
        except (OSError, AttributeError):
            pass  # not glibc: the variable means nothing there either


def _threads(value: str | None, servers: str | None) -> None:
    """torch (and OpenMP) read OMP_NUM_THREADS when they load, in the server; the child's own value is
    applied here, as a fresh process would read it (a benchmark that pins one thread, say): its first entry,
    as libgomp reads "4,2"; unset where the server had one, the machine's CPUs, OpenMP's default."""
    threads = omp_threads(value)
    if threads is None and not (value or "").strip() and servers:
        threads = len(os.sched_getaffinity(0))
    if threads is None:
        return  # "0" or a word: libgomp ignores it too
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _job(module: str, argv: list[str], log: str, env: dict, cwd: str, stdout, facts: str) -> None:
    """In the child: the environment, folder and streams of a fresh `python -m module argv...`, then run it.
    `stdout`: the caller's stdout (a descriptor), or None for the log."""
    global SERVER_PID
    SERVER_PID = os.getppid()
    servers_threads = os.environ.get("OMP_NUM_THREADS")
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    _mmap_threshold(env.get("MALLOC_MMAP_THRESHOLD_"))
    _threads(env.get("OMP_NUM_THREADS"), servers_threads)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd if stdout is None else stdout, 1)
    os.dup2(fd, 2)
    # the child's PYTHONPATH, read by a fresh interpreter at its start (the server read its own)
    sys.path[1:1] = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.argv = [module, *argv]
    code: object = 0
    try:
        if module.endswith(".py"):
            sys.path.insert(0, os.path.dirname(os.path.abspath(module)))
            runpy.run_path(module, run_name="__main__")
        else:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        Path(facts).write_text(json.dumps({"peak_rss_mb": round(rss_mb, 1)}))
    if code not in (0, None):
        raise SystemExit(code)  # multiprocessing turns it into the exit code (a message: printed, 1)


def run_module(
    module: str,
    argv: list[str],
    log: Path,
    cwd: Path,
    env: dict | None = None,
    keep_stdout: bool = False,
    header: str | None = None,
    on_start=None,
) -> ChildResult:
    """`python -m module argv...` as a child of the warm fork server; the same ChildResult as run_child."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n==== {now()} $ {header or ' '.join(['python -m', module, *argv])} (warm start)\n")
    env = dict(os.environ if env is None else env)
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryDirectory(prefix="warm-") as tmp:
        facts = Path(tmp) / "facts.json"
        t0 = time.time()
        proc = context().Process(
            name=_JOB_NAME,
            target=_job,
            args=(
                module,
                list(argv),
                str(log),
                env,
                str(cwd),
                _CallersFd(1) if keep_stdout else None,
                str(facts),
            ),
        )
        proc.start()
        _, peak_gpu = watch(proc.pid, env, on_start, proc.join, lambda: (proc.kill(), proc.join()))
        wall = round(time.time() - t0, 1)
        try:
            rss = json.loads(facts.read_text())["peak_rss_mb"]
        except (OSError, ValueError, KeyError):
            rss = None  # killed before it could say
    return ChildResult(proc.exitcode, wall, rss, peak_gpu)


def run_command(cmd: list[str], log: Path, cwd: Path, env: dict, on_start=None) -> ChildResult:
    """`cmd` as a child of the fork server where it is `python -m module ...` or `python script.py ...` with
    this interpreter or `llamafactory-cli ...` and warm starts are available; else a fresh process
    (run_child). The same log, exit status and measurements either way."""
    cli = llamafactory_cli()
    if cmd[:2] == [sys.executable, "-m"]:
        module, argv = cmd[2], cmd[3:]
    elif cmd[:1] == [sys.executable] and len(cmd) > 1 and cmd[1].endswith(".py"):
        script = Path(cwd, cmd[1])  # where the child will look for it
        module, argv = (str(script.resolve()), cmd[2:]) if script.is_file() else (None, [])
    elif cmd[: len(cli)] == cli:
        module, argv = "llamafactory.cli", cmd[len(cli) :]
    else:
        module = None
    if module is None or not available():
        return run_child(cmd, log, cwd=cwd, env=env, on_start=on_start)
    return run_module(module, argv, log, cwd, env, header=" ".join(cmd), on_start=on_start)
