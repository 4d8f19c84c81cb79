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
Batches are fixed by the prompt set (length-sorted, then chunked) and each batch is seeded from
(seed, batch number), so a resumed run gives the same answers as an uninterrupted one.

Sources (where the model comes from):
- `--run <model>/base/base`: the profile's base model (`templates/profiles/<model>.yaml`);
- `--run <model>/<study>/<variant>`: a finished LoRA run, base and template from its run.json
  (falling back to adapter_config.json and the profile); `--base-model` overrides the base and is
  checked against the adapter's own record;
- `--model-path DIR --template T` with `--run` naming where answers go: a merged or any plain
  model (a folder under exports/<model>/<study>/<variant> names its run itself).

Output: `Run.predictions(testset, decoding)` (tools/CONTRACTS.md) and beside it `generation.json`
(source, settings, tokens/s, peak memory, device). While running, finished batches are appended
to `predictions.jsonl.partial`; on completion the file is rewritten in prompt order and renamed
into place. Re-running a finished point does nothing (`--force` regenerates).

Usage:
    python -m tools.generate --run smollm2_135m/base/base --testset demo_eval [--grid hw5 | --decoding greedy ...]
        [--batch-size 8] [--max-new-tokens 512] [--seed 42] [--limit K] [--dataset-dir data]
        [--references NAME] [--model-path DIR --template T] [--base-model DIR] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from plugins.fileio import append_jsonl, atomic_write_json, atomic_write_jsonl, read_jsonl
from tools.decoding import DEFAULT_MAX_NEW_TOKENS, DecodingPoint, load_grid
from tools.paths import DATA, ROOT, Run

log = logging.getLogger("generate")

# Profile keys that change how a model loads for inference, passed through to LLaMA-Factory.
_PROFILE_PASSTHROUGH = ("quantization_bit", "quantization_method", "trust_remote_code", "infer_dtype")
_INFER_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _profile_extra(prof: dict) -> dict:
    """Loading options from a profile; its training `precision` becomes the inference dtype."""
    extra = {k: prof[k] for k in _PROFILE_PASSTHROUGH if k in prof}
    if "infer_dtype" not in extra and prof.get("precision") in _INFER_DTYPE:
        extra["infer_dtype"] = _INFER_DTYPE[prof["precision"]]
    return extra


class GenerateError(ValueError):
    """Bad input: a message for the person at the keyboard, nothing written."""


# ------------------------------------------------------------------------------------------- prompts
def _registry_fallback(name: str, dataset_dir: Path) -> Path:
    info_path = Path(dataset_dir) / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if name not in info:
        raise GenerateError(
            f"prompt set {name!r} is not registered in {info_path}; registered: {', '.join(sorted(info)) or 'none'}"
        )
    entry = info[name]
    if "file_name" not in entry:
        raise GenerateError(f"{info_path}: {name}: no file_name (only local files can be evaluated)")
    return Path(dataset_dir) / entry["file_name"]


def resolve_dataset(name: str, dataset_dir: Path = DATA) -> Path:
    """The file of a registered dataset, via plugins.registry (clear error listing the registered ones)."""
    try:
        from plugins.registry import resolve
    except ImportError:
        return _registry_fallback(name, dataset_dir)
    try:
        return Path(resolve(name, dataset_dir=Path(dataset_dir)))
    except (KeyError, ValueError, FileNotFoundError) as e:
        # keep the registry's message, and make sure the registered names are in it
        info_path = Path(dataset_dir) / "dataset_info.json"
        names = sorted(json.loads(info_path.read_text())) if info_path.exists() else []
        msg = str(e).strip("'\"")
        if names and not all(n in msg for n in names[:3]):
            msg += f"; registered: {', '.join(names)}"
        raise GenerateError(msg) from e


