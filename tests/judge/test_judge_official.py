"""HW5's official evaluation, byte for byte: the request body the client really sends (over HTTP, to a
small recording server standing in for OpenAI), the official parse and average with their quirks,
the references each score records, and `--references`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from filelib import atomic_write_jsonl, read_jsonl, sha256_file
from tools.core.paths import Run
from tools.judge import cli as judge
from tools.judge.parse import parse_official
from tools.judge.protocol import load_protocol

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "hw5_official_request.json").read_text())
RUN = "smollm2_135m/rank/r8"


def official_average(replies: list[str]) -> tuple[float, int]:
    """HW5's evaluate.py, its lines: strip, first line, findall, >= 2 -> count the second; the mean."""
    total, count = 0.0, 0
    for content in replies:
        content = content.strip()
        first_line = content.split("\n")[0].strip()
        scores = re.findall(r"\d+\.?\d*", first_line)
        if len(scores) >= 2:
            total += float(scores[1])
            count += 1
    return (total / count if count > 0 else 0), count


def planned(replies: dict[int, str]):
    """A reply for `chat_server` standing in for OpenAI: the reply planned for the prompt's "item N"
    (the first line of a real GPT-4o-mini answer, cut at 5 tokens), "8 6" for any other."""

    def reply(call) -> str:
        m = re.search(r"item (\d+)", call.prompt)
        return replies.get(int(m.group(1)) if m else -1, "8 6")

    return reply


def write_items(run: Run, rows: list[dict], testset="hw5_test"):
    return atomic_write_jsonl(run.predictions(testset, "greedy"), [r | {"decoding": "greedy"} for r in rows])


def test_request_body_is_hw5s_to_the_byte(out_dir, chat_server):
    run = Run.parse(RUN)
    write_items(run, [FIXTURE["predictions_row"]])
    srv = chat_server(planned({}))
    res = judge.run_judge(RUN, "hw5_test", "greedy", base_url=srv.url, say=lambda *_: None)
    assert len(srv.bodies) == 1
    sent = srv.bodies[0]
    assert (
        sent == FIXTURE["body"]
    )  # system, user text (ending "[System]\n<criteria>\n\n"), model, t, max_tokens
    assert sent["messages"][1]["content"].endswith("does not affect your judgment.\n\n")
    assert "seed" not in sent and sent["max_tokens"] == 5 and sent["temperature"] == 0
    assert res["scores"]["protocol"] == "hw5_official" and res["scores"]["parser"] == "official"


# (reply, official (Assistant 1, Assistant 2) or None, quirk expected)
QUIRKS = [
    ("7 8", (7.0, 8.0), False),
    ("  \n6 7.5\nAssistant 1", (6.0, 7.5), False),  # stripped first, then the first line
    ("Assistant 1: 7", (1.0, 7.0), True),  # the name is read as a score: Assistant 2 gets 7
    ("8/10 9/10", (8.0, 10.0), True),  # "8/10" reads as 8 and 10
    ("7 8 9", (7.0, 8.0), True),
    ("12 3", (12.0, 3.0), True),  # out of 1-10, counted anyway
    ("7", None, False),  # one number: not counted
    ("Scores:", None, False),
    ("", None, False),
]


@pytest.mark.parametrize("reply,expected,quirk", QUIRKS)
def test_official_parse_quirks(reply, expected, quirk):
    p = parse_official(reply)
    assert p.scores == expected
    assert bool(p.quirk) == quirk


def test_official_number_over_a_run_with_quirky_replies(out_dir, chat_server):
    replies = {i: q[0] for i, q in enumerate(QUIRKS)}
    run = Run.parse(RUN)
    rows = [
        {
            "id": f"q{i}",
            "instruction": f"Explain item {i}.",
            "input": "",
            "answer": f"A{i}",
            "reference": f"R{i}",
        }
        for i in replies
    ]
    write_items(run, rows)
    srv = chat_server(planned(replies))
    s = judge.run_judge(RUN, "hw5_test", "greedy", base_url=srv.url, say=lambda *_: None)["scores"]
    want, counted = official_average(list(replies.values()))
    assert s["mean"] == pytest.approx(want) and s["n"] == counted == 6
    assert s["n_unparsed"] == 3 and s["n_quirks"] == 4
    assert s["quirks"]["assistant name read as a score"] == 1
    rows = {r["id"]: r for r in read_jsonl(run.judgments("hw5_test", "greedy"))}
    assert rows["q2"]["score_answer"] == 7.0 and rows["q2"]["quirk"]
    # the robust variant refuses what the official rule counts: never mixed under one protocol name
    srv = chat_server(planned(replies))
    r2 = judge.run_judge(
        RUN, "hw5_test", "greedy", protocol="hw5_pairwise", base_url=srv.url, say=lambda *_: None
    )["scores"]
    assert r2["protocol"] == "hw5_pairwise" and r2["n"] < counted
    assert srv.bodies[0]["max_tokens"] == 512


