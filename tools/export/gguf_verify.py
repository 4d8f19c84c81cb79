"""The check behind a GGUF export: llama.cpp (llama-server on 127.0.0.1) against the merged model in
transformers on the same dev prompts, token ids in and out (no second tokenisation on either side).

- Greedy agreement: per prompt, whether the first N generated tokens are identical (end of turn ends
  both); the share of prompts that agree.
- Reference perplexity: each reference answer's first M tokens teacher-forced through both, llama.cpp's
  log-probabilities taken from its full-vocabulary softmax (n_probs = vocabulary, before sampling).
- tokens/s: llama-server's own decode timing; transformers' wall time per generated token beside it.
- The template: llama.cpp's own rendering of the GGUF's embedded template (/apply-template) for one
  message, compared with LLaMA-Factory's prompt string, and llama.cpp's tokenisation of it (the prompt
  a chat client sends) with LLaMA-Factory's token ids.

Prompts and answers are encoded as LLaMA-Factory's training encodes them (user message = instruction,
newline, input; answers end with the template's end of turn), as the eval does.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from filelib import sha256_file
from plugins.pools import read_records
from plugins.publishing import resolve
from tools.core.llama_server import ServerError, serve
from tools.core.paths import DATA
from tools.export import gguf_template as tpl


def dev_rows(testset: str, dataset_dir: Path = DATA) -> list[dict]:
    """A registered evaluation set's rows {id, instruction, input, reference}."""
    path = Path(resolve(testset, dataset_dir=Path(dataset_dir)))
    rows = []
    for i, r in enumerate(read_records(path)):
        rows.append({"id": str(r.get("id", i)), "instruction": r.get("instruction") or r.get("prompt") or "",
                     "input": r.get("input") or "", "reference": r.get("output") or None})  # fmt: skip
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


def encode(template: Any, tokenizer: Any, row: dict, answer: str = "") -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) as training encodes them (and tools.eval.engine.Engine.encode)."""
    user = "\n".join(x for x in (row["instruction"], row.get("input") or "") if x)
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    prompt_ids, answer_ids = template.encode_oneturn(tokenizer, messages)
    if template.efficient_eos:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    return prompt_ids, answer_ids


def hf_reference(
    merged: Path, template_name: str, rows: list[dict], tokens: int, ppl_tokens: int
) -> dict[str, Any]:
    """The merged model in transformers, loaded as the eval loads it: per prompt its ids, greedy tokens,
    reference answer ids and their log-probabilities; tokens/s."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    template = tpl.lf_template(template_name, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    stop_ids = list(template.get_stop_token_ids(tokenizer))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    stops = set(stop_ids)
    out, gen_s, gen_n = [], 0.0, 0
    for row in rows:
        prompt_ids, answer_ids = encode(template, tokenizer, row, row.get("reference") or "")
        ids = torch.tensor([prompt_ids])
        t0 = time.perf_counter()
        with torch.inference_mode():
            seq = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), eos_token_id=stop_ids,
                pad_token_id=pad_id, do_sample=False, max_new_tokens=tokens,
                temperature=None, top_p=None, top_k=None,
            )[0, len(prompt_ids):].tolist()  # fmt: skip
        gen_s += time.perf_counter() - t0
        end = next((i for i, t in enumerate(seq) if t in stops), None)
        greedy = seq if end is None else seq[:end]
        gen_n += len(greedy)
        ref = answer_ids[:ppl_tokens] if row.get("reference") else []
        logprobs: list[float] = []
        if ref:
            full = torch.tensor([prompt_ids + ref])
            with torch.inference_mode():
                lp = torch.log_softmax(model(input_ids=full).logits[0].float(), -1)
            logprobs = [float(lp[len(prompt_ids) + i - 1, t]) for i, t in enumerate(ref)]
        out.append({"id": row["id"], "prompt_ids": prompt_ids, "greedy": greedy, "ref": ref,
                    "logprobs": logprobs})  # fmt: skip
    prompt, prompt_ids = tpl.lf_prompt(template, tokenizer, "Hello!")
    return {
        "rows": out,
        "tokens_per_s": gen_n / gen_s if gen_s else 0.0,
        "n_vocab": len(tokenizer),
        "stop_ids": sorted(stops),
        "template_probe": {"user": "Hello!", "prompt": prompt, "ids": prompt_ids},
    }