def _load_rows(path: Path, prompts: bool = False) -> list[dict]:
    """Normalised rows via plugins.loaders; `prompts` lets an Alpaca file have empty outputs (no reference)."""
    try:
        from plugins import loaders
    except ImportError:  # the data plugin not there yet: plain Alpaca JSON/JSONL
        text = path.read_text()
        rows = [json.loads(x) for x in text.splitlines() if x.strip()] if path.suffix == ".jsonl" else None
        return rows if rows is not None else json.loads(text)
    if not prompts:
        return loaders.load_rows(path)
    records = loaders.read_records(path)
    if not records:
        raise GenerateError(f"{path}: no prompts")
    shape = loaders.detect_shape(records[0], path, 0)
    return loaders.normalise_records(records, path, "prompt" if shape == "alpaca" else shape).rows


def load_prompts(testset: str, dataset_dir: Path = DATA, references: str | None = None) -> list[dict]:
    """Rows {id, instruction, input, reference}; references joined by id (from `references` if named)."""
    path = resolve_dataset(testset, dataset_dir)
    rows = _load_rows(path, prompts=True)
    prompts, seen = [], set()
    for i, r in enumerate(rows):
        rid = r.get("id")
        if rid is None or str(rid) == "":
            raise GenerateError(f"{path}: row {i}: field 'id' missing (evaluation sets need ids)")
        if not str(r.get("instruction") or "").strip():
            raise GenerateError(f"{path}: row {i} (id {rid}): field 'instruction' is empty")
        rid = str(rid)
        if rid in seen:
            raise GenerateError(f"{path}: row {i}: id {rid!r} appears twice")
        seen.add(rid)
        prompts.append(
            {
                "id": rid,
                "instruction": r["instruction"],
                "input": r.get("input") or "",
                "reference": r.get("output") or None,
            }
        )
    if references:
        ref_path = resolve_dataset(references, dataset_dir)
        by_id = {
            str(r["id"]): r.get("output") or None for r in _load_rows(ref_path) if r.get("id") is not None
        }
        for p in prompts:
            p["reference"] = by_id.get(p["id"])
    return prompts


def user_message(row: dict) -> str:
    """The user turn exactly as LLaMA-Factory's Alpaca converter builds it: instruction, newline, input."""
    return "\n".join(x for x in (row["instruction"], row.get("input") or "") if x)


# ------------------------------------------------------------------------------------------- sources
def load_profile(model: str) -> dict:
    try:
        from tools.configs import load_profile as _load
    except ImportError:
        _load = None
    if _load is not None:
        return _load(model)
    import yaml

    path = ROOT / "templates" / "profiles" / f"{model}.yaml"
    if not path.exists():
        raise GenerateError(f"no model profile {path} for model {model!r}")
    return yaml.safe_load(path.read_text())


def _local(p: str | Path) -> Path | None:
    """A model reference as a local folder when it is one (relative paths are relative to the repo root)."""
    p = Path(p)
    for cand in (p, ROOT / p) if not p.is_absolute() else (p,):
        if cand.exists():
            return cand.resolve()
    return None


def same_model(a: str | Path, b: str | Path) -> bool:
    """Two references to one base model: same folder when both are local, else same final name(s)."""
    la, lb = _local(a), _local(b)
    if la and lb:
        return la == lb
    pa, pb = Path(str(a).rstrip("/")).parts, Path(str(b).rstrip("/")).parts
    n = min(len(pa), len(pb), 2)  # hub ids are 'org/name'; a moved checkout keeps the folder name
    return pa[-n:] == pb[-n:]


@dataclass
class Source:
    run: Run
    kind: str  # base | adapter | merged
    model_name_or_path: str
    template: str
    adapter: Path | None = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "model_name_or_path": self.model_name_or_path,
            "adapter": str(self.adapter) if self.adapter else None,
            "template": self.template,
            **self.extra,
        }


def _model_path(p: str) -> str:
    local = _local(p)
    return str(local) if local else p


