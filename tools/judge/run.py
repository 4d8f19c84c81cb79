"""One judging job: predictions.jsonl -> judgments (cached) -> judge.jsonl and scores.json.

Plan every judgment (item x order), look each up in the cache, estimate what the missing ones
cost, refuse above the cost limit, call the judge for the missing ones (API, served local model
or the in-process offline judge), cache each finished judgment as it lands, then write the run's
judge.jsonl (prediction order) and scores.json atomically from the cache plus this run's failures.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from filelib import atomic_write_json, atomic_write_jsonl, read_jsonl
from tools.judge.cache import (
    JudgeCache,
    cache_path,
    endpoint_label,
    endpoint_path,
    judgment_key,
    legacy_label,
)
from tools.judge.client import CallStats, Endpoint, Task, call_all
from tools.judge.cost import OPENAI_HOSTS, cost_usd, messages_tokens, price_of, tokenizer_name
from tools.judge.parse import answer_score, parse
from tools.judge.protocol import Protocol
from tools.judge.stats import summary

DEFAULT_MODEL = "gpt-4o-mini"
COMPARABLE = ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")


class JudgeError(ValueError):
    """Bad input or a refused run: a message for the person at the keyboard, nothing written."""


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    answer: str
    reference: str | None


@dataclass
class JudgeSpec:
    """Who judges: the label that keys the cache and is written everywhere, and how it is billed."""

    judge_model: str
    offline: bool
    comparable: bool
    billed: bool
    price_model: str = DEFAULT_MODEL
    legacy_label: str | None = None  # the `model@host:port` label older versions cached this endpoint by
    legacy_path: str = ""  # the endpoint's path: old-label judgments are read on LEGACY_PATH only


def api_spec(model: str, base_url: str | None) -> JudgeSpec:
    """An endpoint's spec labelled `model@host:port` (no scheme, no path): what tools.refine keys its
    cache by; judging keys by the full endpoint (`endpoint_spec`)."""
    host = urlparse(base_url).netloc if base_url else "api.openai.com"
    official = host in OPENAI_HOSTS
    label = model if official else f"{model}@{host}"
    return JudgeSpec(
        judge_model=label,
        offline=False,
        comparable=official and model in COMPARABLE,
        # OpenAI bills every model (an unknown price is refused, not taken as free); elsewhere a
        # known model name is billed at OpenAI's price, an unknown one is a local server's and free
        billed=official or price_of(model) is not None,
        price_model=model,
    )


def endpoint_spec(model: str, base_url: str | None) -> JudgeSpec:
    """A judge at an endpoint, labelled (and cached) by its full endpoint (cache.endpoint_label: model,
    scheme, host, port, path), with the label older versions used for it (see cache.legacy_judgments)."""
    label, old = endpoint_label(model, base_url), legacy_label(model, base_url)
    return replace(
        api_spec(model, base_url),
        judge_model=label,
        legacy_label=old if old != label else None,
        legacy_path=endpoint_path(base_url),
    )


def local_spec(name: str, kind: str = "offline") -> JudgeSpec:
    return JudgeSpec(judge_model=f"{kind}:{name}", offline=True, comparable=False, billed=False)


# ------------------------------------------------------------------------------------------- input
def load_items(path: Path) -> list[Item]:
    if not path.exists():
        raise JudgeError(f"{path}: no predictions (run `make eval` / tools.eval.generate first)")
    items, seen = [], set()
    try:
        rows = list(read_jsonl(path))
    except ValueError as e:
        raise JudgeError(str(e)) from e
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise JudgeError(f"{path}: row {n}: expected an object, found {type(row).__name__}")
        for f in ("id", "instruction", "answer"):
            if f not in row or row[f] is None:
                raise JudgeError(f"{path}: row {n}: missing field {f!r}")
        for f in ("instruction", "answer", "input", "reference"):
            # a non-string reference must not quietly become "no reference" (and switch the protocol)
            if row.get(f) is not None and not isinstance(row[f], str):
                raise JudgeError(
                    f"{path}: row {n}: field {f!r} must be a string, found {type(row[f]).__name__}"
                )
        if isinstance(row["id"], bool) or not isinstance(row["id"], str | int):
            raise JudgeError(f"{path}: row {n}: field 'id' must be a string or an integer")
        rid = str(row["id"])
        if rid in seen:
            raise JudgeError(f"{path}: row {n}: duplicate id {rid!r}")
        seen.add(rid)
        question = row["instruction"] + (f"\n{row['input']}" if row.get("input") else "")
        ref = row.get("reference")
        items.append(
            Item(rid, question, row["answer"], ref if isinstance(ref, str) and ref.strip() else None)
        )
    if not items:
        raise JudgeError(f"{path}: no predictions in the file")
    return items


def choose_protocol(items: list[Item], name: str, testset: str = "") -> str:
    """`auto`: HW5's official evaluation on HW5's test sets (hw5_test, hw5_dev), HW5's prompt with the
    robust parser on other sets with references, single-answer grading without references."""
    if name != "auto":
        return name
    if not all(i.reference for i in items):
        return "single"
    return "hw5_official" if is_hw5_set(testset) else "hw5_pairwise"


def is_hw5_set(testset: str) -> bool:
    return testset == "hw5" or testset.startswith("hw5_")


def check_references(items: list[Item], protocol: Protocol, path: Path) -> None:
    if protocol.needs_reference:
        missing = [n for n, i in enumerate(items, 1) if i.reference is None]
        if missing:
            raise JudgeError(
                f"{path}: row {missing[0]}: field 'reference' is empty ({len(missing)} rows without one); "
                f"protocol {protocol.name} needs references - use --protocol single"
            )


# ------------------------------------------------------------------------------------------- plan
@dataclass
class Planned:
    item: Item
    order: str
    key: str
    messages: list[dict]


def plan(items: list[Item], protocol: Protocol, spec: JudgeSpec, swap: bool) -> list[Planned]:
    out = []
    for it in items:
        for order in protocol.orders(swap):
            key = judgment_key(
                spec.judge_model, protocol.name, protocol.version, order, it.question, it.reference, it.answer
            )
            out.append(
                Planned(it, order, key, protocol.messages(it.question, it.answer, it.reference, order))
            )
    return out


def estimate(todo: list[Planned], protocol: Protocol, spec: JudgeSpec) -> dict:
    unique = {p.key: p for p in todo}
    pt = sum(messages_tokens(p.messages) for p in unique.values())
    ct = protocol.expected_completion_tokens * len(unique)
    return {
        "calls": len(unique),
        "prompt_tokens": pt,
        "completion_tokens": ct,
        "cost_usd": cost_usd(spec.price_model, pt, ct, billed=spec.billed),
        "tokenizer": tokenizer_name(),
    }


# ------------------------------------------------------------------------------------------- judge
def make_row(p: Planned, protocol: Protocol, spec: JudgeSpec, text, usage, error) -> dict:
    parsed = parse(protocol.kind, text, protocol.parser) if error is None else None
    ref_s, ans_s = answer_score(protocol.kind, p.order, parsed) if parsed else (None, None)
    return {
        "key": p.key,
        "id": p.item.id,
        "protocol": protocol.name,
        "protocol_version": protocol.version,
        "judge_model": spec.judge_model,
        "order": p.order,
        "score_reference": ref_s,
        "score_answer": ans_s,
        "parsed": bool(parsed and parsed.ok),
        "reason": (parsed.reason if parsed else "") or None,
        "quirk": parsed.quirk if parsed else None,
        "raw": text,
        "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0},
        "error": error,
    }


def judge_api(
    todo: list[Planned], protocol, spec, ep: Endpoint, cache: JudgeCache, progress=None, max_cost=None
) -> tuple:
    """Call the endpoint for the judgments to make; once the spend its replies report is above
    `max_cost` (dollars), no further call is made (those judgments fail uncalled, not cached)."""
    by_key = {p.key: p for p in todo}
    failures: dict[str, dict] = {}
    spent = [0.0]

    def on_done(task: Task, text, usage, error):
        row = make_row(by_key[task.key], protocol, spec, text, usage, error)
        u = usage or {}
        pt, ct = int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0))
        spent[0] += cost_usd(spec.price_model, pt, ct, billed=spec.billed) or 0.0
        if error is None:
            cache.add(row)
        else:
            failures[task.key] = row
        if progress:
            progress(row)

    def stop() -> str | None:
        if max_cost is not None and spent[0] > max_cost:
            return f"the spend so far ${spent[0]:.4f} is above the limit --max-cost ${max_cost:.2f}"
        return None

    ep.max_tokens, ep.temperature, ep.seed = protocol.max_tokens, protocol.temperature, protocol.seed
    stats = call_all([Task(p.key, p.messages) for p in by_key.values()], ep, on_done, stop=stop)
    return failures, stats


def judge_offline(todo: list[Planned], protocol, spec, judge, cache: JudgeCache, progress=None) -> tuple:
    import time

    stats = CallStats()
    t0 = time.time()
    for p in {p.key: p for p in todo}.values():
        stats.calls += 1
        raw, scores, usage = judge.judge(protocol, p.messages)
        s_ref, s_ans = (
            (None, scores[0])
            if protocol.kind == "single"
            else ((scores[0], scores[1]) if p.order == "ab" else (scores[1], scores[0]))
        )
        row = make_row(p, protocol, spec, None, usage, None)
        row.update(score_reference=s_ref, score_answer=s_ans, parsed=True, reason=None, raw=raw)
        cache.add(row)
        if progress:
            progress(row)
    stats.seconds = time.time() - t0
    return {}, stats


def collect(planned: list[Planned], cache: JudgeCache, failures: dict, fresh: set[str]) -> list[dict]:
    rows = []
    for p in planned:
        row = dict(cache.get(p.key) or failures[p.key])
        row["id"] = p.item.id  # the cache is shared across runs: the id is this run's
        row["cached"] = p.key not in fresh
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------- scores
def score_summary(
    rows: list[dict], protocol: Protocol, spec: JudgeSpec, swap: bool, calls: CallStats
) -> dict:
    main_order = "single" if protocol.kind == "single" else "ab"
    per_order: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["parsed"] and r["score_answer"] is not None:
            per_order.setdefault(r["order"], {})[r["id"]] = float(r["score_answer"])
    main = per_order.get(main_order, {})
    s = summary(main.values())
    main_rows = [r for r in rows if r["order"] == main_order]
    pt = sum(int(r["usage"].get("prompt_tokens", 0)) for r in rows)
    ct = sum(int(r["usage"].get("completion_tokens", 0)) for r in rows)
    out = {
        "judge_model": spec.judge_model,
        "protocol": protocol.name,
        "protocol_version": protocol.version,
        "offline": spec.offline,
        "comparable_with_gpt4o_mini": spec.comparable,
        "mean": s["mean"],
        "std": s["std"],
        "ci95": s["ci95"],
        "n": s["n"],
        "n_items": len(main_rows),
        "n_unparsed": sum(1 for r in main_rows if r["error"] is None and not r["parsed"]),
        "n_failed": sum(1 for r in main_rows if r["error"] is not None),
        "order": main_order,
        "parser": protocol.parser,
        **quirks_block(main_rows),
        "prompt_tokens": pt,
        "completion_tokens": ct,
        "cost_usd": cost_usd(spec.price_model, pt, ct, billed=spec.billed),
        "calls_this_run": calls.calls,
        "attempts_this_run": calls.attempts,
    }
    if not spec.comparable:
        out["note"] = (
            f"judged by {spec.judge_model}: NOT comparable with GPT-4o-mini scores (HW5's baselines)"
        )
    if swap and protocol.kind == "pairwise":
        ab, ba = per_order.get("ab", {}), per_order.get("ba", {})
        both = sorted(set(ab) & set(ba))
        out["swap"] = {
            **flip_rate(rows),
            "ab": summary(ab.values()),  # answer as Assistant 2 (HW5's order)
            "ba": summary(ba.values()),  # answer as Assistant 1
            "mean_of_orders": summary((ab[i] + ba[i]) / 2 for i in both),
            # > 0: the judge favours whichever answer comes second
            "position_bias": summary(ab[i] - ba[i] for i in both),
            "n_unparsed": sum(
                1 for r in rows if r["order"] == "ba" and r["error"] is None and not r["parsed"]
            ),
            "n_failed": sum(1 for r in rows if r["order"] == "ba" and r["error"] is not None),
        }
    return out


def _winner(row: dict) -> int:
    """+1 the answer wins, -1 the reference wins, 0 a tie (whatever the order it was shown in)."""
    d = float(row["score_answer"]) - float(row["score_reference"])
    return (d > 0) - (d < 0)


def flip_rate(rows: list[dict]) -> dict:
    """Share of prompts where swapping the order changes who wins (answer, reference or tie)."""
    by: dict[str, dict[str, int]] = {}
    for r in rows:
        if r["order"] in ("ab", "ba") and r["parsed"] and r["score_reference"] is not None:
            by.setdefault(r["id"], {})[r["order"]] = _winner(r)
    pairs = [w for w in by.values() if len(w) == 2]
    flips = sum(1 for w in pairs if w["ab"] != w["ba"])
    return {"flip_rate": flips / len(pairs) if pairs else None, "n_flips": flips, "n_pairs": len(pairs)}


def quirks_block(main_rows: list[dict]) -> dict:
    """Replies the official rule counts though they are suspect ("Assistant 1: 7" -> 7): how many, which kinds."""
    kinds: dict[str, int] = {}
    for r in main_rows:
        if r.get("parsed") and r.get("quirk"):
            kinds[r["quirk"]] = kinds.get(r["quirk"], 0) + 1
    return {"n_quirks": sum(kinds.values()), "quirks": kinds}


def write_results(judge_path: Path, scores_path: Path, rows: list[dict], scores: dict) -> None:
    atomic_write_jsonl(judge_path, rows)
    atomic_write_json(scores_path, scores)


def cache_for(spec: JudgeSpec) -> JudgeCache:
    return JudgeCache(cache_path(spec.judge_model))
