"""Data benchmark: selection on a 52k-row pool vs bare `json.load`; the whole `tools.data` command
(load, select, curriculum, write, register) on it; diversity (k-center) and the quota selection on the
same pool; IFD vs a bare forward pass.

The 52k-row pool is SYNTHETIC: the real ~2k Alpaca rows (HW5's `alpaca_2k` source, found by
tools/data/sources.py; without it, the demo pool) repeated, each copy's instruction tagged so no
row is a duplicate, written in FastChat's shape like HW5's fastchat_alpaca_52k.json. Both sides of
each ratio are measured in this run, on this machine: selection = load + normalise + score + top-N from the same file.

Usage:
    python -m tools.bench.data [--quick]
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from filelib import run_main
from plugins.pools import DataError, load_table
from plugins.selection import Context, score, top_n
from tools.core.args import command, opt
from tools.core.paths import EMBEDDED_MODEL
from tools.data import locate


def seed_rows() -> tuple[list[dict], str]:
    """FastChat records to scale up, and where they came from."""
    try:
        found = locate("alpaca_2k")
    except DataError:
        found = []
    if found:
        recs, seen = [], set()
        for r in (r for f in found for r in json.loads(f.path.read_text())):
            if r["id"] not in seen:  # the two files share 28 ids: keep the first, so no copy has duplicates
                seen.add(r["id"])
                recs.append(r)
        return recs, f"the real 2k Alpaca rows ({found[0].where})"
    from plugins.pools import demo_pool

    recs = [
        {
            "id": r["id"],
            "conversations": [
                {"from": "human", "value": r["instruction"]},
                {"from": "gpt", "value": r["output"]},
            ],
            "score": r["score"],
        }
        for r in demo_pool.build()
    ]
    return recs, "the demo pool (HW5's Alpaca files absent: make fetch-hw5)"


def make_pool(path: Path, rows: int) -> str:
    recs, origin = seed_rows()
    out = []
    for k in range(rows):
        r = recs[k % len(recs)]
        c = k // len(recs)
        conv = [dict(t) for t in r["conversations"]]
        conv[0]["value"] = conv[0]["value"] + (f" (variant {c})" if c else "")
        out.append({"id": f"{r['id']}-{c}", "conversations": conv, "score": r.get("score", 4.0)})
    path.write_text(json.dumps(out, ensure_ascii=False))
    return f"{rows} rows, {path.stat().st_size / 1e6:.0f} MB, synthetic: {origin} repeated"


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_selection(path: Path, strategies: tuple[str, ...], repeat: int) -> list[str]:
    t_json = _best(lambda: json.load(open(path, encoding="utf-8")), repeat)
    lines = [f"json.load: {t_json:.3f} s (best of {repeat})"]
    for s in strategies:

        def run(s=s):
            rows = load_table(path, require_answer=True).rows
            top_n(rows, score(rows, s, Context()), 100)

        t = _best(run, repeat)
        target = " (target <= 1.5x)" if s in ("length", "rating") else ""
        lines.append(f"select top 100 by {s}: {t:.3f} s = {t / t_json:.2f}x json.load{target}")
    return lines


CHEAP_STUDY = "random_s0,random_s1,random_s2,rating,hw5_default,length,complexity"


def bench_pipeline(path: Path, t_json: float, study: str = CHEAP_STUDY) -> list[str]:
    """`python -m tools.data --source <52k file>` in this process, into a scratch dataset dir: the
    default subset with its curriculum, then with the cheap half of the data study (the model-based
    strategies, long_is_more and IFD, are model time, measured by the IFD line below). Beyond selecting,
    the command hashes the source file, imports kneed (scipy, ~2 s) for the knee, splits, writes and
    registers: measured 5.2x and 6.9x json.load on a loaded 2-core machine (json.load 3.4 s)."""
    import contextlib
    import io

    from tools.data import main as data_main

    lines = []
    for label, extra, target in (
        ("select + curriculum + register", [], 6.0),
        (f"+ {len(study.split(','))} study strategies", ["--strategies", study], 8.0),
    ):
        with tempfile.TemporaryDirectory() as d:
            argv = ["--source", str(path), "--dataset-dir", d, "--no-plot", *extra]
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()) as out:
                rc = data_main(argv)
            t = time.perf_counter() - t0
        if rc != 0:
            return [f"data command failed ({rc}): {out.getvalue()[-300:]}"]
        curriculum = next((x for x in out.getvalue().splitlines() if "curriculum:" in x), "")
        stages = curriculum.split("curriculum: ", 1)[-1].rsplit(" (", 1)[0]  # less the closing (how)
        lines.append(
            f"data command {label}: {t:.2f} s = {t / t_json:.2f}x json.load (target <= {target:.0f}x)"
            + (f"; curriculum {stages}" if not extra and curriculum else "")
        )
    return lines


def bench_diversity(rows: list[dict], quick: bool) -> list[str]:
    """k-center diversity on the pool: after the quality prefilter (DEITA's order) and alone, and the
    5.12 recipe's quota; hashed TF-IDF always, MiniLM (if installed) on the prefiltered candidates."""
    from plugins.selection import minilm_available, select_quota

    cases = [("hashed", "hw5_default"), ("hashed", "none")]
    if minilm_available() and not quick:
        cases.append(("minilm", "hw5_default"))
    lines = []
    for emb, pre in cases:
        ctx = Context(n=100, embedding=emb, diversity_prefilter=pre)
        t0 = time.perf_counter()
        top_n(rows, score(rows, "diversity", ctx), 100)
        n = ctx.notes["diversity"]
        lines.append(
            f"diversity ({emb}, prefilter {n['prefilter']}): 100 of {n['candidates']} candidates "
            f"in {time.perf_counter() - t0:.2f} s"
        )
    ctx = Context(n=100, embedding="hashed")
    t0 = time.perf_counter()
    select_quota(rows, "quota:60*length_window,20*complexity,20*diversity", 100, ctx)
    lines.append(
        f"quota 60*length_window,20*complexity,20*diversity (hashed): {time.perf_counter() - t0:.2f} s"
    )
    return lines


def bench_ifd(rows: list[dict], model: Path, batch_tokens: int) -> list[str]:
    """IFD tokens/s vs a bare forward pass (full logits) over the same sequences and batches."""
    import torch

    from plugins.selection import ifd

    m, tok, device = ifd.load_model(model)
    seqs = ifd.build_sequences(rows, tok, 128)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    lengths = [len(s[2]) for s in seqs]
    plan = ifd.batches(lengths, batch_tokens)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in plan)

    def bare():
        with torch.inference_mode():
            for b in plan:
                T = max(lengths[i] for i in b)
                ids = torch.full((len(b), T), pad, dtype=torch.long)
                mask = torch.zeros((len(b), T), dtype=torch.long)
                for j, i in enumerate(b):
                    ids[j, : lengths[i]] = torch.tensor(seqs[i][2])
                    mask[j, : lengths[i]] = 1
                m(input_ids=ids.to(device), attention_mask=mask.to(device))

    with torch.inference_mode():  # warm-up on one short batch
        m(input_ids=torch.tensor([seqs[0][2][:16]], device=device))
    t_bare = _best(bare, 1)
    t0 = time.perf_counter()
    ifd.answer_losses(m, seqs, batch_tokens, device, False, pad)
    t_ifd = time.perf_counter() - t0
    tokens = sum(lengths)
    return [
        f"IFD model {model.name} on {device}: {len(rows)} rows, {tokens} tokens "
        f"(padding {100 * (padded - tokens) / padded:.1f}% with length buckets)",
        f"bare forward: {tokens / t_bare:.0f} tokens/s; IFD scoring: {tokens / t_ifd:.0f} tokens/s "
        f"= {t_bare / t_ifd:.2f}x (target >= 0.8x); {len(rows) / t_ifd:.1f} rows/s",
    ]


def bench(quick: bool = False) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pool_52k.json"
        lines.append("pool: " + make_pool(path, 2_000 if quick else 52_002))
        strategies = ("length", "rating") if quick else ("length", "rating", "hw5_default", "complexity")
        lines += bench_selection(path, strategies, 1 if quick else 5)
        t_json = _best(lambda: json.load(open(path, encoding="utf-8")), 1 if quick else 3)
        lines += bench_pipeline(path, t_json, "random_s0,length" if quick else CHEAP_STUDY)
        rows = load_table(path).rows
        lines += bench_diversity(rows, quick)
    model = EMBEDDED_MODEL
    if quick or not (model / "config.json").exists():
        from tools.models.tiny import build

        model = build()
    if (model / "config.json").exists():
        # rows from the rating file's part of the pool: typical Alpaca lengths, not the longest 1k
        lines += bench_ifd(rows[-(3 if quick else 10) :], model, 4096)
    else:
        lines.append("IFD: no model built (make base-model)")
    return lines


@dataclass
class BenchArgs:
    quick: bool = opt(False, help="smaller sizes, for a first look")


@command(BenchArgs, __doc__)
def main(a: BenchArgs) -> int:
    for line in bench(a.quick):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
