"""Rewrite a registered dataset's rows through an OpenAI-compatible endpoint into a new dataset.

Every row is one call (temperature 0, a fixed seed), keyed by the endpoint's model, the prompt's
name, version and text, and the row itself; finished rewrites go to an append-only cache
(`cache/refine/<model>.jsonl`), so a re-run makes no call for them and a killed run resumes. Before
spending, the calls, tokens and cost are estimated with the judge's price table
(`templates/judge/prices.yaml`); `--dry-run` stops there and a cost above `--max-cost` is refused.
The new dataset is published only when every row has its rewrite (a failed or unusable reply is
retried on the next run), with a manifest giving each row's source id and hash, prompt, model,
tokens and cost.

Usage:
    python -m tools.refine --dataset alpaca_top100 [--prompt detail|evolve|reasoning|FILE.yaml]
        [--model gpt-4o-mini] [--base-url URL] [--name alpaca_top100_refined] [--dry-run] [--max-cost 1.0]
        [--concurrency 8] [--limit K] [--dataset-dir data]
    OPENAI_API_KEY is read from the environment (never written); a local server needs none.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from filelib import run_main, sha256_text
from plugins.pools import DataError
from plugins.publishing import RegistryError
from tools.core.args import checked, command, opt
from tools.core.paths import DATA, cache_dir
from tools.data import check_name, publish, registered_rows
from tools.judge import CallStats, Endpoint, JudgeCache, Task, api_spec, call_all, cost_usd, messages_tokens
from tools.refine.prompts import RefineError, RewritePrompt, load_prompt


class Incomplete(RefineError):
    """Some rows have no usable rewrite yet: not bad input, a run to repeat (exit status 1)."""


DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_MAX_COST = 1.0


def cache_file(judge_label: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", judge_label).strip("_") or "endpoint"
    return cache_dir() / "refine" / f"{slug}.jsonl"


def row_key(label: str, prompt: RewritePrompt, row: dict) -> str:
    fields = json.dumps({k: row.get(k) for k in ("instruction", "input", "output")}, sort_keys=True)
    return sha256_text(label, prompt.fingerprint, fields)


def estimate(todo: list[tuple[dict, Task]], prompt: RewritePrompt, model: str, billed: bool) -> dict:
    """Tokens in (counted) and out (the source answer's length x 1.5, at most max_tokens), and dollars."""
    pt = sum(messages_tokens(t.messages) for _, t in todo)
    ct = sum(
        min(prompt.max_tokens, math.ceil(len(r.get("output", "").split()) * 4 / 3 * 1.5) + 50)
        for r, _ in todo
    )
    cost = cost_usd(model, pt, ct, billed)
    return {"calls": len(todo), "prompt_tokens": pt, "completion_tokens": ct, "cost_usd": cost}


@dataclass
class RefineArgs:
    """Every option of a refinement, each default, help and rule once (tools.core.args)."""

    dataset: str = opt(help="a registered dataset, e.g. alpaca_top100", required=True)
    prompt: str = opt("detail", help="detail | evolve | reasoning | a prompt YAML file")
    model: str = opt(DEFAULT_MODEL, help="the model at the endpoint")
    base_url: str | None = opt(None, help="an OpenAI-compatible server (default: OpenAI)")
    name: str | None = opt(None, help="the new dataset's name (default <dataset>_refined)")
    dry_run: bool = opt(False, help="show the calls and the cost, call nothing")
    max_cost: float = opt(DEFAULT_MAX_COST, help="refuse above this many dollars", nonneg=True)
    concurrency: int = opt(8, help="calls in flight at once", min=1)
    limit: int | None = opt(None, help="only the first K rows", min=1)
    dataset_dir: Path = opt(DATA, help="the folder holding dataset_info.json")


def refine(dataset: RefineArgs | str | None = None, *more, say=print, **options) -> dict:
    """Rewrite a dataset (see the module's docstring); `dataset` is a RefineArgs, or its fields in order
    (`refine("alpaca_top100", "detail", "gpt-4o-mini", url, dataset_dir=d)`), defaults from RefineArgs."""
    a = checked(dataset if isinstance(dataset, RefineArgs) else RefineArgs(dataset, *more, **options))
    dataset, model, base_url, limit, dataset_dir = a.dataset, a.model, a.base_url, a.limit, a.dataset_dir
    prompt_name, name, max_cost = a.prompt, a.name, a.max_cost
    prompt = load_prompt(prompt_name)
    name = check_name(
        name or (f"{dataset}_refined" if prompt.name == "detail" else f"{dataset}_{prompt.name}")
    )
    rows, path = registered_rows(dataset, dataset_dir)
    rows = rows[:limit]
    spec = api_spec(model, base_url)
    cache = JudgeCache(cache_file(spec.judge_model))
    planned = [(r, Task(row_key(spec.judge_model, prompt, r), prompt.messages(r))) for r in rows]
    todo = [(r, t) for r, t in planned if t.key not in cache]
    est = estimate(todo, prompt, model, spec.billed)
    cost = "unknown price" if est["cost_usd"] is None else f"${est['cost_usd']:.4f}"
    say(
        f"refine: {len(rows)} rows of {dataset} with prompt {prompt.name} v{prompt.version} by {spec.judge_model}: "
        f"{len(rows) - len(todo)} cached, {len(todo)} calls, ~{est['prompt_tokens']} prompt + "
        f"~{est['completion_tokens']} completion tokens, {cost}"
    )
    if a.dry_run:
        return {"dry_run": True, **est, "cached": len(rows) - len(todo)}
    if todo and spec.billed and est["cost_usd"] is None:
        raise RefineError(
            f"no price for model {model!r} in templates/judge/prices.yaml: add it, or use a local server"
        )
    if todo and est["cost_usd"] is not None and est["cost_usd"] > max_cost:
        need = math.ceil(est["cost_usd"] * 100) / 100
        raise RefineError(
            f"estimated cost ${est['cost_usd']:.4f} is above --max-cost {max_cost:g}; pass --max-cost {need:.2f} to spend it"
        )
    if todo and spec.billed and not os.environ.get("OPENAI_API_KEY") and base_url is None:
        raise RefineError("OPENAI_API_KEY is not set (or pass --base-url of an OpenAI-compatible server)")
    stats = CallStats()
    unusable = []
    if todo:
        from tqdm import tqdm

        ep = Endpoint(
            model=model,
            base_url=base_url,
            api_key=os.environ.get("OPENAI_API_KEY"),
            concurrency=a.concurrency,
            max_tokens=prompt.max_tokens,
        )
        by_key = {t.key: r for r, t in todo}
        bar = tqdm(total=len(todo), desc=f"refine {prompt.name}", unit="row", file=sys.stderr)

        def on_done(task: Task, text: str | None, usage: dict | None, error: str | None) -> None:
            bar.update(1)
            row = by_key[task.key]
            if error or prompt.apply(row, text or "") is None:
                unusable.append((row.get("id"), error or f"reply not usable: {(text or '')[:80]!r}"))
                bar.set_postfix(failed=len(unusable))
                return
            u = usage or {}
            cache.add(
                {
                    "key": task.key,
                    "id": row.get("id"),
                    "prompt": prompt.name,
                    "prompt_version": prompt.version,
                    "model": spec.judge_model,
                    "text": text,
                    "usage": u,
                    "cost_usd": cost_usd(
                        model, u.get("prompt_tokens", 0), u.get("completion_tokens", 0), spec.billed
                    ),
                }
            )

        call_all([t for _, t in todo], ep, on_done, stats)
        bar.close()
    missing = [t.key for _, t in planned if t.key not in cache]
    if missing:
        first = "; ".join(f"id {i}: {e}" for i, e in unusable[:3])
        raise Incomplete(
            f"{len(missing)} of {len(rows)} rows have no usable rewrite yet ({first}); nothing published - "
            f"re-run to retry them (the {len(rows) - len(missing)} done are cached)"
        )
    out_rows, provenance = [], []
    for r, t in planned:
        hit = cache.get(t.key)
        out_rows.append({**prompt.apply(r, hit["text"]), "refined_from": r.get("id")})
        provenance.append(
            {
                "id": r.get("id"),
                "source_sha256": sha256_text(json.dumps(r, sort_keys=True, ensure_ascii=False)),
                "usage": hit.get("usage"),
                "cost_usd": hit.get("cost_usd"),
            }
        )
    spent = sum(p["cost_usd"] or 0 for p in provenance)
    publish(
        name,
        out_rows,
        {
            "from": dataset,
            "from_file": path.name,
            "prompt": {
                "name": prompt.name,
                "version": prompt.version,
                "file": prompt.path.name,
                "sha256": prompt.fingerprint,
            },
            "model": spec.judge_model,
            "billed": spec.billed,
            "cost_usd": spent,
            "calls_this_run": stats.calls,
            "rows_provenance": provenance,
        },
        dataset_dir,
        note=f"{dataset} rewritten by {prompt.name} ({spec.judge_model})",
    )
    say(
        f"refine: registered {name} ({len(out_rows)} rows; {stats.calls} calls this run, ${spent:.4f} in all)"
    )
    return {"name": name, "rows": len(out_rows), "calls": stats.calls, "cost_usd": spent}


@command(RefineArgs, __doc__)
def main(a: RefineArgs) -> int:
    try:
        refine(a)
    except (RefineError, DataError, RegistryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1 if isinstance(e, Incomplete) else 2
    return 0


if __name__ == "__main__":
    run_main(main)
