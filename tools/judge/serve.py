"""A local model behind a real OpenAI-compatible server: `llamafactory-cli api`, started and stopped here.

For people with a local model large enough to follow the judge prompt (and for the tests): the
model is served on a free loopback port, the judge talks to it like to OpenAI, and the server is
stopped (its own process group) when the block ends, whatever happened inside it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

from tools.core.paths import ROOT, TEMPLATES, llamafactory_cli
from tools.core.profiles import load_yaml


class ServeError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def template_for(model_path: Path) -> str | None:
    """The LLaMA-Factory template of the profile whose model is this folder, if any."""
    for prof in sorted((TEMPLATES / "profiles").glob("*.yaml")):
        d = load_yaml(prof) or {}
        p = d.get("model_name_or_path")
        if p and (ROOT / p).resolve() == Path(model_path).resolve():
            return d.get("template")
    return "smollm2" if "smollm2" in Path(model_path).name.lower() else None


def _up(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


@contextlib.contextmanager
def serve_local(
    model_path: str | Path, template: str | None = None, startup_s: float = 180, log_path: Path | None = None
) -> Iterator[str]:
    """Yield the base URL (http://127.0.0.1:<port>/v1) of `llamafactory-cli api` serving the model."""
    model_path = Path(model_path).resolve()
    if not (model_path / "config.json").exists():
        raise ServeError(f"{model_path}: not a model folder (no config.json)")
    template = template or template_for(model_path)
    if not template:
        raise ServeError(f"{model_path}: which LLaMA-Factory template? pass --serve-template")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="judge-serve-") as tmp:
        cfg = Path(tmp) / "serve.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {"model_name_or_path": str(model_path), "template": template, "infer_backend": "huggingface"}
            )
        )
        env = {
            **os.environ,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
            "API_MODEL_NAME": model_path.name,
        }
        env.pop("API_KEY", None)  # the server would otherwise demand it
        log = open(log_path or Path(tmp) / "serve.log", "w")
        proc = subprocess.Popen(
            [*llamafactory_cli(), "api", str(cfg)],
            env=env,
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base_url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.time() + startup_s
            while not _up(base_url):
                if proc.poll() is not None:
                    log.flush()
                    tail = Path(log.name).read_text()[-2000:]
                    raise ServeError(f"llamafactory-cli api exited with {proc.returncode}:\n{tail}")
                if time.time() > deadline:
                    raise ServeError(f"llamafactory-cli api not up after {startup_s:.0f} s")
                time.sleep(0.5)
            yield base_url
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.close()
