"""Answers for an evaluation set, one predictions file per decoding point, through LLaMA-Factory.

The model, its adapter and the prompt format all come from LLaMA-Factory itself: arguments go
through `get_infer_args`, the model and tokenizer through `load_tokenizer`/`load_model` (adapter
attached the way its chat engines do it), and every prompt is `template.encode_oneturn` of the
same user message its Alpaca converter builds for training ("instruction\\ninput"), with the
template's default system prompt. So a prompt here is token for token the prompt part of a
training example. We batch the encoded prompts ourselves (left padding, sorted by length) and
call `model.generate` with the template's stop tokens, because:
- LLaMA-Factory's `ChatModel` huggingface engine answers one conversation per call (no batching);
- its predict stage (`do_predict` + `predict_with_generate`) writes its file only at the end, so
  a killed run starts over, and one process per decoding point reloads the model each time.
Batches are fixed by the prompt set (length-sorted, then chunked: by default the whole set in one
batch, unless memory says otherwise, see `engine.auto_batch_size`) and each batch is seeded from
(seed, batch number); a resumed point keeps the batch size it started with, so it gives the same
answers as an uninterrupted one. The engine loads the base once and swaps adapters (`Engine.use`),
which `tools.eval.study` uses to evaluate a whole study in one process.

Sources (where the model comes from):
- `--run <model>/base/base`: the profile's base model (`templates/profiles/<model>.yaml`);
- `--run <model>/<study>/<variant>`: a finished LoRA run, base and template from its run.json
  (falling back to adapter_config.json and the profile); `--base-model` overrides the base and is
  checked against the adapter's own record;
- `--model-path DIR --template T` with `--run` naming where answers go: a merged or any plain
  model (a folder under exports/<model>/<study>/<variant> names its run itself);
- `--model-path gguf:FILE`: a GGUF file served by llama.cpp (tools/eval/served.py); one under
  exports/<model>/<study>/<variant>/ answers as the run `<model>/<study>/<variant>.gguf-<quant>`.

Output: `Run.predictions(testset, decoding)` (tools/CONTRACTS.md) and beside it `generation.json`
(source, settings, tokens/s, peak memory, device). While running, finished batches are appended
to `predictions.jsonl.partial`; on completion the file is rewritten in prompt order and renamed
into place. Re-running a finished point does nothing (`--force` regenerates).

Usage:
    python -m tools.eval.generate --run smollm2_135m/base/base --testset demo_eval [--grid hw5 | --decoding greedy ...]
        [--batch-size N] [--dtype bfloat16] [--max-new-tokens 512] [--seed 42] [--limit K] [--dataset-dir data]
        [--references NAME] [--model-path DIR --template T] [--base-model DIR] [--force]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from filelib import append_jsonl, atomic_write_json, atomic_write_jsonl, read_jsonl, run_main
from tools.core.args import checked, command, opt
from tools.core.paths import DATA, Run
from tools.eval.decoding import DEFAULT_MAX_NEW_TOKENS, DecodingPoint, load_grid
from tools.eval.engine import DTYPES, Engine, auto_batch_size, peak_mem_mb
from tools.eval.policy import Policy, classify, is_policy, load_policy
from tools.eval.prompts import GenerateError, load_prompts
from tools.eval.served import check_gguf, open_engine
from tools.eval.source import Source, resolve_source

log = logging.getLogger("generate")


# ------------------------------------------------------------------------------------------- a point
def batch_seed(seed: int, batch: int) -> int:
    return int(hashlib.sha256(f"{seed}:{batch}".encode()).hexdigest()[:8], 16)


def partial_path(final: Path) -> Path:
    return final.with_name(final.name + ".partial")


def sidecar_path(final: Path) -> Path:
    return final.with_name("generation.json")


def route(point: DecodingPoint | Policy, row: dict) -> tuple[str, DecodingPoint]:
    """(the prompt's type, the decoding point it is answered with): a policy's point for its type."""
    if isinstance(point, Policy):
        return point.point_for(row)
    return classify(row.get("instruction", ""), row.get("input", "")), point


def _check_settings(rows: list[dict], point: DecodingPoint | Policy, where: Path) -> None:
    for r in rows if isinstance(point, Policy) else rows[:1]:
        want = point.points.get(r.get("prompt_type")) if isinstance(point, Policy) else point
        if want is None or r.get("gen") != want.as_gen():
            raise GenerateError(
                f"{where} was generated with {r.get('gen')}, not {want.as_gen() if want else point.describe()}; "
                "pass --force to regenerate it (or pick another decoding point)"
            )


def generate_point(
    engine: Engine | None,
    source: Source,
    testset: str,
    prompts: list[dict],
    point: DecodingPoint | Policy,
    batch_size: int | None = None,
    force: bool = False,
    on_batch=None,
    progress: bool = True,
    engine_factory=None,
) -> Path:
    """Generate (or finish) one decoding point; returns the predictions file. Loads the model only if needed."""
    from tqdm import tqdm

    run = source.run
    final = run.predictions(testset, point.name)
    part = partial_path(final)
    if force:
        for p in (final, part, sidecar_path(final)):
            p.unlink(missing_ok=True)
    done: dict[str, dict] = {}
    for path in (final, part):
        rows = list(read_jsonl(path))
        _check_settings(rows, point, path)
        done.update({r["id"]: r for r in rows})
    wanted = [p["id"] for p in prompts]
    if final.exists() and not part.exists() and all(i in done for i in wanted):
        log.info("%s: %s already has all %d answers", run, final, len(wanted))
        return final
    if part.exists():  # drop a torn last line from a killed writer before appending again
        atomic_write_jsonl(part, read_jsonl(part))

    engine = engine.use(source) if engine is not None else engine_factory()
    encoded = {p["id"]: engine.encode(p)[0] for p in prompts}
    routes = {p["id"]: route(point, p) for p in prompts}
    # a batch shares one decoding point: a policy's prompts are grouped by it (one group for a plain point)
    order = sorted(
        range(len(prompts)),
        key=lambda i: (routes[prompts[i]["id"]][1].name, len(encoded[prompts[i]["id"]]), i),
    )
    stats_path = part.with_name(".generation.partial.json")
    stats = (
        json.loads(stats_path.read_text()) if stats_path.exists() and part.exists() else {"peak_mem_mb": 0.0}
    )
    # a resumed point keeps the batches it started with (answers depend on the batch and its seed)
    batch_size = stats.get("batch_size") or batch_size
    if batch_size is None:  # the whole prompt set in one batch, unless memory says otherwise
        longest = max(r[1].max_new_tokens for r in routes.values())
        widest = max(len(e) for e in encoded.values()) + longest
        batch_size = getattr(engine, "batch_size", None) or auto_batch_size(engine, len(prompts), widest)
    stats["batch_size"] = batch_size
    batches = [
        [prompts[i] for i in chunk]
        for group in _groups(order, lambda i: routes[prompts[i]["id"]][1].name)
        for chunk in (group[b : b + batch_size] for b in range(0, len(group), batch_size))
    ]
    todo = [(k, b) for k, b in enumerate(batches) if any(p["id"] not in done for p in b)]
    bar = tqdm(
        total=len(wanted),
        initial=len(wanted) - sum(p["id"] not in done for p in prompts),
        desc=f"{run.variant}:{point.name}",
        unit="prompt",
        disable=not progress,
    )
    for k, batch in todo:
        t0 = time.perf_counter()
        bpoint = routes[batch[0]["id"]][1]
        results = engine.generate([encoded[p["id"]] for p in batch], bpoint, batch_seed(point.seed, k))
        seconds = (time.perf_counter() - t0) / len(batch)
        for p, res in zip(batch, results, strict=True):
            if p["id"] in done:
                continue
            row = {
                "id": p["id"],
                "instruction": p["instruction"],
                "input": p["input"],
                "prompt": engine.tokenizer.decode(encoded[p["id"]], skip_special_tokens=False),
                "answer": res["answer"],
                "reference": p["reference"],
                "decoding": point.name,
                "gen": bpoint.as_gen(),
                "point": bpoint.name,
                "prompt_type": routes[p["id"]][0],
                "new_tokens": res["new_tokens"],
                "truncated": res["truncated"],
                "seconds": round(seconds, 4),
                "run": run.name,
            }
            append_jsonl(part, row)
            done[p["id"]] = row
            bar.update(1)
        stats["peak_mem_mb"] = max(stats["peak_mem_mb"], getattr(engine, "peak_mem_mb", peak_mem_mb)())
        atomic_write_json(stats_path, stats)
        if on_batch is not None:
            on_batch(k)
    bar.close()

    # finalise: every answer (also ones beyond this call's --limit) in prompt-set order, then the sidecar
    rank = {pid: i for i, pid in enumerate(wanted)}
    rows = sorted(done.values(), key=lambda r: (rank.get(r["id"], len(rank)), r["id"]))
    atomic_write_jsonl(final, rows)
    tokens = sum(r["new_tokens"] for r in rows)
    secs = sum(r["seconds"] for r in rows)
    import torch

    atomic_write_json(
        sidecar_path(final),
        {
            "run": run.name,
            "testset": testset,
            "decoding": point.name,
            "gen": point.describe() if isinstance(point, Policy) else point.as_gen(),
            "policy": isinstance(point, Policy),
            "prompt_types": {
                t: sum(r.get("prompt_type") == t for r in rows) for t in ("coding", "math", "writing", "open")
            },
            "source": source.describe(),
            "engine": getattr(
                engine, "label", "llamafactory (load_model + template.encode_oneturn) + transformers generate"
            ),
            "batch_size": batch_size,
            "dtype": str(engine.dtype).replace("torch.", ""),
            "n": len(rows),
            "n_without_reference": sum(r["reference"] is None for r in rows),
            "new_tokens": tokens,
            "seconds": round(secs, 3),
            "tokens_per_s": round(tokens / secs, 2) if secs else None,
            "peak_mem_mb": round(stats["peak_mem_mb"], 1),
            "device": str(engine.device),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "versions": _versions(),
        },
    )
    part.unlink(missing_ok=True)
    stats_path.unlink(missing_ok=True)
    return final


def _groups(order: list[int], key) -> list[list[int]]:
    """Consecutive runs of `order` sharing a key (order is sorted by that key first)."""
    out: list[list[int]] = []
    for i in order:
        if out and key(out[-1][0]) == key(i):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _versions() -> dict:
    import llamafactory
    import torch
    import transformers

    return {
        "llamafactory": llamafactory.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }


@dataclass
class GenerateArgs:
    """Every option of a generation, each default, help and rule once (tools.core.args)."""

    run: str | None = opt(None, help="model/study/variant (the base model: <model>/base/base)")
    testset: str = opt("demo_eval", help="a registered prompt set (demo_eval, hw5_test, ...)")
    grid: str | None = opt(None, help="a grid in templates/decoding/ (hw5, quick, default)")
    decoding: list[str] | None = opt(
        None,
        help="decoding names, e.g. greedy t0.7_p0.9, or a policy by prompt type (bytype_recipe: "
        "tools/eval/policy.py); default greedy",
    )
    batch_size: int | None = opt(None, help="prompts per batch (default: all prompts, within memory)", min=1)
    limit: int | None = opt(None, help="only the first K prompts", min=1)
    dataset_dir: Path = opt(DATA, help="the folder holding dataset_info.json")
    references: str | None = opt(None, help="a registered set whose `output` is the reference, joined by id")
    model_path: Path | None = opt(None, help="a merged or plain model folder (no adapter), or gguf:FILE")
    template: str | None = opt(None, help="LLaMA-Factory template (default: run.json or the profile)")
    base_model: str | None = opt(
        None, help="override an adapter run's base model (checked against the adapter)"
    )
    force: bool = opt(False, help="regenerate finished points")
    dtype: str | None = opt(
        None, help="default: the profile's on GPU, bfloat16 on a bf16 CPU", choices=lambda: list(DTYPES)
    )
    max_new_tokens: int | None = opt(
        None, help=f"answer length cap (default {DEFAULT_MAX_NEW_TOKENS})", min=1
    )
    seed: int | None = opt(None, help="seed of sampled points", nonneg=True)
    quiet: bool = opt(False, help="no progress bar")

    def check(self) -> list[str]:
        return ["--grid and --decoding: give one of them"] if self.grid and self.decoding else []

    def points(self) -> list[DecodingPoint | Policy]:
        return decoding_points(self.grid, self.decoding, self.max_new_tokens, self.seed)


def decoding_points(
    grid: str | None, names: list[str] | None, max_new_tokens: int | None, seed: int | None = None
) -> list[DecodingPoint | Policy]:
    """The decoding points asked for: a grid's, or each --decoding name (a policy or a point; greedy)."""
    if grid:
        return load_grid(grid, max_new_tokens, seed)
    kw = {"max_new_tokens": max_new_tokens or DEFAULT_MAX_NEW_TOKENS} | (
        {"seed": seed} if seed is not None else {}
    )
    return [
        load_policy(n, max_new_tokens, seed) if is_policy(n) else DecodingPoint.parse(n, **kw)
        for n in (names or ["greedy"])
    ]


# the order of generate()'s positional parameters after (run, testset, points), kept for its callers
_POSITIONAL = (
    "batch_size",
    "limit",
    "dataset_dir",
    "references",
    "model_path",
    "template",
    "base_model",
    "force",
)


def generate(
    run: GenerateArgs | Run | str | None = None,
    testset: str | None = None,
    points: list[DecodingPoint | Policy] | None = None,
    *more,
    on_batch=None,
    progress: bool = True,
    **options,
) -> list[Path]:
    """Every decoding point for one source and prompt set; the model is loaded once, and only if needed.

    `run` is a GenerateArgs (its points from --grid/--decoding unless `points` is given), or the run
    with GenerateArgs' fields (`generate(run, "hw5_test", points, 8, None, data_dir, force=True)`)."""
    args = run
    if not isinstance(args, GenerateArgs):
        if len(more) > len(_POSITIONAL):
            raise TypeError(f"generate() takes at most {3 + len(_POSITIONAL)} positional arguments")
        given = dict(zip(_POSITIONAL, more, strict=False))
        given |= {"testset": testset} if testset is not None else {}
        args = GenerateArgs(args, **given, **options)
    a = checked(args)
    points = points or a.points()
    run, batch_size, force, progress = a.run, a.batch_size, a.force, progress and not a.quiet
    source = resolve_source(run, a.model_path, a.template, a.base_model)
    check_gguf(source, a.dtype, a.base_model)
    testset = a.testset
    prompts = load_prompts(testset, a.dataset_dir, a.references)[: a.limit]
    missing = sum(p["reference"] is None for p in prompts)
    log.info("%s: %d prompts from %s, %d without a reference", source.run, len(prompts), testset, missing)
    engine: list[Engine] = []

    def factory() -> Engine:
        if not engine:
            engine.append(open_engine(source, a.dtype, source.run.eval_root / "llama-server.log"))
        return engine[0]

    try:
        return [
            generate_point(None, source, testset, prompts, p, batch_size, force, on_batch, progress, factory)
            for p in points
        ]
    finally:  # a GGUF source's llama-server is stopped; a transformers engine has nothing to close
        for e in engine:
            getattr(e, "close", lambda: None)()


@command(GenerateArgs, __doc__)
def main(a: GenerateArgs) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        paths = generate(a)
    except (GenerateError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        info = json.loads(sidecar_path(p).read_text())
        print(
            f"{p}  ({info['n']} answers, {info['tokens_per_s']} tokens/s, peak {info['peak_mem_mb']:.0f} MB)"
        )
    return 0


if __name__ == "__main__":
    run_main(main)
