"""Shared by the documentation tests: the site built once per session, and documented commands run as written.

A documented command runs the way a reader runs it after `source .venv/bin/activate`: through bash, from
the repo root, with the venv's `bin/` first on PATH. Outputs go to a private root (`SMALLDATA_OUT`) and,
where a command registers datasets, a copy of `data/` (`SMALLDATA_DATA`), so the repository's own
folders are never touched. `make` targets that depend on `setup` run only when the venv matches the lock
(tests never pip-install); otherwise they skip and say why.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tools.core.paths import ROOT

VENV_BIN = Path(sys.executable).parent


def setup_is_current() -> bool:
    """Whether `make setup` would do nothing: the Makefile's stamp for this lock file's hash exists."""
    digest = hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()[:16]
    return (ROOT / ".venv" / f".installed-{digest}").exists()


@pytest.fixture()
def current_setup() -> None:
    """For `make` targets that depend on `setup`: skip unless setup would do nothing."""
    if not setup_is_current():
        pytest.skip("the venv is older than requirements.lock: run `make setup` (tests never pip-install)")


def command_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV_BIN.parent)
    env.update(NO_MKDOCS_2_WARNING="1", HF_HUB_DISABLE_UPDATE_CHECK="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_documented(command: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Run one documented command exactly as written (bash, repo root, the venv activated)."""
    return subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env=command_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """`mkdocs build --strict` into a tmp folder, once per session; fails the tests that need it on a warning."""
    out = tmp_path_factory.mktemp("docs") / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    assert "WARNING" not in proc.stderr, proc.stderr[-3000:]
    return out


@pytest.fixture()
def documented():
    """`documented(command, timeout=..., **env)`: run a documented command as written (see the module doc)."""
    return run_documented


@pytest.fixture()
def started():
    """`started(command, log, **env)`: a long-running documented command (a server) started as written in its
    own process group, which is stopped, by its id, when the test ends."""
    running = []

    def start(command: str, log: Path, **env: str) -> subprocess.Popen:
        out = open(log, "w")
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=ROOT,
            env=command_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        running.append((proc, out))
        return proc

    yield start
    for proc, out in running:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.close()