def ppl(rows_logprobs: list[list[float]]) -> float | None:
    flat = [x for lps in rows_logprobs for x in lps]
    return math.exp(-sum(flat) / len(flat)) if flat else None


def verify_file(path: Path, hf: dict[str, Any], tokens: int, threshold: float, log: Path) -> dict[str, Any]:
    """llama.cpp (llama-server on 127.0.0.1) answering the same prompt ids greedily, scoring the same
    reference tokens, and rendering the embedded template for one message."""
    stops = set(hf["stop_ids"])
    per, speeds, lps = [], [], []
    with serve(path, log=log) as server:
        probe = hf["template_probe"]
        rendered = server.post("/apply-template", {"messages": [{"role": "user", "content": probe["user"]}]})
        try:  # the GGUF's own tokenizer on its own rendering: what a chat client's prompt becomes
            probe_ids: list[int] | str = server.tokenize(rendered.get("prompt") or "")
        except ServerError as e:
            probe_ids = str(e)
        for r in hf["rows"]:
            got, speed = server.greedy(r["prompt_ids"], tokens)
            end = next((i for i, t in enumerate(got) if t in stops), len(got))
            got = got[:end][:tokens]  # an end of turn ends it on both sides
            speeds.append(speed)
            lp = server.token_logprobs(r["prompt_ids"], r["ref"], hf["n_vocab"]) if r["ref"] else []
            lps.append(lp)
            per.append({"id": r["id"], "match": got == r["greedy"][:tokens], "llama": got, "hf": r["greedy"]})
    agreement = sum(p["match"] for p in per) / len(per) if per else 0.0
    return {
        "file": path.name,
        "size_bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "agreement": agreement,
        "matched": sum(p["match"] for p in per),
        "prompts": len(per),
        "flagged": agreement < threshold,
        "ppl_llama_cpp": ppl(lps),
        "ppl_hf": ppl([r["logprobs"] for r in hf["rows"]]),
        "tokens_per_s": sum(speeds) / len(speeds) if speeds else 0.0,
        "template_matches": rendered.get("prompt") == probe["prompt"],
        "template_rendered": rendered.get("prompt"),
        "tokens_match": probe_ids == probe["ids"],
        "tokens_llama_cpp": probe_ids,
        "per_prompt": per,
    }


def _template_cell(v: dict[str, Any]) -> str:
    if not v["template_matches"]:
        return "DIFFERS"
    return "same" if v.get("tokens_match", True) else "same text, OTHER TOKENS"


def report_markdown(rec: dict[str, Any]) -> str:
    def num(x, fmt="{:.3f}"):
        return "-" if x is None else fmt.format(x)

    lines = [
        f"# GGUF export of {rec['run']}",
        "",
        f"llama.cpp ({rec['llama_cpp']}) against the merged model in transformers on {rec['testset']} "
        f"({rec['prompts']} prompts): greedy agreement over the first {rec['tokens']} tokens, reference "
        f"perplexity over the first {rec['ppl_tokens']} answer tokens. Flagged below {rec['threshold']:.0%}.",
        "",
        "| file | size (MiB) | agreement | ppl llama.cpp | ppl HF (merged) | tokens/s llama.cpp | template | flag |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for v in rec["files"]:
        lines.append(
            f"| {v['file']} | {v['size_bytes'] / 2**20:.1f} | {v['matched']}/{v['prompts']} ({v['agreement']:.0%}) "
            f"| {num(v['ppl_llama_cpp'])} | {num(v['ppl_hf'])} | {num(v['tokens_per_s'], '{:.1f}')} "
            f"| {_template_cell(v)} | {'BELOW THRESHOLD' if v['flagged'] else 'ok'} |"
        )
    lines += ["", f"Merged model in transformers: {rec['hf_tokens_per_s']:.1f} tokens/s (float32, CPU).", ""]
    if rec.get("lora"):
        lines.append(f"LoRA adapter alone: `{rec['lora']}` (use with the base model's GGUF and `--lora`).")
    return "\n".join(lines) + "\n"
