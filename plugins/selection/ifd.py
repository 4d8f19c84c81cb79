"""IFD, instruction-following difficulty (Li et al. 2024; Superfiltering, Li et al. 2024).

IFD = PPL(answer | instruction) / PPL(answer alone), computed with a small model: the more the
instruction fails to make the answer predictable, the more the row teaches. Superfiltering's
rule is kept: rows with IFD >= 1 (the instruction does not help at all) rank below every other.

Speed: both sequences of every row are sorted by length and packed into batches under a token
budget (length bucketing, so padding is a few percent); logits are computed only at answer
positions (the LM head is a fifth of SmolLM2's FLOPs). Results are cached by row hash under
`<cache>/ifd/<model key>.jsonl`, appended batch by batch, so a killed run resumes and a second
run costs nothing. On CPU, score only a prefiltered candidate set (the manifest says so).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from filelib import read_jsonl
from plugins.pools import DataError
from plugins.selection.progress import Progress

PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
    "### Input:\n{input}\n\n### Response:\n"
)
VERSION = "ifd-v1"


def model_key(model: Path, max_tokens: int) -> str:
    """Cache file name: model folder, its config and weights size, the truncation, our version."""
    model = Path(model)
    h = hashlib.sha256()
    h.update((model / "config.json").read_bytes() if (model / "config.json").exists() else b"")
    for w in sorted(model.glob("*.safetensors")):
        h.update(f"{w.name}:{w.stat().st_size}".encode())
    h.update(f"{VERSION}:{max_tokens}".encode())
    return f"{model.name}-{h.hexdigest()[:12]}"


def row_hash(row: dict) -> str:
    return hashlib.sha256(
        "\x00".join((row["instruction"], row["input"], row["output"])).encode("utf-8")
    ).hexdigest()[:24]


def _load_cache(path: Path) -> dict[str, dict]:
    return {r["h"]: r for r in read_jsonl(path)} if path.exists() else {}


def _append(path: Path, recs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs))
        f.flush()
        os.fsync(f.fileno())


def build_sequences(rows: list[dict], tok, max_tokens: int) -> list[tuple[int, int, list[int], int]]:
    """(row, kind 0=conditioned 1=alone, token ids, answer start) for every row, truncated."""
    prompts = [(PROMPT_INPUT if r["input"] else PROMPT).format(**r) for r in rows]
    p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
    a_ids = tok([r["output"] for r in rows], add_special_tokens=False)["input_ids"]
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    seqs = []
    for i, (p, a) in enumerate(zip(p_ids, a_ids, strict=True)):
        a = (a + eos)[: max(2, max_tokens // 2)]
        p = p[-(max_tokens - len(a)) :] if len(p) + len(a) > max_tokens else p
        seqs.append((i, 0, p + a, len(p)))
        seqs.append((i, 1, a, 0))
    return seqs


def batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Length-bucketed batches: indices sorted by length, packed while B * max_len <= budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out, cur, cur_max = [], [], 0
    for i in order:
        m = max(cur_max, lengths[i])
        if cur and m * (len(cur) + 1) > batch_tokens:
            out.append(cur)
            cur, m = [], lengths[i]
        cur.append(i)
        cur_max = m
    if cur:
        out.append(cur)
    return out


def answer_losses(model, seqs: list[tuple], batch_tokens: int, device: str, progress, pad_id: int):
    """Mean cross-entropy of the answer tokens of each sequence; returns (losses, tokens seen). `progress`:
    a Progress counting sequences, True for a bar of its own, or False."""
    import torch

    losses = np.zeros(len(seqs), dtype=np.float64)
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    lengths = [len(s[2]) for s in seqs]
    plan = batches(lengths, batch_tokens)
    tokens = 0
    bar = (
        progress
        if isinstance(progress, Progress)
        else Progress(len(seqs), "IFD", "sequences", enabled=progress)
    )
    with torch.inference_mode():
        for idx in plan:
            T = max(lengths[i] for i in idx)
            ids = torch.full((len(idx), T), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), T), dtype=torch.long)
            tgt = torch.zeros((len(idx), T), dtype=torch.bool)  # positions whose NEXT token is answer
            for b, i in enumerate(idx):
                s = seqs[i][2]
                ids[b, : len(s)] = torch.tensor(s)
                mask[b, : len(s)] = 1
                start = max(seqs[i][3], 1)
                tgt[b, start - 1 : len(s) - 1] = True
            tokens += int(mask.sum())
            h = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            sel = tgt.to(device)
            logits = head(h[sel]).float()
            labels = ids.to(device)[:, 1:][sel[:, :-1]]
            ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
            row_of = torch.arange(len(idx), device=device).unsqueeze(1).expand(-1, T)[sel]
            sums = torch.zeros(len(idx), device=device).index_add_(0, row_of, ce)
            counts = torch.bincount(row_of, minlength=len(idx)).clamp(min=1)
            losses[idx] = (sums / counts).cpu().numpy()
            bar.update(len(idx))
    if bar is not progress:
        bar.close()
    return losses, tokens


def load_model(model_path: Path, device: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device != "cpu" else torch.float32
    tok = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=dtype).to(device).eval()
    return model, tok, device


def compute_ifd(
    rows: list[dict],
    model_path: Path,
    cache_dir: Path | None = None,
    batch_tokens: int = 4096,
    max_tokens: int = 512,
    device: str | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, dict]:
    """IFD per row (cached by row hash); returns (ifd, stats: cache hits, rows/s, tokens/s)."""
    model_path = Path(model_path)
    if not (model_path / "config.json").exists():
        raise DataError(f"IFD needs a model: {model_path} has no config.json (run `make base-model`)")
    key = model_key(model_path, max_tokens)
    cache_file = Path(cache_dir) / f"{key}.jsonl" if cache_dir else None
    cache = _load_cache(cache_file) if cache_file else {}
    hashes = [row_hash(r) for r in rows]
    todo = [i for i, h in enumerate(hashes) if h not in cache]
    stats = {"rows": len(rows), "cache_hits": len(rows) - len(todo), "scored": len(todo), "model": key}
    if todo:
        model, tok, device = load_model(model_path, device)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        t0 = time.perf_counter()
        # chunks so progress is saved as it goes (a killed run resumes from the cache)
        chunk = 256
        tokens = 0
        bar = Progress(2 * len(todo), f"IFD ({len(todo)} rows)", "sequences", enabled=progress)
        for c in range(0, len(todo), chunk):
            part = todo[c : c + chunk]
            seqs = build_sequences([rows[i] for i in part], tok, max_tokens)
            losses, n = answer_losses(model, seqs, batch_tokens, device, bar, pad)
            tokens += n
            recs = []
            for j, i in enumerate(part):
                cond, alone = float(losses[2 * j]), float(losses[2 * j + 1])
                rec = {"h": hashes[i], "cond": cond, "alone": alone}
                cache[hashes[i]] = rec
                recs.append(rec)
            if cache_file:
                _append(cache_file, recs)
        bar.close()
        dt = time.perf_counter() - t0
        stats.update(seconds=round(dt, 2), tokens=tokens, tokens_per_s=round(tokens / dt, 1))
        stats["rows_per_s"] = round(len(todo) / dt, 2)
        stats["device"] = device
    ifd = np.array([np.exp(cache[h]["cond"] - cache[h]["alone"]) for h in hashes], dtype=np.float64)
    return ifd, stats
