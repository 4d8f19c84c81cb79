"""The first judge keyed by its full endpoint, as the second is (issue 30), and the caches written under the
older `model@host:port` label: read as this judge's own on the default path /v1 only; on another path
not used, and the run says so, rather than answering one endpoint's prompts with another's judgments."""

from __future__ import annotations

import json

from filelib import read_jsonl
from tests.judge import test_judge_refuse as refuse
from tools.core.paths import Run
from tools.judge import cli as judge
from tools.judge.cache import cache_path, endpoint_label, endpoint_path, legacy_label
from tools.judge.run import api_spec, endpoint_spec

N = 4


def write_predictions(run: Run) -> None:
    refuse.write_predictions(run, N)


def args(run: Run, url: str) -> list[str]:
    return ["--run", run.name, "--testset", "demo_eval", "--base-url", url, "--model", "judge"]


def scores(run: Run) -> dict:
    return json.loads(run.scores("demo_eval", "greedy").read_text())


def test_the_labels():
    url = "http://127.0.0.1:8000/v1/"
    assert endpoint_spec("m", url).judge_model == endpoint_label("m", url) == "m@http://127.0.0.1:8000/v1"
    assert legacy_label("m", url) == api_spec("m", url).judge_model == "m@127.0.0.1:8000"
    assert endpoint_spec("m", url).legacy_label == "m@127.0.0.1:8000" and endpoint_path(url) == "/v1"
    assert endpoint_path("http://h:1//second//v1/") == "/second/v1"
    # OpenAI's own endpoint: the bare model name, as it always was; nothing to read elsewhere
    assert endpoint_spec("gpt-4o-mini", None).judge_model == "gpt-4o-mini"
    assert endpoint_spec("gpt-4o-mini", "https://api.openai.com/v1").legacy_label is None


def test_the_first_judge_is_cached_under_its_full_endpoint(out_dir, chat_server):
    srv = chat_server(lambda call: "5 8")
    run = Run("tiny", "label", "first")
    write_predictions(run)
    assert judge.main(args(run, srv.url)) == 0
    label = endpoint_label("judge", srv.url)
    assert scores(run)["judge_model"] == label and label.endswith("/v1")
    assert [p.name for p in (out_dir / "cache" / "judge").iterdir()] == [cache_path(label).name]
    assert {r["judge_model"] for r in read_jsonl(cache_path(label))} == {label}
    # the same model on another path of the same host is another judge: called, not read from that cache
    other = Run("tiny", "label", "other")
    write_predictions(other)
    assert judge.main(args(other, srv.url.replace("/v1", "/other/v1"))) == 0
    assert len(srv.bodies) == 2 * N and scores(other)["judge_model"].endswith("/other/v1")


def old_version_judged(run: Run, url: str, monkeypatch) -> None:
    """Judge as the code before this change did: labelled and cached by `model@host:port`."""
    with monkeypatch.context() as m:
        m.setattr(judge, "endpoint_spec", api_spec)
        assert judge.main(args(run, url)) == 0


def test_an_old_label_cache_is_read_on_the_default_path(out_dir, chat_server, monkeypatch, capsys):
    srv = chat_server(lambda call: "5 8")
    run = Run("tiny", "label", "legacy")
    write_predictions(run)
    old_version_judged(run, srv.url, monkeypatch)
    old = cache_path(legacy_label("judge", srv.url))
    before = old.read_bytes()
    assert len(srv.bodies) == N and len(before.splitlines()) == N
    capsys.readouterr()

    assert judge.main(args(run, srv.url)) == 0
    said = capsys.readouterr().out
    assert len(srv.bodies) == N  # nothing judged (or paid for) twice
    assert f"{N} judgment(s) read from {old}" in said
    label = endpoint_label("judge", srv.url)
    rows = list(read_jsonl(cache_path(label)))
    assert len(rows) == N and {(r["judge_model"], r["legacy_label"]) for r in rows} == {
        (label, legacy_label("judge", srv.url))
    }
    s = scores(run)
    assert s["judge_model"] == label and s["mean"] == 8.0 and s["n"] == N and s["calls_this_run"] == 0
    assert old.read_bytes() == before  # the old file is only read
    # a second run reads the new cache alone
    assert judge.main(args(run, srv.url)) == 0 and len(srv.bodies) == N
    assert "read from" not in capsys.readouterr().out


def test_an_old_label_cache_is_not_used_on_another_path_and_says_so(
    out_dir, chat_server, monkeypatch, capsys
):
    """The old label `judge@127.0.0.1:port` was written for /v1; a judge on /other/v1 of the same host had the
    same old label, so the old cache cannot say which one judged: the new judge is called."""
    srv = chat_server(lambda call: "5 8" if call.request.path.startswith("/v1/") else "5 3")
    run = Run("tiny", "label", "paths")
    write_predictions(run)
    old_version_judged(run, srv.url, monkeypatch)
    capsys.readouterr()
    other = srv.url.replace("/v1", "/other/v1")
    assert judge.main(args(run, other)) == 0
    said = capsys.readouterr().out
    assert len(srv.bodies) == 2 * N  # called on its own path
    assert f"not reusing {cache_path(legacy_label('judge', other))}" in said and "did not record" in said
    assert scores(run)["mean"] == 3.0 and scores(run)["judge_model"] == endpoint_label("judge", other)
