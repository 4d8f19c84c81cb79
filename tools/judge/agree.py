"""Do two judges agree on the same answers? Spearman of their per-prompt scores, and whether they
pick the same winner when two runs are compared (per prompt and overall).

A second judge is any OpenAI-compatible endpoint and model (`python -m tools.judge ...
--second-judge-base-url URL --second-judge-model M`): it judges exactly the answers the first
judged, with the same protocol, its own cache, the same cost limit, and its judgments go to
`judge.second.jsonl` beside `judge.jsonl`; scores.json gets an `agreement` block. This command
then compares two runs under both judges.

The second judge is cached under its full endpoint (`cache.endpoint_label`: model, scheme, host, port,
path), so a second judge with the first one's model name on another path of the same host is called,
not answered from the first judge's cache. Its failed calls are counted in the agreement block
(`n_failed`) and fail the judging run as the first judge's do (exit 1).

A Spearman correlation needs paired prompts: below MIN_PAIRS (10) prompts scored by both judges it is
not estimable - the block says so (`spearman: null`, a `note`) and this command refuses (exit 2, the
count in the message) rather than print a number.

Usage:
    python -m tools.judge.agree --runs A B --testset T [--decoding greedy]
    python -m tools.judge.agree --judgments FIRST.jsonl SECOND.jsonl   (one run, two judge files)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from filelib import run_main
from tools.core.args import command, opt
from tools.core.paths import Run
from tools.judge.cache import legacy_judgments, read_judgments
from tools.judge.client import Endpoint
from tools.judge.run import JudgeError, cache_for, collect, endpoint_spec, estimate, judge_api, plan

SECOND = "judge.second.jsonl"
# The fewest prompts scored by both judges (or, across runs, by both judges on both runs) on which an
# agreement is reported; below it Spearman's rho is noise (n=7 gives a 95 % interval wider than 1).
MIN_PAIRS = 10


def second_path(run: Run, testset: str, decoding: str) -> Path:
    return run.judgments(testset, decoding).with_name(SECOND)


def judge_second(items, proto, swap: bool, ep: Endpoint, max_cost: float, say=print) -> list[dict]:
    """The same judgments by another endpoint/model (cached under its full endpoint); returns its rows,
    its failed calls among them (`error` set, never cached)."""
    spec = endpoint_spec(ep.model, ep.base_url)
    cache = cache_for(spec)
    planned = plan(items, proto, spec, swap)
    legacy_judgments(planned, proto, spec, cache, say)
    todo = [p for p in planned if p.key not in cache]
    est = estimate(todo, proto, spec)
    say(f"  second judge {spec.judge_model}: {est['calls']} calls to make, cost {est['cost_usd']}")
    if est["calls"] and (est["cost_usd"] is None or est["cost_usd"] > max_cost):
        raise JudgeError(
            f"second judge {spec.judge_model}: estimated cost {est['cost_usd']} above ${max_cost}"
        )
    failures, _ = judge_api(todo, proto, spec, ep, cache, max_cost=max_cost) if todo else ({}, None)
    return collect(planned, cache, failures, {p.key for p in todo})


def main_scores(rows: list[dict]) -> dict[str, float]:
    """{id: the answer's score} in the main order (HW5's "ab", or "single")."""
    main = "single" if rows and rows[0]["protocol"] == "single" else "ab"
    return {r["id"]: float(r["score_answer"]) for r in rows if r["order"] == main and r["parsed"]}


def spearman(a: dict[str, float], b: dict[str, float]) -> dict:
    from scipy.stats import spearmanr

    ids = sorted(set(a) & set(b))
    if len(ids) < MIN_PAIRS:
        return {
            "spearman": None,
            "n": len(ids),
            "note": f"not estimable: {len(ids)} paired prompts, at least {MIN_PAIRS} needed",
        }
    x, y = [a[i] for i in ids], [b[i] for i in ids]
    if len(set(x)) < 2 or len(set(y)) < 2:  # a constant judge has no ranking to agree with
        return {"spearman": None, "n": len(ids), "note": "one judge gave every prompt the same score"}
    return {"spearman": float(spearmanr(x, y).statistic), "n": len(ids)}


def agreement(first: list[dict], second: list[dict]) -> dict:
    """Two judges on the same answers: Spearman of per-prompt scores and of the means."""
    a, b = main_scores(first), main_scores(second)
    return {
        "judge_first": first[0]["judge_model"] if first else None,
        "judge_second": second[0]["judge_model"] if second else None,
        **spearman(a, b),
        "mean_first": float(np.mean(list(a.values()))) if a else None,
        "mean_second": float(np.mean(list(b.values()))) if b else None,
        # the second judge's calls that failed (endpoint down, HTTP errors): the run exits 1 on them
        "n_failed": sum(1 for r in second if r.get("error") is not None),
        "n_unparsed": sum(1 for r in second if r.get("error") is None and not r.get("parsed")),
    }


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def winner_agreement(runs: dict[str, dict[str, list[dict]]]) -> dict:
    """Two runs x two judges: does each judge prefer the same run, overall and prompt by prompt?"""
    (ra, by_a), (rb, by_b) = runs.items()
    out = {"runs": [ra, rb], "judges": {}}
    per_prompt = []
    for j in ("first", "second"):
        sa, sb = main_scores(by_a[j]), main_scores(by_b[j])
        ids = sorted(set(sa) & set(sb))
        diff = float(np.mean([sb[i] - sa[i] for i in ids])) if ids else None
        out["judges"][j] = {
            "judge": by_a[j][0]["judge_model"] if by_a[j] else None,
            f"{rb} - {ra}": diff,
            "better": None if not diff else (rb if diff > 0 else ra),
        }
        per_prompt.append({i: _sign(sb[i] - sa[i]) for i in ids})
    common = sorted(set(per_prompt[0]) & set(per_prompt[1]))
    same = sum(1 for i in common if per_prompt[0][i] == per_prompt[1][i])
    b1, b2 = out["judges"]["first"]["better"], out["judges"]["second"]["better"]
    out["same_better_run"] = bool(b1 and b1 == b2)
    out["prompt_winner_agreement"] = same / len(common) if common else None
    out["n_prompts"] = len(common)
    return out


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        raise JudgeError(f"{path}: not there (judge with --second-judge-base-url/--second-judge-model first)")
    return read_judgments(path)


def _enough(what: str, n: int, ag: dict | None = None) -> None:
    """Refuse an agreement it cannot estimate: too few paired prompts, or a judge with no ranking."""
    if n < MIN_PAIRS:
        raise JudgeError(
            f"{what}: {n} prompts scored by both judges, at least {MIN_PAIRS} needed for an agreement "
            "(not estimable: judge more prompts, or re-run the failed or unparsed ones)"
        )
    if ag is not None and ag["spearman"] is None:
        raise JudgeError(f"{what}: Spearman not estimable on n={n}: {ag.get('note')}")


@dataclass
class AgreeArgs:
    runs: list[str] | None = opt(None, help="two runs judged by both judges", metavar="RUN")
    judgments: list[Path] | None = opt(None, help="one run's two judgment files", metavar="FILE")
    testset: str = opt("hw5_test", help="the judged evaluation set")
    decoding: str = opt("greedy", help="the judged decoding point")

    def check(self) -> list[str]:
        if bool(self.runs) == bool(self.judgments):
            return ["name --runs A B or --judgments FIRST SECOND"]
        given = self.runs or self.judgments
        return [] if len(given) == 2 else [f"--{'runs' if self.runs else 'judgments'}: two, not {len(given)}"]


@command(AgreeArgs, __doc__)
def main(a: AgreeArgs) -> int:
    try:
        if a.judgments:
            res = agreement(_rows(a.judgments[0]), _rows(a.judgments[1]))
            _enough(f"{a.judgments[0]} and {a.judgments[1]}", res["n"], res)
            print(
                f"{res['judge_first']} vs {res['judge_second']}: Spearman {res['spearman']:+.3f} on n={res['n']}"
            )
            return 0
        runs = {}
        for name in a.runs:
            r = Run.parse(name)
            runs[r.name] = {
                "first": _rows(r.judgments(a.testset, a.decoding)),
                "second": _rows(second_path(r, a.testset, a.decoding)),
            }
        ags = {name: agreement(by["first"], by["second"]) for name, by in runs.items()}
        w = winner_agreement(runs)
        for name, ag in ags.items():
            _enough(name, ag["n"], ag)
        _enough(f"{' and '.join(runs)} together", w["n_prompts"])
        for name, ag in ags.items():
            print(
                f"{name}: {ag['judge_first']} vs {ag['judge_second']}: Spearman {ag['spearman']:+.3f} (n={ag['n']})"
            )
        print(
            f"better run: first judge {w['judges']['first']['better']}, second {w['judges']['second']['better']} "
            f"-> {'agree' if w['same_better_run'] else 'DISAGREE'}; per-prompt winner agreement "
            f"{w['prompt_winner_agreement']} on {w['n_prompts']} prompts"
        )
    except (JudgeError, ValueError) as e:
        print(f"judge.agree: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run_main(main)
