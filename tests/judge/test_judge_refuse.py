"""Statistics the judge refuses rather than make up (issue 30): a second judge keyed by its full endpoint
and failing like the first, an agreement refused on too few paired prompts, cached judgments re-checked
against their own replies, and a run that scored nothing exiting with its own status (issue 32)."""

from __future__ import annotations

import json
import re

import pytest
from aiohttp import web
from scipy.stats import spearmanr

from filelib import atomic_write_jsonl, read_jsonl
from tools.core.paths import Run
from tools.judge import cli as judge
from tools.judge.agree import MIN_PAIRS, second_path
from tools.judge.agree import main as agree_main
from tools.judge.cache import JudgeCache, endpoint_label
from tools.judge.protocol import load_protocol

N = 12


def write_predictions(run: Run, n: int = N) -> None:
    rows = [
        {
            "id": f"q{i}",
            "instruction": f"Explain item {i}.",
            "input": "",
            "answer": f"A{i}",
            "reference": f"R{i}",
        }
        for i in range(n)
    ]
    atomic_write_jsonl(run.predictions("demo_eval", "greedy"), rows)


def item(call) -> int:
    return int(re.search(r"item (\d+)", call.prompt).group(1))


def first_rule(i: int) -> int:
    return i % 10 + 1


def second_rule(i: int) -> int:  # the opposite ranking: Spearman -1 against the first
    return 11 - first_rule(i)


def by_path(call):
    """One server, two judges: the path `/v1` answers as the first, `/second/v1` as the second."""
    rule = second_rule if call.request.path.startswith("/second/") else first_rule
    return f"5 {rule(item(call))}"


def args(run: Run, url: str, *more: str) -> list[str]:
    return ["--run", run.name, "--testset", "demo_eval", "--base-url", url, "--model", "judge", *more]


def test_endpoint_label_is_the_full_endpoint():
    a = endpoint_label("m", "http://127.0.0.1:8000/v1")
    assert a == "m@http://127.0.0.1:8000/v1"
    assert a != endpoint_label("m", "http://127.0.0.1:8000/second/v1")
    assert (
        a
        != endpoint_label("m", "https://127.0.0.1:8000/v1")
        != endpoint_label("m", "http://127.0.0.1:8001/v1")
    )
    assert a == endpoint_label("m", "http://127.0.0.1:8000/v1/")  # one endpoint, one label
    assert endpoint_label("m", "http://example.org/v1") == "m@http://example.org:80/v1"
    # OpenAI's own endpoint keeps the bare model name its caches were written under
    assert endpoint_label("gpt-4o-mini", None) == endpoint_label("gpt-4o-mini", "https://api.openai.com/v1")
    assert endpoint_label("gpt-4o-mini", None) == "gpt-4o-mini"


def test_second_judge_on_another_path_of_the_same_host_is_called(out_dir, chat_server):
    run = Run("tiny", "agree", "paths")
    write_predictions(run)
    paths = []
    srv = chat_server(lambda call: paths.append(call.request.path) or by_path(call))
    second = srv.url.replace("/v1", "/second/v1")
    rc = judge.main(args(run, srv.url, "--second-judge-base-url", second, "--second-judge-model", "judge"))
    assert rc == 0
    # each judge called once per prompt: the second is not answered from the first's cache
    assert sorted(paths) == sorted(["/second/v1/chat/completions"] * N + ["/v1/chat/completions"] * N)
    ag = json.loads(run.scores("demo_eval", "greedy").read_text())["agreement"]
    want = spearmanr([first_rule(i) for i in range(N)], [second_rule(i) for i in range(N)]).statistic
    assert ag["spearman"] == pytest.approx(want) == -1.0 and ag["n"] == N and ag["n_failed"] == 0
    assert ag["judge_second"] == f"judge@{second}" and ag["judge_first"] != ag["judge_second"]
    rows = list(read_jsonl(second_path(run, "demo_eval", "greedy")))
    assert sorted(r["score_answer"] for r in rows) == sorted(float(second_rule(i)) for i in range(N))


def test_second_judge_failing_every_call_fails_the_run(out_dir, chat_server, capsys):
    def reply(call):
        if call.request.path.startswith("/second/"):
            return web.json_response({"error": {"message": "no such model"}}, status=400)
        return by_path(call)

    run = Run("tiny", "agree", "down")
    write_predictions(run)
    srv = chat_server(reply)
    second = srv.url.replace("/v1", "/second/v1")
    extra = ["--second-judge-base-url", second, "--second-judge-model", "judge", "--max-retries", "0"]
    assert judge.main(args(run, srv.url, *extra)) == 1
    err = capsys.readouterr().err
    assert f"second judge judge@{second}: {N} judgment(s) failed" in err
    ag = json.loads(run.scores("demo_eval", "greedy").read_text())["agreement"]
    assert ag["n_failed"] == N and ag["spearman"] is None and ag["n"] == 0


def judgments(path, scores: list[float]) -> None:
    rows = [
        {
            "id": f"q{i}",
            "order": "ab",
            "parsed": True,
            "score_answer": s,
            "judge_model": "j",
            "protocol": "hw5_pairwise",
        }
        for i, s in enumerate(scores)
    ]
    atomic_write_jsonl(path, rows)