def test_auto_picks_official_on_hw5_sets_only(out_dir):
    run = Run.parse(RUN)
    rows = [{"id": "a", "instruction": "Explain item 0.", "input": "", "answer": "x", "reference": "y"}]
    for testset, proto in (
        ("hw5_test", "hw5_official"),
        ("hw5_dev", "hw5_official"),
        ("demo_eval", "hw5_pairwise"),
    ):
        write_items(run, rows, testset)
        res = judge.run_judge(
            RUN, testset, "greedy", dry_run=True, base_url="http://127.0.0.1:9/v1", say=print
        )
        assert res["estimate"]["calls"] == 1
        sp = json.loads(json.dumps(res))  # plain data
        assert sp["estimate"]["completion_tokens"] == load_protocol(proto).expected_completion_tokens


def test_hw5_prompts_rebuild_the_courses_question(shared_data):
    """Our loaders strip HW5's Alpaca preamble; the protocol puts it back: all 150 questions match the file."""
    from plugins.pools import loaders

    path = shared_data / "hw5" / "test_set_evol_instruct_150.json"
    raw = json.loads(path.read_text())
    rows = loaders.normalise_records(loaders.read_records(path), path, "prompt").rows
    proto = load_protocol("hw5_official")
    for row, rec in zip(rows, raw, strict=True):
        user = proto.messages(row["instruction"], "A", "R", "ab")[1]["content"]
        assert user.startswith(f"[Question]\n{rec['conversations'][0]['value']}\n\n[The Start of Assistant 1")


def test_references_recorded_and_replaced_by_id(out_dir, tmp_path, capsys, chat_server):
    run = Run.parse(RUN)
    rows = [
        {
            "id": f"q{i}",
            "instruction": f"Explain item {i}.",
            "input": "",
            "answer": f"A{i}",
            "reference": f"R{i}",
        }
        for i in range(3)
    ]
    write_items(run, rows)
    course = tmp_path / "evol_instruct_gt.json"  # the course's shape: FastChat conversations
    course.write_text(
        json.dumps(
            [
                {
                    "id": f"q{i}",
                    "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": f"GT{i}"}],
                }
                for i in range(3)
            ]
        )
    )
    srv = chat_server(planned({}))
    s = judge.run_judge(RUN, "hw5_test", "greedy", base_url=srv.url, say=lambda *_: None)["scores"]
    assert s["references"]["source"] == "predictions" and "Long-Is-More" in s["references"]["note"]
    res2 = judge.run_judge(
        RUN, "hw5_test", "greedy", base_url=srv.url, references=course, say=lambda *_: None
    )
    s2 = res2["scores"]
    assert s2["references"] == s2["references"] | {
        "source": "file",
        "path": str(course),
        "sha256": sha256_file(course),
    }
    assert s2["references"]["texts_sha256"] != s["references"]["texts_sha256"]
    assert all("GT" in b["messages"][1]["content"] for b in srv.bodies[3:])
    # an id the file lacks: exit 2, one message naming the file and the id, nothing written
    course.write_text(json.dumps([{"id": "q0", "instruction": "x", "output": "GT0"}]))
    before = run.scores("hw5_test", "greedy").read_text()
    rc = judge.main(["--run", RUN, "--testset", "hw5_test", "--references", str(course), "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and str(course) in err and "2 of the 3" in err and "q1" in err
    assert run.scores("hw5_test", "greedy").read_text() == before


def test_one_progress_bar_not_a_line_per_item(out_dir, capsys, chat_server):
    run = Run.parse(RUN)
    rows = [
        {"id": f"q{i}", "instruction": f"Explain item {i}.", "input": "", "answer": f"A{i}", "reference": "R"}
        for i in range(12)
    ]
    write_items(run, rows)
    srv = chat_server(planned({3: "oops"}))
    judge.run_judge(RUN, "hw5_test", "greedy", base_url=srv.url)
    cap = capsys.readouterr()
    assert "judged" not in cap.out and cap.out.count("\n") < 8  # a summary, no line per judgment
    final = cap.err.split("\r")[-1]
    assert "12/12" in final and "calls 12, cached 0, failed 0, spend $0.0006" in final


def test_compare_refuses_runs_judged_under_different_protocols(out_dir, capsys, chat_server):
    rows = [{"id": "q0", "instruction": "Explain item 0.", "input": "", "answer": "A", "reference": "R"}]
    other = "smollm2_135m/rank/r16"
    write_items(Run.parse(RUN), rows)
    write_items(Run.parse(other), rows)
    srv = chat_server(planned({}))
    judge.run_judge(RUN, "hw5_test", "greedy", base_url=srv.url, say=lambda *_: None)
    judge.run_judge(
        other, "hw5_test", "greedy", protocol="hw5_pairwise", base_url=srv.url, say=lambda *_: None
    )
    with pytest.raises(judge.JudgeError, match="hw5_official.*hw5_pairwise.*not comparable"):
        judge.compare_runs(RUN, other, "hw5_test", "greedy")
