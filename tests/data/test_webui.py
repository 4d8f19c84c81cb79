"""LLaMA-Factory's web UI sees our datasets: a real server, a real browser (Debian's chromium).

The web UI reads `<cwd>/data/dataset_info.json`. The test copies the repo's registry into a
temporary folder, builds the 100-row subset and its stages there with our data tool (so a user's
own `data/` is never touched), starts `llamafactory-cli webui` on a free loopback port, and drives
it with Playwright: our dataset names are offered in the Train tab, picking `alpaca_top100` and
previewing shows a row of our subset. A screenshot is left beside the test's files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tools.core.paths import DATA, ROOT, llamafactory_cli

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUR_DATASETS = ["alpaca_top100", "alpaca_top100_easy", "alpaca_top100_medium", "alpaca_top100_hard"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"web UI exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"web UI not up at {url} after {timeout} s")


@pytest.fixture()
def webui_home(tmp_path) -> Path:
    """A folder like the repo root: data/ with our registry and a freshly selected subset."""
    data = tmp_path / "data"
    shutil.copytree(DATA, data, ignore=shutil.ignore_patterns("generated"))
    proc = subprocess.run(
        [sys.executable, "-m", "tools.data", "--source", "demo", "--dataset-dir", str(data)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = json.loads((data / "dataset_info.json").read_text())
    assert all(name in info for name in OUR_DATASETS), sorted(info)
    return tmp_path


@pytest.mark.slow
def test_webui_lists_and_previews_our_datasets(webui_home, base_model, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")

    subset = json.loads(
        (
            webui_home
            / "data"
            / json.loads((webui_home / "data" / "dataset_info.json").read_text())["alpaca_top100"][
                "file_name"
            ]
        ).read_text()
    )
    first_instruction = subset[0]["instruction"]

    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port))
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    log = open(tmp_path / "webui.log", "w")
    proc = subprocess.Popen([*llamafactory_cli(), "webui"], cwd=webui_home, env=env, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_http(url, proc)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector("text=Preview dataset", timeout=90_000)
            # The embedded model is picked by path.
            model_path = page.get_by_label("Model path")
            model_path.fill(str(base_model))
            model_path.press("Enter")
            # Our datasets are offered in the Train tab's dataset box.
            page.get_by_label("Dataset", exact=True).first.click()
            page.wait_for_selector("ul[role=listbox] li", timeout=15_000)
            offered = [t.strip() for t in page.locator("ul[role=listbox] li").all_inner_texts()]
            for name in OUR_DATASETS:
                assert name in offered, offered
            page.locator("ul[role=listbox] li", has_text="alpaca_top100").first.click()
            page.keyboard.press("Escape")
            page.get_by_role("button", name="Preview dataset").click()
            # The preview shows a row of our subset (its first instruction, as JSON text).
            snippet = re.match(r"[\w ,.-]{1,40}", first_instruction).group(0)
            page.wait_for_function("s => document.body.innerText.includes(s)", arg=snippet, timeout=20_000)
            page.screenshot(path=str(tmp_path / "webui.png"))
            browser.close()
        assert (tmp_path / "webui.png").stat().st_size > 10_000
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