@pytest.mark.parametrize("n", [0, 5, MIN_PAIRS - 1])
def test_agreement_refused_below_the_minimum_of_paired_prompts(tmp_path, capsys, n):
    a, b = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    judgments(a, [float(i % 10 + 1) for i in range(n)])
    judgments(b, [float(10 - i % 10) for i in range(n)])
    assert agree_main(["--judgments", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert f"{n} prompts scored by both judges, at least {MIN_PAIRS} needed" in err


def test_agreement_reported_from_the_minimum_on(tmp_path, capsys):
    a, b = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    judgments(a, [float(i % 10 + 1) for i in range(MIN_PAIRS)])
    judgments(b, [float(i % 10 + 1) for i in range(MIN_PAIRS)])
    assert agree_main(["--judgments", str(a), str(b)]) == 0
    assert f"Spearman +1.000 on n={MIN_PAIRS}" in capsys.readouterr().out


TAMPER = {
    "score-8-made-3": lambda r: r | {"score_answer": 3.0},
    "score-minus-5-flagged": lambda r: r | {"score_answer": -5.0, "quirk": "score out of 1-10"},
    "score-11-flagged": lambda r: r | {"score_answer": 11.0, "quirk": "score out of 1-10"},
    "parsed-no": lambda r: r | {"parsed": "no"},
    "null-score-parsed": lambda r: r | {"score_answer": None},
}


@pytest.mark.parametrize("case", TAMPER)
def test_a_cached_judgment_that_disagrees_with_its_reply_is_refused(out_dir, chat_server, capsys, case):
    run = Run("tiny", "cache", "tamper")
    write_predictions(run, n=3)
    srv = chat_server(lambda call: "5 8")
    assert judge.main(args(run, srv.url)) == 0
    before = run.scores("demo_eval", "greedy").read_text()
    assert json.loads(before)["mean"] == 8.0
    (cache,) = (out_dir / "cache" / "judge").glob("*.jsonl")
    rows = list(read_jsonl(cache))
    rows[1] = TAMPER[case](rows[1])
    atomic_write_jsonl(cache, rows)
    capsys.readouterr()
    assert judge.main(args(run, srv.url)) == 2
    err = capsys.readouterr().err
    assert f"{cache}: line 2" in err and "the cache is damaged" in err
    assert run.scores("demo_eval", "greedy").read_text() == before  # nothing averaged, nothing written
    assert len(srv.bodies) == 3  # and nothing judged again


def test_a_cached_judgment_of_an_unknown_protocol_is_checked_when_looked_up(tmp_path):
    path = tmp_path / "judge" / "j.jsonl"
    row = {"key": "k", "protocol": "mine", "protocol_version": 1, "order": "ab", "parsed": True}
    path.parent.mkdir()
    path.write_text(json.dumps(row | {"score_answer": 3.0, "score_reference": 5.0, "raw": "5 8"}) + "\n")
    cache = JudgeCache(path)  # loads: only a run that loaded protocol `mine` can look it up
    with pytest.raises(ValueError, match=r"j\.jsonl: line 1: written under protocol 'mine' v1"):
        cache.get("k")
    load_protocol("hw5_pairwise")
    row2 = row | {"protocol": "hw5_pairwise", "score_answer": 3.0, "score_reference": 5.0, "raw": "5 8"}
    path.write_text(json.dumps(row2) + "\n")
    with pytest.raises(ValueError, match=r"line 1: it stores score 3 .* reads 8"):
        JudgeCache(path)


def test_a_run_that_scored_nothing_exits_3_and_shows_a_reply(out_dir, chat_server, capsys):
    run = Run("tiny", "nothing", "scored")
    write_predictions(run, n=3)
    srv = chat_server(lambda call: "I cannot compare these answers.")
    assert judge.main(args(run, srv.url)) == judge.NOTHING_SCORED == 3
    err = capsys.readouterr().err
    assert "nothing scored: 3 of 3 replies could not be parsed" in err
    assert "'I cannot compare these answers.'" in err
    s = json.loads(run.scores("demo_eval", "greedy").read_text())
    assert s["mean"] is None and s["n"] == 0 and s["n_unparsed"] == 3


def test_rows_written_before_the_checks_still_read(tmp_path):
    """An older cache line (no `quirk` field, a host-keyed label) reads as it did: the checks refuse only
    what disagrees with its own reply."""
    path = tmp_path / "judge" / "judge-x_127.0.0.1_9.jsonl"
    path.parent.mkdir()
    old = {
        "key": "k",
        "id": "q0",
        "protocol": "hw5_pairwise",
        "protocol_version": 1,
        "judge_model": "judge-x@127.0.0.1:9",
        "order": "ab",
        "score_reference": 5,
        "score_answer": 8,
        "parsed": True,
        "reason": None,
        "raw": "5 8\nThe second answer is more detailed.",
        "usage": {"prompt_tokens": 300, "completion_tokens": 5},
        "error": None,
    }
    unparsed = old | {"key": "u", "score_reference": None, "score_answer": None, "parsed": False, "raw": "no"}
    path.write_text(json.dumps(old) + "\n" + json.dumps(unparsed) + "\n")
    cache = JudgeCache(path)
    assert cache.get("k")["score_answer"] == 8 and "u" in cache and not cache.get("u")["parsed"]
