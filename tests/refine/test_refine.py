"""Refinement through a real OpenAI-compatible server (`llamafactory-cli api` on the tiny model): a dry
run that calls nothing, a cost limit, a kill and a resume with nothing lost or paid twice, the new
dataset registered with its provenance; prompts are data and bad ones are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from filelib import read_jsonl
from plugins.publishing import load_info, resolve
from tests.judge.test_judge_server import Faults
from tools.core.paths import ROOT
from tools.refine.prompts import REFINE_TEMPLATES, RefineError, load_prompt
from tools.refine.refine import cache_file, main, refine


def write_set(tmp_path, cases: dict[str, int]) -> list[str]:
    rows, n = [], 0
    for case, k in cases.items():
        for _ in range(k):
            rows.append(
                {
                    "id": f"{case}-{n}",
                    "instruction": f"[case:{case}#{n}] Name a prime number.",
                    "input": "",
                    "output": f"{n % 7 + 2} is prime.",
                }
            )
            n += 1
    (tmp_path / "small.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"small": {"file_name": "small.json"}}))
    return [r["id"] for r in rows]


@pytest.fixture()
def short_prompt(tmp_path) -> str:
    """The detail prompt with few answer tokens, so the tiny model's gibberish is quick."""
    d = yaml.safe_load((REFINE_TEMPLATES / "detail.yaml").read_text())
    d.update(max_tokens=12)
    path = tmp_path / "detail_short.yaml"
    path.write_text(yaml.safe_dump(d))
    return str(path)


def test_prompts_are_data_and_replies_are_checked(tmp_path):
    p = load_prompt("detail")
    row = {"id": "1", "instruction": "Add 2 and 3.", "input": "", "output": "5"}
    msgs = p.messages(row)
    assert (
        msgs[0]["role"] == "system" and "Add 2 and 3." in msgs[1]["content"] and "\n5" in msgs[1]["content"]
    )
    assert p.apply(row, "  The sum is 5.  ")["output"] == "The sum is 5."
    assert p.apply(row, "   ") is None
    e = load_prompt("evolve")
    evolved = e.apply(row, "### Instruction:\nAdd 2 and 3, then square it.\n### Answer:\n25")
    assert evolved["instruction"] == "Add 2 and 3, then square it." and evolved["output"] == "25"
    assert e.apply(row, "Sure! 25") is None  # no headings: not usable
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({**yaml.safe_load((REFINE_TEMPLATES / "detail.yaml").read_text()), "user": "{answer}"})
    )
    with pytest.raises(RefineError, match="unknown placeholder"):
        load_prompt(str(bad))


@pytest.mark.slow
def test_dry_run_cost_limit_kill_resume_and_publish(
    tmp_path, out_dir, tiny_api, chat_server, short_prompt, capsys
):
    ids = write_set(tmp_path, {"ok": 3, "slow": 3})
    common = ["--dataset", "small", "--prompt", short_prompt, "--dataset-dir", str(tmp_path)]

    # a dry run against OpenAI's price: the calls and the dollars, no call, nothing written
    assert main([*common, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 calls" in out and "gpt-4o-mini" in out and "$0.00" in out
    assert not cache_file("gpt-4o-mini").exists() and "small_refined" not in load_info(tmp_path)
    # a limit below the estimate is refused, naming the amount that would do
    assert main([*common, "--max-cost", "0.000001"]) == 2
    err = capsys.readouterr().err
    assert "above --max-cost" in err and "--max-cost 0.01" in err

    proxy = Faults().start(chat_server, tiny_api)
    url = proxy.url
    cmd = [sys.executable, "-m", "tools.refine", *common, "--base-url", url, "--model", "tiny"]
    env = {**os.environ, "SMALLDATA_OUT": str(out_dir)}
    env.pop("OPENAI_API_KEY", None)
    cache = cache_file("tiny@" + url.split("/")[2])
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while len(list(read_jsonl(cache))) < 3:  # the quick ones landed; the slow ones wait
            assert time.time() < deadline and child.poll() is None
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert "small_refined" not in load_info(tmp_path)  # published only when complete
    with open(cache, "a") as f:
        f.write('{"key": "torn')  # as if killed mid-write

    proxy.release.set()
    res = refine("small", short_prompt, "tiny", url, dataset_dir=tmp_path, say=lambda *a: None)
    assert res["calls"] == 3 and res["rows"] == 6  # only the 3 unfinished rows were called again
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 6
    rows = json.loads(resolve("small_refined", tmp_path).read_text())
    assert [r["refined_from"] for r in rows] == ids and all(r["output"].strip() for r in rows)
    man = json.loads((tmp_path / "generated" / "small_refined" / "small_refined.manifest.json").read_text())
    assert man["from"] == "small" and man["prompt"]["name"] == "detail" and man["model"].startswith("tiny@")
    assert (
        [p["id"] for p in man["rows_provenance"]] == ids and man["billed"] is False and man["cost_usd"] == 0
    )

    # everything cached now: a re-run against the same endpoint (still serving) makes no call
    asked = len(proxy.server.bodies)
    again = refine("small", short_prompt, "tiny", url, dataset_dir=tmp_path, say=lambda *a: None)
    assert again["calls"] == 0 and len(proxy.server.bodies) == asked


def test_bad_input_exits_2_and_writes_nothing(tmp_path, out_dir, capsys):
    write_set(tmp_path, {"ok": 2})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for args, message in (
        (["--dataset", "nope"], "'nope' is not registered"),
        (["--dataset", "small", "--prompt", "shorter"], "no rewrite prompt 'shorter'"),
        (["--dataset", "small", "--name", "../x"], "--name '../x'"),
        (["--dataset", "small", "--model", "no-such-model"], "no price for model 'no-such-model'"),
    ):
        assert main([*args, "--dataset-dir", str(tmp_path)]) == 2, args
        assert message in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not (out_dir / "cache" / "refine").exists()


def test_the_make_targets_run_the_tools(tmp_path, out_dir):
    """`make refine` and `make mix` as docs/guides/refine-mix.md shows them (on a small registered set)."""
    write_set(tmp_path, {"ok": 4})
    env = {**os.environ, "SMALLDATA_OUT": str(out_dir)}
    r = subprocess.run(
        ["make", "-s", "refine", "DATASET=small", f"ARGS=--dry-run --dataset-dir {tmp_path}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and "4 calls" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(
        ["make", "-s", "mix", "DATASET=small", f"ARGS=--general demo --share 0.2 --dataset-dir {tmp_path}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and "small_mix (5 rows, 1 general)" in r.stdout, r.stdout + r.stderr