def resolve_source(
    run: Run | str | None,
    model_path: str | Path | None = None,
    template: str | None = None,
    base_model: str | Path | None = None,
) -> Source:
    """Where a run's model comes from; a missing/unfinished run or a mismatched adapter is a clear error."""
    if model_path is not None:
        model_path = Path(model_path)
        if run is None:
            parts = model_path.resolve().parts
            if "exports" in parts and len(parts) >= parts.index("exports") + 4:
                i = parts.index("exports")
                run = Run(*parts[i + 1 : i + 4])
            if run is None:
                raise GenerateError(f"--model-path {model_path}: name the run to write under with --run")
        if not (model_path / "config.json").exists():
            raise GenerateError(f"--model-path {model_path}: no config.json there (not a model folder)")
        run = Run.parse(run) if isinstance(run, str) else run
        tpl = template or _profile_template(run.model)
        return Source(run, "merged", str(model_path.resolve()), tpl)
    if run is None:
        raise GenerateError("name a run (--run model/study/variant) or a model folder (--model-path)")
    run = Run.parse(run) if isinstance(run, str) else run
    if run.is_base:
        prof = load_profile(run.model)
        base = base_model or prof["model_name_or_path"]
        extra = _profile_extra(prof)
        return Source(run, "base", _model_path(str(base)), template or prof["template"], extra=extra)

    out = run.output_dir
    if not out.exists():
        raise GenerateError(
            f"run {run}: no output folder {out} (not trained yet? `make sweep STUDY={run.study}`)"
        )
    info = json.loads(run.run_json.read_text()) if run.run_json.exists() else {}
    if not run.is_finished():
        status = info.get("status", "unknown")
        raise GenerateError(
            f"run {run} is not finished (run.json status {status!r}, "
            f"{'no DONE marker' if not run.done_marker.exists() else 'no adapter_model.safetensors'} in {out})"
        )
    cfg_path = out / "adapter_config.json"
    adapter_cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    adapter_base = adapter_cfg.get("base_model_name_or_path")
    prof = None
    base = info.get("model_name_or_path") or adapter_base
    tpl = template or info.get("template")
    if base is None or tpl is None:
        prof = load_profile(run.model)
        base = base or prof["model_name_or_path"]
        tpl = tpl or prof["template"]
    if base_model is not None:
        base = str(base_model)
    if adapter_base and not same_model(adapter_base, base):
        raise GenerateError(
            f"run {run}: its adapter was trained on {adapter_base!r} ({cfg_path}), "
            f"not on {base!r}: an adapter of another base model"
        )
    extra = {}
    try:
        prof = prof or load_profile(run.model)
        extra = _profile_extra(prof)
    except (GenerateError, FileNotFoundError, ValueError):
        pass
    return Source(run, "adapter", _model_path(str(base)), tpl, adapter=out, extra=extra)


def _profile_template(model: str) -> str:
    try:
        return load_profile(model)["template"]
    except (GenerateError, FileNotFoundError, KeyError, ValueError) as e:
        raise GenerateError(f"no --template given and no profile for model {model!r} to take it from") from e


