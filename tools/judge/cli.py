"""Judge a run's answers: GPT-4o-mini (or any OpenAI-compatible endpoint), cached, costed, resumable.

Reads `Run.predictions(testset, decoding)` and writes `Run.judgments(...)` (judge.jsonl, one line
per judgment with both scores and the raw text) and `Run.scores(...)` (scores.json: mean of the
answer's scores, std, bootstrap 95 % interval, n, n_unparsed, n_failed, tokens, cost), both
atomically. Judgments are cached in cache/judge/<judge>.jsonl (append-only): a re-run makes no
call, a killed run resumes where it stopped.

Who judges:
- OPENAI_API_KEY set (or --base-url given): the API, `--model` (default gpt-4o-mini). The key is
  read from the environment only and never written anywhere.
- no key, or --offline: the offline judge, a local model (default the embedded SmolLM2-135M,
  `--offline-model DIR` for any other) scoring G-Eval's way (expected score from the
  probabilities of "1".."10"), so every item gets a score. Labelled `offline: true`,
  `judge_model: offline:<name>`: NOT comparable with GPT-4o-mini's scores.
- --serve-local DIR: that model served by `llamafactory-cli api` on a free loopback port (started
  and stopped here), judged through the API path: for a local model big enough to follow the prompt.

Protocols (templates/judge/*.yaml): hw5_official (HW5's evaluate.py byte for byte: max_tokens 5,
its parse and average; quirky replies counted and flagged), hw5_pairwise (the same prompt, 512
tokens, the robust parser), single (MT-Bench `Rating: [[N]]`, no reference); `auto` picks
hw5_official on HW5's test sets (hw5_*), hw5_pairwise elsewhere when every prompt has a reference,
else single. --swap judges both orders and reports each, their mean, the position bias and the flip
rate. --references FILE judges against other reference answers (joined by id); scores.json records
which references it used. --second-judge-base-url/--second-judge-model: a second judge on the same
answers, its agreement in scores.json (and `python -m tools.judge.agree` across two runs); its key,
if its endpoint needs one, is read from SECOND_JUDGE_API_KEY (OPENAI_API_KEY when it is OpenAI's).

Exit status: 0 judged; 1 some judgments failed, the second judge's too (endpoint down, HTTP errors,
malformed bodies: what was judged is written and cached, the failures are retried by the next run);
2 bad input or a refused run (nothing written; a damaged cache line too); 3 (NOTHING_SCORED) every
call answered but no reply could be parsed into a score (`mean: null, n: 0`): written, and the
message shows one such reply.

Usage:
    python -m tools.judge --run R --testset T --decoding D [--protocol auto|hw5_pairwise|single] [--swap]
        [--base-url URL] [--model gpt-4o-mini] [--concurrency 8] [--timeout 60] [--max-retries 5]
        [--dry-run] [--max-cost 1.0] [--offline] [--offline-model DIR]
        [--serve-local DIR [--serve-template T]] [--compare OTHER_RUN] [--references FILE]
        [--second-judge-base-url URL --second-judge-model M]
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from filelib import atomic_write_jsonl, read_jsonl, run_main
from tools.core.args import checked, command, opt
from tools.core.paths import EMBEDDED_MODEL, Run
from tools.judge.cache import legacy_judgments
from tools.judge.client import CallStats, Endpoint
from tools.judge.progress import JudgeProgress
from tools.judge.protocol import ProtocolError, load_protocol
from tools.judge.references import ReferenceError, join_references, label, provenance, read_references
from tools.judge.run import (
    DEFAULT_MODEL,
    JudgeError,
    cache_for,
    check_references,
    choose_protocol,
    collect,
    endpoint_spec,
    estimate,
    judge_api,
    judge_offline,
    load_items,
    local_spec,
    plan,
    score_summary,
    write_results,
)
from tools.judge.serve import ServeError
from tools.judge.stats import paired_difference

DEFAULT_OFFLINE_MODEL = EMBEDDED_MODEL
DEFAULT_MAX_COST = 1.0
NOTHING_SCORED = 3  # exit status: judged, but not one reply parsed into a score


def _money(x: float | None) -> str:
    return "unknown (model not in templates/judge/prices.yaml)" if x is None else f"${x:.4f}"


@dataclass
class JudgeArgs:
    """Every option of a judging run, each default, help and rule once (tools.core.args)."""

    run: str = opt(help="model/study/variant", required=True)
    testset: str = opt(help="the evaluation set the answers are for", required=True)
    decoding: str = opt("greedy", help="the decoding point the answers are for")
    protocol: str = opt("auto", help="auto | hw5_official | hw5_pairwise | single | a protocol YAML")
    swap: bool = opt(False, help="judge both orders; report each, their mean and the bias")
    base_url: str | None = opt(None, help="an OpenAI-compatible endpoint", env="OPENAI_BASE_URL")
    model: str = opt(DEFAULT_MODEL, help="the judge model at the endpoint")
    concurrency: int = opt(8, help="calls in flight at once", min=1)
    timeout: float = opt(60.0, help="seconds per attempt", positive=True)
    max_retries: int = opt(5, help="retries of a failed call", nonneg=True)
    dry_run: bool = opt(False, help="print calls, tokens and cost; spend nothing")
    max_cost: float = opt(
        DEFAULT_MAX_COST, help="refuse above this estimate, stop calling above this spend (USD)", nonneg=True
    )
    offline: bool | None = opt(None, help="the local G-Eval judge (no key needed)")
    offline_model: Path | None = opt(None, help=f"local model folder (default {DEFAULT_OFFLINE_MODEL})")
    serve_local: Path | None = opt(None, help="serve this model with llamafactory-cli api and judge")
    serve_template: str | None = opt(None, help="LLaMA-Factory template for --serve-local")
    compare: str | None = opt(None, help="paired difference with another run", metavar="OTHER_RUN")
    references: Path | None = opt(
        None, help="reference answers joined by id (any shape), e.g. the course's file"
    )
    second_base_url: str | None = opt(
        None, help="a second judge: its endpoint", flag="--second-judge-base-url"
    )
    second_model: str | None = opt(
        None, help="a second judge: its model (agreement)", flag="--second-judge-model"
    )


def run_judge(
    run: JudgeArgs | str | None = None,
    testset: str | None = None,
    decoding: str | None = None,
    *,
    say=print,
    progress_bar: bool = True,
    judge_factory=None,
    **options,
) -> dict:
    """Judge one run's predictions; returns {scores, estimate, rows} ({estimate} only on a dry run).

    `run` is a JudgeArgs, or the run's name with the testset, decoding and any JudgeArgs field as
    keywords (`run_judge("m/s/v", "hw5_test", "greedy", base_url=URL)`): the defaults are JudgeArgs'.
    `judge_factory(model_dir) -> OfflineJudge` lets a caller share one loaded offline judge across
    runs (tools.eval.study); it is called only when a judgment is missing from the cache.
    """
    if isinstance(run, JudgeArgs):
        if testset or decoding or options:
            raise TypeError("run_judge(JudgeArgs) takes no other options")
        args = run
    else:
        given = {"run": run, "testset": testset, "decoding": decoding}
        args = JudgeArgs(**{k: v for k, v in given.items() if v is not None}, **options)
    a = checked(args)
    run, testset, decoding, model, base_url = a.run, a.testset, a.decoding, a.model, a.base_url
    serve_local, max_cost = a.serve_local, a.max_cost
    r = Run.parse(run)
    pred = r.predictions(testset, decoding)
    items = load_items(pred)
    ref_path = Path(a.references) if a.references else None
    try:
        if ref_path is not None:
            items = join_references(items, read_references(ref_path), ref_path)
        proto = load_protocol(choose_protocol(items, a.protocol, testset))
    except (ProtocolError, ReferenceError) as e:
        raise JudgeError(str(e)) from e
    check_references(items, proto, pred)
    if a.swap and proto.kind != "pairwise":
        raise JudgeError(f"--swap needs a pairwise protocol; {proto.name} grades one answer")

    api_key = os.environ.get("OPENAI_API_KEY") or None
    if serve_local:
        if not (Path(serve_local) / "config.json").is_file():
            raise JudgeError(f"--serve-local {serve_local}: not a model folder (no config.json there)")
        mode, spec = "serve", local_spec(Path(serve_local).name, "local")
    elif a.offline or (a.offline is None and not base_url and not api_key):
        offline_model = Path(a.offline_model or DEFAULT_OFFLINE_MODEL)
        mode, spec = "offline", local_spec(offline_model.name)
    else:
        mode, spec = "api", endpoint_spec(model, base_url)

    cache = cache_for(spec)
    planned = plan(items, proto, spec, a.swap)
    legacy_judgments(planned, proto, spec, cache, say)
    todo = [p for p in planned if p.key not in cache]
    est = estimate(todo, proto, spec)
    say(
        f"judge {spec.judge_model} | protocol {proto.name} v{proto.version} | {r.name} {testset}/{decoding}: "
        f"{len(planned)} judgments, {len(planned) - len(todo)} cached, {est['calls']} to make"
    )
    say(
        f"  estimate: {est['prompt_tokens']} prompt + {est['completion_tokens']} completion tokens "
        f"({est['tokenizer']}), cost {_money(est['cost_usd'])}"
    )
    if spec.offline:
        say(f"  {spec.judge_model} is a local judge: its scores are NOT comparable with GPT-4o-mini's")
    if a.dry_run:
        return {"estimate": est}
    if est["cost_usd"] is None and est["calls"]:
        raise JudgeError(
            f"no price for {spec.price_model} in templates/judge/prices.yaml: add it there before spending"
        )
    if est["cost_usd"] is not None and est["cost_usd"] > max_cost:
        raise JudgeError(
            f"estimated cost {_money(est['cost_usd'])} is above the limit ${max_cost:.2f}: "
            f"raise it with --max-cost {max(0.01, math.ceil(est['cost_usd'] * 120) / 100):.2f} if you mean it"
        )

    failures, stats = {}, CallStats()
    n_todo = len({p.key for p in todo})
    progress = JudgeProgress(
        len(planned) - len(todo) + n_todo,
        len(planned) - len(todo),
        f"judge {r.variant}",
        spec.price_model,
        spec.billed,
        enabled=progress_bar and bool(todo),
    )

    try:
        if todo and mode == "offline":
            from tools.judge.offline import OfflineJudge

            judge = (judge_factory or OfflineJudge)(offline_model)
            failures, stats = judge_offline(todo, proto, spec, judge, cache, progress)
        elif todo:
            ep = Endpoint(model, base_url, api_key, a.timeout, a.max_retries, a.concurrency)
            if mode == "serve":
                from tools.judge.serve import serve_local as serving

                with serving(serve_local, a.serve_template) as url:
                    ep.base_url, ep.model, ep.api_key = url, Path(serve_local).name, None
                    failures, stats = judge_api(todo, proto, spec, ep, cache, progress, max_cost)
            else:
                failures, stats = judge_api(todo, proto, spec, ep, cache, progress, max_cost)
    finally:  # also on Ctrl-C: the bar ends its line before the error boundary's one
        progress.close()

    rows = collect(planned, cache, failures, {p.key for p in todo})
    scores = score_summary(rows, proto, spec, a.swap, stats)
    scores.update(run=r.name, testset=testset, decoding=decoding, estimate_this_run=est)
    scores["references"] = provenance(items, testset, ref_path, pred)
    if a.second_model or a.second_base_url:
        from tools.judge.agree import agreement, judge_second, second_path

        ep2 = Endpoint(
            model=a.second_model or model,
            base_url=a.second_base_url,
            api_key=api_key if not a.second_base_url else os.environ.get("SECOND_JUDGE_API_KEY"),
            timeout=a.timeout,
            max_retries=a.max_retries,
            concurrency=a.concurrency,
        )
        rows2 = judge_second(items, proto, a.swap, ep2, max_cost, say)
        atomic_write_jsonl(second_path(r, testset, decoding), rows2)
        scores["agreement"] = agreement(rows, rows2)
    write_results(r.judgments(testset, decoding), r.scores(testset, decoding), rows, scores)

    ci = scores["ci95"]
    say(
        f"  calls {stats.calls} (HTTP attempts {stats.attempts}, failed {stats.failed}) in {stats.seconds:.1f} s; "
        f"usage {scores['prompt_tokens']} + {scores['completion_tokens']} tokens, cost {_money(scores['cost_usd'])}"
    )
    mean = "n/a" if scores["mean"] is None else f"{scores['mean']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    say(
        f"  mean {mean} over n={scores['n']} of {scores['n_items']} "
        f"(unparsed {scores['n_unparsed']}, failed {scores['n_failed']}) -> {r.scores(testset, decoding)}"
    )
    say(f"  protocol {proto.name} ({proto.parser} parse); {label(scores['references'])}")
    if scores.get("n_quirks"):
        say(f"  counted as the course counts them, but suspect: {scores['n_quirks']} {scores['quirks']}")
    if "swap" in scores:
        sw = scores["swap"]
        say(
            f"  swap: ab {sw['ab']['mean']}, ba {sw['ba']['mean']}, mean of orders {sw['mean_of_orders']['mean']}, "
            f"position bias {sw['position_bias']['mean']} {sw['position_bias']['ci95']}, "
            f"flip rate {sw['flip_rate']} ({sw['n_flips']}/{sw['n_pairs']} prompts change winner)"
        )
    if "agreement" in scores:
        ag = scores["agreement"]
        note = f" ({ag['note']})" if ag.get("note") else ""
        say(f"  second judge {ag['judge_second']}: Spearman {ag['spearman']} on n={ag['n']}{note}")
    return {"scores": scores, "estimate": est, "rows": rows}


def answer_scores(run: str, testset: str, decoding: str) -> tuple[dict[str, float], str | None]:
    """{id: score of the answer} in the main order of a judged run, and its judge model (and protocol)."""
    path = Run.parse(run).judgments(testset, decoding)
    if not path.exists():
        raise JudgeError(f"{path}: not judged yet (run tools.judge on {run} first)")
    rows = list(read_jsonl(path))
    main = "single" if rows and rows[0]["protocol"] == "single" else "ab"
    # the judge and the protocol: scores are comparable only when both are the same
    judge_model = f"{rows[0]['judge_model']} ({rows[0]['protocol']})" if rows else None
    return {
        r["id"]: float(r["score_answer"]) for r in rows if r["order"] == main and r["parsed"]
    }, judge_model


def compare_runs(run: str, other: str, testset: str, decoding: str, say=print) -> dict:
    """This run minus the other, on the prompts both have scores for, with a paired bootstrap interval."""
    mine, judge_a = answer_scores(run, testset, decoding)
    theirs, judge_b = answer_scores(other, testset, decoding)
    if judge_a != judge_b:
        raise JudgeError(
            f"{run} was judged by {judge_a} and {other} by {judge_b}: not comparable (judge or protocol)"
        )
    d = paired_difference(theirs, mine)
    if d["diff"] is None:
        raise JudgeError(f"{run} and {other} have no scored prompt in common")
    verdict = "a real difference" if d["significant"] else "not distinguishable from noise (0 is inside)"
    say(
        f"{run} - {other} on {d['n_paired']} paired prompts ({judge_a}): "
        f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] 95 % paired bootstrap: {verdict}"
    )
    return d


@command(JudgeArgs, __doc__)
def main(a: JudgeArgs) -> int:
    try:
        res = run_judge(a)
        scores = res.get("scores") or {}
        failed = scores.get("n_failed", 0) + (scores.get("swap") or {}).get("n_failed", 0)
        if failed:  # endpoint down, HTTP 400, a malformed body: the mean is not over the whole set
            print(
                f"judge: error: {failed} judgment(s) failed (n={scores['n']} of {scores['n_items']} scored); the "
                "failures are not cached: fix the endpoint and re-run to judge them",
                file=sys.stderr,
            )
            stopped = [r["error"] for r in res["rows"] if (r.get("error") or "").startswith("NotCalled")]
            if stopped:
                print(
                    f"judge: error: {len(stopped)} not called: {stopped[0].split(': ', 1)[1]}",
                    file=sys.stderr,
                )
            return 1
        failed2 = (scores.get("agreement") or {}).get("n_failed", 0)
        if failed2:  # the second judge's failures count as the first's: its agreement is not over the set
            ag = scores["agreement"]
            print(
                f"judge: error: second judge {ag['judge_second']}: {failed2} judgment(s) failed (agreement on "
                f"n={ag['n']}); the failures are not cached: fix its endpoint and re-run to judge them",
                file=sys.stderr,
            )
            return 1
        if scores.get("n_items") and not scores.get("n"):
            bad = next((r for r in res["rows"] if r["error"] is None and not r["parsed"]), {})
            print(
                f"judge: error: nothing scored: {scores['n_unparsed']} of {scores['n_items']} replies could not "
                f"be parsed; e.g. id {bad.get('id')}: {(bad.get('raw') or '')[:120]!r} ({bad.get('reason')})",
                file=sys.stderr,
            )
            return NOTHING_SCORED
        if a.compare and not a.dry_run:
            compare_runs(a.run, a.compare, a.testset, a.decoding)
    except (JudgeError, ValueError, ServeError) as e:
        print(f"judge: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run_main(main)
