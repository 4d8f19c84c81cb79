"""The cheap documented commands, run exactly as the README and docs/ write them: the strings below are the
ones tests/docs/test_documented_commands.py looks for. Each runs through bash from the repo root with the
venv activated; outputs go to a private root and datasets to a copy of data/, so the repository's own
folders stay untouched (the registry's bytes are compared before and after)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import time
import urllib.request

import pytest

from tools.core.paths import DATA, ROOT


def registry_hash() -> str:
    return hashlib.sha256((DATA / "dataset_info.json").read_bytes()).hexdigest()


@pytest.fixture()
def private(tmp_path) -> dict[str, str]:
    """SMALLDATA_OUT and SMALLDATA_DATA for a command: a private output root and a copy of data/."""
    data = tmp_path / "data"
    shutil.copytree(DATA, data, ignore=shutil.ignore_patterns("generated"))
    return {"SMALLDATA_OUT": str(tmp_path / "out"), "SMALLDATA_DATA": str(data)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_help_is_the_map_of_every_target(documented):
    p = documented("make help", timeout=60)
    assert p.returncode == 0, p.stderr
    described = re.findall(r"^([a-zA-Z0-9_-]+):.*## ", (ROOT / "Makefile").read_text(), re.M)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", p.stdout)
    assert {"demo", "test", "docs", "docs-serve"} <= set(described)
    assert all(re.search(rf"^\s+{re.escape(t)}\s", shown, re.M) for t in described), shown


def test_a_coding_prompt_is_classified_as_coding(documented):
    p = documented('python -m tools.eval.policy --classify "Write a Python function that sorts a list"')
    assert p.returncode == 0 and p.stdout.strip() == "coding", p.stdout + p.stderr


def test_the_launcher_lists_the_adapter_types_it_trains(documented):
    p = documented("python -m plugins.launchers --types")
    assert p.returncode == 0, p.stderr
    assert {line.split()[0] for line in p.stdout.splitlines() if line.strip()} >= {
        "adalora",
        "vera",
        "loha",
        "lokr",
    }


def test_the_pinned_hub_has_the_hf_commands_the_docs_use(documented):
    """`hf auth login` and `hf download` (the pinned huggingface_hub ships no working `huggingface-cli`)."""
    for command in ("hf auth login --help", "hf download --help"):
        p = documented(command, timeout=60, HF_HUB_OFFLINE="1")
        assert p.returncode == 0 and "Usage: hf" in p.stdout, command + p.stdout + p.stderr


@pytest.mark.slow
def test_preflight_refuses_or_passes_before_anything_is_spent(documented, private):
    p = documented("python -m tools.flows.preflight --study rank --model llama2_7b", **private)
    out = p.stdout + p.stderr
    assert p.returncode in (0, 2), out
    if p.returncode == 2:  # no GPU, or the gated model out of reach: refused, naming each failed check
        assert "preflight FAIL" in out and "preflight: refused" in out, out
    assert not os.path.exists(private["SMALLDATA_OUT"]), "preflight wrote something"


@pytest.mark.slow
def test_zeroshot_task_names_are_checked_against_lm_eval(documented):
    p = documented("python -m tools.eval.zeroshot --check python_mc arc_easy")
    assert p.returncode == 0 and "python_mc" in p.stdout, p.stdout + p.stderr


@pytest.mark.slow
def test_the_committed_configs_are_fresh(documented, current_setup):
    p = documented("make configs-check")
    assert p.returncode == 0 and "up to date" in p.stdout, p.stdout + p.stderr


@pytest.mark.slow
def test_a_quota_from_the_command_line_is_registered(documented, private):
    before = registry_hash()
    p = documented(
        "python -m tools.data --source demo --n 10 --strategy 'quota:60*length_window,20*complexity,20*diversity' --name my10",
        **private,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    info = json.loads((ROOT / private["SMALLDATA_DATA"] / "dataset_info.json").read_text())
    assert "my10" in info and "my10_easy" in info
    assert registry_hash() == before


@pytest.mark.slow
def test_the_refine_pages_commands_run_in_order(documented, current_setup, private):
    """`make data`, then the dry run of `make refine` (no call, no key needed) and `make mix`."""
    before = registry_hash()
    env = {**private, "OPENAI_API_KEY": ""}
    p = documented("make data", **env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    p = documented("make refine DATASET=alpaca_top100 ARGS=--dry-run", **env)
    assert p.returncode == 0 and "100 calls" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    p = documented('make mix DATASET=alpaca_top100 ARGS="--general demo --share 0.03"', **env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    info = json.loads((ROOT / private["SMALLDATA_DATA"] / "dataset_info.json").read_text())
    assert {"alpaca_top100", "alpaca_top100_mix", "alpaca_top100_mix_general_heldout"} <= set(info)
    assert "alpaca_top100_refined" not in info  # a dry run registers nothing
    assert registry_hash() == before


@pytest.mark.slow
def test_make_docs_builds_the_site(documented, current_setup, tmp_path):
    p = documented("make docs", SITE_DIR=str(tmp_path / "site"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "--strict" in p.stdout and (tmp_path / "site" / "index.html").exists()


@pytest.mark.slow
def test_make_docs_serve_serves_the_site_on_loopback(started, current_setup, tmp_path):
    assert re.search(r"^DOCS_ADDR \?= 127\.0\.0\.1:", (ROOT / "Makefile").read_text(), re.M)
    port = free_port()
    log = tmp_path / "serve.log"
    proc = started("make docs-serve", log, DOCS_ADDR=f"127.0.0.1:{port}")
    body, deadline = None, time.time() + 180
    while body is None and time.time() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
        except OSError:
            time.sleep(0.5)
    assert body is not None, log.read_text()[-3000:]
    assert "<title>smalldata-lora</title>" in body
