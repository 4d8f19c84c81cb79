"""Two judges on the same answers, through a real `llamafactory-cli api` (the tiny model) behind two
endpoints: the flip rate under --swap, Spearman of the two judges' per-prompt scores, and whether
they pick the same better run (`python -m tools.judge.agree`).

Each endpoint is a small proxy in front of the one real server (two ports, two model names: two
judges to the client). The tiny model's words are gibberish, so each proxy rewrites the reply into
the scores its judge would give - a planted rule per judge, so the expected agreement is known.
"""

from __future__ import annotations

import json
import re

import pytest
from scipy.stats import spearmanr

from filelib import atomic_write_jsonl, read_jsonl
from tools.core.paths import Run
from tools.judge.agree import main as agree_main
from tools.judge.agree import second_path
from tools.judge.cli import run_judge

pytestmark = pytest.mark.slow

ANSWER = re.compile(r"(\d+) is prime\.")
REF_SCORE, BONUS = 5, 2  # the reference's score; judge one's bonus for whatever is shown second


def judge_one(n: int) -> int:
    return n


def judge_two(n: int) -> int:  # agrees on the order, not on every step
    return min(10, n + (n % 3 == 0))


def scoring(rule, bonus: int):
    """A reply for `chat_server` in front of the real server: its completion (usage, ids, finish reason),
    the words replaced by the scores this judge's rule gives, plus `bonus` for the second answer."""

    async def reply(call) -> dict:
        body = await call.forward()
        a1, a2 = call.prompt.split("[The Start of Assistant 2's Answer]")
        s1 = rule(int(ANSWER.search(a1).group(1))) if ANSWER.search(a1) else REF_SCORE
        s2 = rule(int(ANSWER.search(a2).group(1))) if ANSWER.search(a2) else REF_SCORE
        body["choices"][0]["message"]["content"] = f"{s1} {min(10, s2 + bonus)}"
        return body

    return reply


# ten prompts: the fewest an agreement is reported on (tools.judge.agree.MIN_PAIRS)
NUMBERS = {"a": [2, 3, 4, 5, 6, 7, 8, 2, 5, 7], "b": [3, 4, 6, 5, 8, 9, 8, 4, 5, 9]}


def write_run(variant: str) -> Run:
    run = Run("tiny", "judge", variant)
    rows = [
        {
            "id": f"p{i}",
            "instruction": f"Name prime number {i}.",
            "input": "",
            "answer": f"{n} is prime.",
            "reference": "Seven is a prime number.",
        }
        for i, n in enumerate(NUMBERS[variant])
    ]
    atomic_write_jsonl(run.predictions("demo_eval", "greedy"), rows)
    return run


def winner(ans: int, ref: int) -> int:
    return (ans > ref) - (ans < ref)


def test_flip_rate_and_two_judges_agreement(out_dir, tiny_api, chat_server, capsys):
    runs = {v: write_run(v) for v in NUMBERS}
    p1 = chat_server(scoring(judge_one, BONUS), upstream=tiny_api)
    p2 = chat_server(scoring(judge_two, 0), upstream=tiny_api)
    one, two = p1.url, p2.url
    for v, run in runs.items():
        s = run_judge(
            run.name,
            "demo_eval",
            "greedy",
            protocol="hw5_official",
            swap=True,
            base_url=one,
            model="judge-one",
            second_base_url=two,
            second_model="judge-two",
            say=lambda *_: None,
            progress_bar=False,
        )["scores"]
        ns = NUMBERS[v]
        # judge one favours the second position by BONUS: the flips are where that changes the winner
        flips = sum(
            winner(min(10, judge_one(n) + BONUS), REF_SCORE) != winner(judge_one(n), REF_SCORE + BONUS)
            for n in ns
        )
        assert s["swap"]["n_pairs"] == len(ns) and s["swap"]["n_flips"] == flips > 0
        assert s["swap"]["flip_rate"] == pytest.approx(flips / len(ns))
        bias = [min(10, judge_one(n) + BONUS) - judge_one(n) for n in ns]  # scores stop at 10
        assert s["swap"]["position_bias"]["mean"] == pytest.approx(sum(bias) / len(ns))
        want = spearmanr([min(10, judge_one(n) + BONUS) for n in ns], [judge_two(n) for n in ns]).statistic
        ag = s["agreement"]
        assert ag["spearman"] == pytest.approx(want) and ag["n"] == len(ns)
        assert ag["judge_second"].startswith("judge-two@")
        assert len(list(read_jsonl(second_path(run, "demo_eval", "greedy")))) == 2 * len(ns)
    calls = len(p1.bodies) + len(p2.bodies)
    # two orders, two judges, every distinct (prompt, answer) once: the runs share two answers, the cache knows
    distinct = {(i, n) for ns in NUMBERS.values() for i, n in enumerate(ns)}
    assert len(distinct) == 17 and calls == 2 * 2 * len(distinct)

    assert agree_main(["--runs", runs["a"].name, runs["b"].name, "--testset", "demo_eval"]) == 0
    out = capsys.readouterr().out
    same = sum(
        winner(judge_one(b), judge_one(a)) == winner(judge_two(b), judge_two(a))
        for a, b in zip(NUMBERS["a"], NUMBERS["b"], strict=True)
    )
    b = runs["b"].name
    assert f"better run: first judge {b}, second {b} -> agree" in out
    assert f"per-prompt winner agreement {same / len(NUMBERS['a'])}" in out
    s = json.loads(runs["a"].scores("demo_eval", "greedy").read_text())
    assert s["protocol"] == "hw5_official" and s["references"]["source"] == "predictions"
