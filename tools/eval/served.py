"""The `gguf:` source answering through llama.cpp: a GGUF file served by llama-server on 127.0.0.1
(tools.core.llama_server, started here and stopped by `close`), asked through its OpenAI-compatible
/v1/chat/completions, the way a user's client asks it.

The prompt is the GGUF's own: the server renders the user message with the chat template embedded in
the file (`--jinja`), so a template or stop-token mismatch between the export and LLaMA-Factory shows
in the answers (and in the `prompt` column, llama.cpp's rendering of the message). The user message
is the eval's (instruction, newline, input), as for every other source.

`GgufEngine` offers what `tools.eval.generate.generate_point` asks of an engine (`use`, `encode`,
`generate`, `tokenizer.decode`, `dtype`, `device`), so predictions, resumption and generation.json are
the same files as for the Hugging Face sources. Decoding: a greedy point is llama.cpp's top-1 token
(temperature 0, `top_k` 1, nothing else in the sampler chain), the project's greedy decoding; a
sampled point runs llama.cpp's repetition penalty (whole context), temperature, top-k and top-p in
transformers' order, seeded per batch; llama.cpp's other samplers (min-p, typical, XTC, DRY) are off.
A batch is one prompt: the server answers one request at a time (`--parallel 1`). The peak memory
generation.json records is the server's (its resident set, where the model is), not this process's.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from tools.core import llama_server
from tools.eval.decoding import DecodingPoint
from tools.eval.prompts import GenerateError, user_message
from tools.eval.source import Source

CTX = 4096  # the server's context: prompt and answer together (also the repetition penalty's window)
LABEL = "llama.cpp llama-server --jinja (the GGUF's embedded chat template), /v1/chat/completions"


def sampling(point: DecodingPoint, seed: int) -> dict:
    """llama-server's sampling fields for a decoding point (tools.eval.decoding)."""
    chain = ["penalties"] if point.repetition_penalty != 1.0 else []
    body: dict = {
        "seed": seed,
        "repeat_penalty": point.repetition_penalty,
        "repeat_last_n": CTX,
        "min_p": 0.0,
    }
    if point.temperature == 0:
        return body | {"samplers": [*chain, "top_k"], "top_k": 1, "temperature": 0.0}
    return body | {
        "samplers": [*chain, "temperature", "top_k", "top_p"],
        "temperature": point.temperature,
        "top_k": point.top_k,  # 0: off, in llama.cpp as in transformers
        "top_p": point.top_p,
    }


class GgufEngine:
    """llama-server holding one GGUF file; answers prompts one request at a time."""

    label = LABEL
    batch_size = 1

    def __init__(self, source: Source, log: Path | None = None, threads: int | None = None):
        if source.kind != "gguf":
            raise GenerateError(f"{source.run}: a {source.kind} source is not served by llama.cpp")
        try:
            llama_server.binary("llama-server")
        except llama_server.Missing as e:
            raise GenerateError(str(e)) from None
        self.source = source
        self.dtype = source.extra.get("quantization") or "gguf"
        self.device = "cpu (llama.cpp)"
        self.compute_s = 0.0
        self.tokenizer = self  # generate_point writes the prompt column through tokenizer.decode
        self._messages: dict[tuple[int, ...], list[dict]] = {}
        self._stack = contextlib.ExitStack()
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.server = self._stack.enter_context(
                llama_server.serve(Path(source.model_name_or_path), ctx=CTX, threads=threads, log=log)
            )
        except RuntimeError as e:
            raise GenerateError(f"{source.run}: {e}") from None

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> GgufEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def peak_mem_mb(self) -> float:
        """The server's peak resident memory (where the model is), from /proc; 0 where there is none."""
        try:
            status = Path(f"/proc/{self.server.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        kb = next((line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")), "0")
        return int(kb) / 1024

    def use(self, source: Source) -> GgufEngine:
        if source.kind != "gguf" or source.model_name_or_path != self.source.model_name_or_path:
            raise GenerateError(
                f"{source.run}: another model than this server's {self.source.model_name_or_path}"
            )
        self.source = source
        return self

    def encode(self, row: dict, answer: str = "") -> tuple[list[int], list[int]]:
        """(prompt ids, []): the embedded template's rendering of the user message, tokenised by the server."""
        if answer:
            raise GenerateError("a GGUF source generates; it does not score given answers")
        messages = [{"role": "user", "content": user_message(row)}]
        ids = self._ask(self.server.tokenize, self._ask(self.server.apply_template, messages))
        self._messages[tuple(ids)] = messages
        return ids, []

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._ask(self.server.detokenize, ids)

    def _ask(self, call, *args):
        """A request to the server; an error it answers with becomes one line naming the file."""
        try:
            return call(*args)
        except llama_server.ServerError as e:
            raise GenerateError(f"{self.source.model_name_or_path}: {e}") from None

    def generate(self, prompts: list[list[int]], point: DecodingPoint, seed: int) -> list[dict]:
        """Each prompt's answer through /v1/chat/completions: {answer, new_tokens, truncated}."""
        out = []
        for ids in prompts:
            t0 = time.perf_counter()
            messages = self._messages[tuple(ids)]
            r = self._ask(self.server.chat, messages, sampling(point, seed), point.max_new_tokens)
            self.compute_s += time.perf_counter() - t0
            out.append(
                {"answer": r["answer"].strip(), "new_tokens": r["new_tokens"], "truncated": r["truncated"]}
            )
        return out


def open_engine(source: Source, dtype: str | None = None, log: Path | None = None):
    """The engine a source answers through: llama.cpp for a GGUF file, else LLaMA-Factory's (tools.eval.engine)."""
    if source.kind != "gguf":
        from tools.eval.engine import Engine

        return Engine(source, dtype)
    return GgufEngine(source, log=log)


def check_gguf(source: Source, dtype: str | None, base_model: str | None) -> None:
    """Refuse what does not apply to a GGUF source, and a missing llama-server, before anything is written."""
    if source.kind != "gguf":
        return
    for flag, given in (("--dtype", dtype), ("--base-model", base_model)):
        if given:
            raise GenerateError(
                f"{flag} does not apply to a GGUF source (its weights and type are in the file)"
            )
    try:
        llama_server.binary("llama-server")
    except llama_server.Missing as e:
        raise GenerateError(str(e)) from None
