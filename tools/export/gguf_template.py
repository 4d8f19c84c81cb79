"""The chat template a GGUF carries, and the Ollama Modelfile beside it, both from the LLaMA-Factory
template the run was trained with, so llama.cpp and Ollama build the same prompt string as training.

- `gguf_jinja`: LLaMA-Factory's own jinja rendering of its template (`Template._get_jinja_template`),
  written into the GGUF as `tokenizer.chat_template` (the merged folder may carry the base model's
  template instead: SmolLM2's own says "...by Hugging Face" where LLaMA-Factory's smollm2 template,
  which training used, says "...by Hugging Face.").
- `modelfile`: FROM, TEMPLATE (Ollama's Go template for one turn: `.System`, `.Prompt`), SYSTEM (the
  template's default system prompt), PARAMETER stop for each stop word and the end-of-sequence token,
  and PARAMETER values from a decoding point (temperature 0 for greedy).
- `render_*`: the prompt string each of them gives for one user message (and a system prompt), and
  `lf_prompt`: LLaMA-Factory's for the same messages (its token ids, decoded), for the tests and the
  report's template check.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Decoding:
    """A decoding point by its name as the eval writes it (tools.eval.decoding: `greedy`, `greedy_rp1.1`,
    `t0.7_p0.9[_k40][_rp1.1][_s7]`), read here because export does not import the eval stage."""

    name: str = "greedy"
    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int = 42

    @classmethod
    def parse(cls, name: str, max_new_tokens: int = 512) -> Decoding:
        m = re.fullmatch(r"greedy(?:_rp(?P<rp>[0-9.]+))?", name) or re.fullmatch(
            r"t(?P<t>[0-9.]+)_p(?P<p>[0-9.]+)(?:_k(?P<k>\d+))?(?:_rp(?P<rp>[0-9.]+))?(?:_s(?P<s>\d+))?", name
        )
        if not m:
            raise ValueError(
                f"decoding {name!r}: expected 'greedy', 'greedy_rp<R>' or 't<T>_p<P>[_k<K>][_rp<R>][_s<seed>]'"
            )
        g = m.groupdict()
        rp = float(g["rp"]) if g.get("rp") else 1.0
        if "t" not in g:
            return cls(name, max_new_tokens, repetition_penalty=rp)
        return cls(
            name, max_new_tokens, True, float(g["t"]), float(g["p"]), int(g["k"] or 0), rp, int(g["s"] or 42)
        )

    @classmethod
    def greedy(cls, max_new_tokens: int = 512) -> Decoding:
        return cls("greedy", max_new_tokens)


def lf_template(name: str, tokenizer: Any):
    """LLaMA-Factory's template by name, with the tokenizer fixed as training and the eval fix it."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    return get_template_and_fix_tokenizer(tokenizer, DataArguments(template=name))


def gguf_jinja(template: Any, tokenizer: Any) -> str:
    return template._get_jinja_template(tokenizer)


def messages_of(user: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": user}
    ]


def lf_prompt(template: Any, tokenizer: Any, user: str, system: str | None = None) -> tuple[str, list[int]]:
    """LLaMA-Factory's prompt for one user turn: (string, token ids), as training and the eval encode it."""
    ids, _ = template.encode_oneturn(
        tokenizer, [{"role": "user", "content": user}, {"role": "assistant", "content": ""}], system
    )
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False), ids