# ------------------------------------------------------------------------------------------- engine
class Engine:
    """A LLaMA-Factory-loaded model, tokenizer and template, with batched generation and scoring."""

    def __init__(self, source: Source):
        import torch
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import get_infer_args
        from llamafactory.model import load_model, load_tokenizer

        args = {
            "model_name_or_path": source.model_name_or_path,
            "template": source.template,
            "finetuning_type": "lora",
            # fp32 on CPU: half precision there is slow and changes answers; on GPU the profile's precision
            "infer_dtype": (source.extra.get("infer_dtype") or "auto")
            if torch.cuda.is_available()
            else "float32",
        }
        if source.adapter is not None:
            args["adapter_name_or_path"] = str(source.adapter)
        args.update({k: v for k, v in source.extra.items() if k != "infer_dtype"})
        model_args, data_args, finetuning_args, _ = get_infer_args(args)
        self.tokenizer = load_tokenizer(model_args)["tokenizer"]
        self.template = get_template_and_fix_tokenizer(self.tokenizer, data_args)
        self.model = load_model(self.tokenizer, model_args, finetuning_args, is_trainable=False)
        self.model.eval()
        self.stop_ids = list(self.template.get_stop_token_ids(self.tokenizer))
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        )
        self.device = self.model.device

    def encode(self, row: dict, answer: str = "") -> tuple[list[int], list[int]]:
        """(prompt ids, answer ids) as in training; answer ids end with the template's end of turn."""
        messages = [{"role": "user", "content": user_message(row)}, {"role": "assistant", "content": answer}]
        prompt_ids, answer_ids = self.template.encode_oneturn(self.tokenizer, messages)
        if self.template.efficient_eos:  # LLaMA-Factory's supervised processor appends eos here
            answer_ids = answer_ids + [self.tokenizer.eos_token_id]
        return prompt_ids, answer_ids

    def generate(self, prompts: list[list[int]], point: DecodingPoint, seed: int) -> list[dict]:
        """One batch: left-padded prompts, seeded; returns {answer, new_tokens, truncated} per prompt."""
        import torch
        from transformers import set_seed

        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        set_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                **point.generate_kwargs(),
            )
        results = []
        stops = set(self.stop_ids)
        for seq in out[:, width:].tolist():
            end = next((i for i, t in enumerate(seq) if t in stops), None)
            gen = seq if end is None else seq[:end]
            results.append(
                {
                    "answer": self.tokenizer.decode(gen, skip_special_tokens=True).strip(),
                    "new_tokens": len(gen),
                    "truncated": end is None and len(seq) >= point.max_new_tokens,
                }
            )
        return results

    def answer_nll(
        self, rows: list[dict], answers: list[str], batch_size: int = 8
    ) -> list[tuple[float, int]]:
        """(summed negative log-likelihood, token count) of each answer given its prompt, as training scores it."""
        import torch

        pairs = [self.encode(r, a) for r, a in zip(rows, answers, strict=True)]
        results: list[tuple[float, int]] = []
        for b in range(0, len(pairs), batch_size):
            chunk = pairs[b : b + batch_size]
            width = max(len(p) + len(a) for p, a in chunk)
            ids = [p + a + [self.pad_id] * (width - len(p) - len(a)) for p, a in chunk]
            labels = [[-100] * len(p) + a + [-100] * (width - len(p) - len(a)) for p, a in chunk]
            mask = [[1] * (len(p) + len(a)) + [0] * (width - len(p) - len(a)) for p, a in chunk]
            ids_t = torch.tensor(ids, device=self.device)
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids_t, attention_mask=torch.tensor(mask, device=self.device)
                ).logits
            logits = logits[:, :-1].float()
            tgt = torch.tensor(labels, device=self.device)[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=-100, reduction="none"
            ).view(tgt.shape)
            for i in range(len(chunk)):
                results.append((float(nll[i].sum()), int((tgt[i] != -100).sum())))
        return results