def render_jinja(chat_template: str, tokenizer: Any, user: str, system: str | None = None) -> str:
    """A GGUF's chat template rendered as llama.cpp's --jinja and transformers render it."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.Undefined)
    return env.from_string(chat_template).render(
        messages=messages_of(user, system),
        add_generation_prompt=True,
        bos_token=tokenizer.bos_token or "",
        eos_token=tokenizer.eos_token or "",
    )


# ---------------------------------------------------------------------------------------- Ollama
def _go_slots(slots: list, tokenizer: Any, value: str) -> str:
    out = []
    for slot in slots:
        if isinstance(slot, str):
            out.append(slot.replace("{{content}}", value))
        elif isinstance(slot, set):
            if "bos_token" in slot and tokenizer.bos_token_id is not None:
                out.append(tokenizer.bos_token)
            elif "eos_token" in slot and tokenizer.eos_token_id is not None:
                out.append(tokenizer.eos_token)
        elif isinstance(slot, dict) and "token" in slot:
            out.append(slot["token"])
        else:
            raise ValueError(f"template slot {slot!r}: not expressible in a Modelfile")
    return "".join(out)


def ollama_template(template: Any, tokenizer: Any) -> tuple[str, str | None]:
    """(TEMPLATE, SYSTEM) for one turn; LLaMA-Factory's llama2-style templates fuse the system prompt
    into the first user message, the others put it in a turn of its own."""
    prefix = _go_slots(template.format_prefix.apply(), tokenizer, "")
    system = _go_slots(template.format_system.apply(), tokenizer, "{{ .System }}")
    if type(template).__name__ == "Llama2Template":
        user = _go_slots(
            template.format_user.apply(), tokenizer, "{{ if .System }}" + system + "{{ end }}{{ .Prompt }}"
        )
        text = prefix + user
    else:
        user = _go_slots(template.format_user.apply(), tokenizer, "{{ .Prompt }}")
        text = prefix + "{{ if .System }}" + system + "{{ end }}" + user
    return text, (template.default_system or None)


def stop_words(template: Any, tokenizer: Any) -> list[str]:
    words = list(template.stop_words or [])
    if tokenizer.eos_token and tokenizer.eos_token not in words:
        words.append(tokenizer.eos_token)
    return words


def point_parameters(point: Decoding) -> dict[str, Any]:
    """Ollama PARAMETER values for a decoding point (greedy: temperature 0, top_k 1)."""
    params: dict[str, Any] = {"num_predict": point.max_new_tokens, "repeat_penalty": point.repetition_penalty}
    if point.do_sample:
        params.update(temperature=point.temperature, top_p=point.top_p, seed=point.seed)
        if point.top_k:
            params["top_k"] = point.top_k
    else:
        params.update(temperature=0, top_k=1)
    return params


def _quote(text: str) -> str:
    if '"""' in text:
        raise ValueError('a Modelfile cannot hold """ inside a triple-quoted value')
    return '"""' + text + '"""'


def modelfile(gguf_name: str, template: Any, tokenizer: Any, point: Decoding, ctx: int = 2048) -> str:
    text, system = ollama_template(template, tokenizer)
    lines = [f"FROM ./{gguf_name}", f"TEMPLATE {_quote(text)}"]
    if system:
        lines.append(f"SYSTEM {_quote(system)}")
    for word in stop_words(template, tokenizer):
        lines.append(f"PARAMETER stop {json.dumps(word)}")
    lines.append(f"PARAMETER num_ctx {ctx}")
    for key, value in point_parameters(point).items():
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n"


def parse_modelfile(text: str) -> dict[str, Any]:
    """TEMPLATE, SYSTEM and PARAMETERs (stop as a list) of a Modelfile written by `modelfile`."""
    out: dict[str, Any] = {"PARAMETER": {}, "stop": []}
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        key, _, rest = line.partition(" ")
        if key in ("TEMPLATE", "SYSTEM") and rest.startswith('"""'):
            body = rest[3:]
            while '"""' not in body:
                i += 1
                body += lines[i]
            out[key] = body[: body.index('"""')]
        elif key == "PARAMETER":
            name, _, value = rest.strip().partition(" ")
            if name == "stop":
                out["stop"].append(json.loads(value))
            else:
                out["PARAMETER"][name] = value
        elif key == "FROM":
            out["FROM"] = rest.strip()
        i += 1
    return out


def render_ollama(template_text: str, user: str, system: str | None) -> str:
    """Ollama's rendering of the Go-template subset `ollama_template` writes ({{ if .System }}..{{ end }},
    {{ .System }}, {{ .Prompt }}); `system` is the request's system prompt or else the SYSTEM line."""

    def cond(m: re.Match) -> str:
        return m.group(1) if system else ""

    text = re.sub(r"\{\{ if \.System \}\}(.*?)\{\{ end \}\}", cond, template_text, flags=re.S)
    if "{{" in text.replace("{{ .System }}", "").replace("{{ .Prompt }}", ""):
        raise ValueError("a Go template construct this renderer does not know")
    return text.replace("{{ .System }}", system or "").replace("{{ .Prompt }}", user)


def write_modelfile(path: Path, text: str) -> Path:
    from filelib import atomic_write_text

    return atomic_write_text(path, text)