def peak_mem_mb() -> float:
    """Peak memory of this process: GPU allocations when on a GPU, else resident set size."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------- a point
def batch_seed(seed: int, batch: int) -> int:
    return int(hashlib.sha256(f"{seed}:{batch}".encode()).hexdigest()[:8], 16)


def partial_path(final: Path) -> Path:
    return final.with_name(final.name + ".partial")


def sidecar_path(final: Path) -> Path:
    return final.with_name("generation.json")


def _check_settings(rows: list[dict], point: DecodingPoint, where: Path) -> None:
    for r in rows[:1]:
        if r.get("gen") != point.as_gen():
            raise GenerateError(
                f"{where} was generated with {r.get('gen')}, not {point.as_gen()}; "
                "pass --force to regenerate it (or pick another decoding point)"
            )


def generate_point(
    engine: Engine | None,
    source: Source,
    testset: str,
    prompts: list[dict],
    point: DecodingPoint,
    batch_size: int = 8,
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

    engine = engine or engine_factory()
    encoded = {p["id"]: engine.encode(p)[0] for p in prompts}
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[prompts[i]["id"]]), i))
    batches = [[prompts[i] for i in order[b : b + batch_size]] for b in range(0, len(order), batch_size)]
    todo = [(k, b) for k, b in enumerate(batches) if any(p["id"] not in done for p in b)]
    stats_path = part.with_name(".generation.partial.json")
    stats = (
        json.loads(stats_path.read_text()) if stats_path.exists() and part.exists() else {"peak_mem_mb": 0.0}
    )
    bar = tqdm(
        total=len(wanted),
        initial=len(wanted) - sum(p["id"] not in done for p in prompts),
        desc=f"{run.variant}:{point.name}",
        unit="prompt",
        disable=not progress,
    )
    for k, batch in todo:
        t0 = time.perf_counter()
        results = engine.generate([encoded[p["id"]] for p in batch], point, batch_seed(point.seed, k))
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
                "gen": point.as_gen(),
                "new_tokens": res["new_tokens"],
                "truncated": res["truncated"],
                "seconds": round(seconds, 4),
                "run": run.name,
            }
            append_jsonl(part, row)
            done[p["id"]] = row
            bar.update(1)
        stats["peak_mem_mb"] = max(stats["peak_mem_mb"], peak_mem_mb())
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
            "gen": point.as_gen(),
            "source": source.describe(),
            "engine": "llamafactory (load_model + template.encode_oneturn) + transformers generate",
            "batch_size": batch_size,
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


def _versions() -> dict:
    import llamafactory
    import torch
    import transformers

    return {
        "llamafactory": llamafactory.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }


def generate(
    run: Run | str | None,
    testset: str,
    points: list[DecodingPoint],
    batch_size: int = 8,
    limit: int | None = None,
    dataset_dir: Path = DATA,
    references: str | None = None,
    model_path: str | Path | None = None,
    template: str | None = None,
    base_model: str | Path | None = None,
    force: bool = False,
    on_batch=None,
    progress: bool = True,
) -> list[Path]:
    """Every decoding point for one source and prompt set; the model is loaded once, and only if needed."""
    if batch_size < 1 or (limit is not None and limit < 1):
        raise GenerateError("--batch-size and --limit must be at least 1")
    source = resolve_source(run, model_path, template, base_model)
    prompts = load_prompts(testset, dataset_dir, references)[:limit]
    missing = sum(p["reference"] is None for p in prompts)
    log.info("%s: %d prompts from %s, %d without a reference", source.run, len(prompts), testset, missing)
    engine: list[Engine] = []

    def factory() -> Engine:
        if not engine:
            engine.append(Engine(source))
        return engine[0]

    return [
        generate_point(
            None,
            source,
            testset,
            prompts,
            p,
            batch_size,
            force,
            on_batch,
            progress,
            engine_factory=factory,
        )
        for p in points
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="model/study/variant (the base model: <model>/base/base)")
    ap.add_argument(
        "--testset", default="demo_eval", help="a registered prompt set (demo_eval, hw5_test, ...)"
    )
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--grid", help="a grid in templates/decoding/ (hw5, quick, default)")
    g.add_argument("--decoding", nargs="+", default=None, help="decoding names, e.g. greedy t0.7_p0.9")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=None, help=f"default {DEFAULT_MAX_NEW_TOKENS}")
    ap.add_argument("--seed", type=int, default=None, help="seed of sampled points in a --grid")
    ap.add_argument("--limit", type=int, default=None, help="only the first K prompts")
    ap.add_argument("--dataset-dir", type=Path, default=DATA)
    ap.add_argument("--references", help="a registered set whose `output` is the reference, joined by id")
    ap.add_argument("--model-path", type=Path, help="a merged or plain model folder (no adapter)")
    ap.add_argument("--template", help="LLaMA-Factory template (default: run.json or the profile)")
    ap.add_argument("--base-model", help="override an adapter run's base model (checked against the adapter)")
    ap.add_argument("--force", action="store_true", help="regenerate finished points")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if a.grid:
            points = load_grid(a.grid, a.max_new_tokens, a.seed)
        else:
            kw = {"max_new_tokens": a.max_new_tokens or DEFAULT_MAX_NEW_TOKENS}
            if a.seed is not None:
                kw["seed"] = a.seed
            points = [DecodingPoint.parse(n, **kw) for n in (a.decoding or ["greedy"])]
        paths = generate(
            a.run,
            a.testset,
            points,
            a.batch_size,
            a.limit,
            a.dataset_dir,
            a.references,
            a.model_path,
            a.template,
            a.base_model,
            a.force,
            progress=not a.quiet,
        )
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
    sys.exit(main())
