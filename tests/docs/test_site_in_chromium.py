"""Every page of the built site in headless Chromium (Debian's, driven through Playwright as the report and
web UI tests drive it), served from a loopback server: a title and a heading, the navigation with every
page, no broken internal link or anchor, no request leaving the machine and no script error."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest
import yaml

from tools.core.paths import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = pytest.mark.slow


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def served(built_site):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(built_site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def page_urls(base: str) -> list[str]:
    def files(nav):
        for item in nav:
            for value in item.values() if isinstance(item, dict) else [item]:
                yield from files(value) if isinstance(value, list) else [value]

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    return [base + ("" if f == "index.md" else f.removesuffix(".md") + "/") for f in files(nav)]


def target_file(site: Path, base: str, url: str) -> Path:
    path = unquote(urlparse(url).path).removeprefix(urlparse(base).path)
    return site / path / "index.html" if path == "" or path.endswith("/") else site / path


def test_every_page_renders_with_navigation_and_working_links(built_site, served, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (make browser installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    urls = page_urls(served)
    seen: dict[str, dict] = {}
    outside, errors = [], []
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            context.on(
                "request",
                lambda r: outside.append(r.url) if not r.url.startswith((served, "data:", "blob:")) else None,
            )
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
            page.on(
                "console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None
            )
            for url in urls:
                response = page.goto(url, wait_until="load")
                assert response is not None and response.status == 200, url
                seen[url] = {
                    "title": page.title(),
                    "h1": page.inner_text("article h1"),
                    "nav": page.eval_on_selector_all(
                        "nav.md-nav--primary a.md-nav__link[href]", "els => els.map(e => e.href)"
                    ),
                    "links": page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"),
                    "ids": set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)")),
                }
                if url in (served, served + "benchmarks/"):
                    shot = tmp_path / f"{urlparse(url).path.strip('/') or 'index'}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    assert shot.stat().st_size > 20_000, shot
        finally:
            context.close()

    problems = []
    for url, got in seen.items():
        if "smalldata-lora" not in got["title"] or not got["h1"].strip():
            problems.append(f"{url}: title {got['title']!r}, heading {got['h1']!r}")
        missing_nav = set(urls) - {urldefrag(h)[0] for h in got["nav"]}
        if missing_nav:
            problems.append(f"{url}: the navigation lacks {sorted(missing_nav)}")
        for link in got["links"]:
            if not link.startswith(served):
                continue
            target, anchor = urldefrag(link)
            if not target_file(built_site, served, target).is_file():
                problems.append(f"{url}: broken link {link}")
            elif anchor and target in seen and unquote(anchor) not in seen[target]["ids"]:
                problems.append(f"{url}: link {link} names no anchor of that page")
    assert len(seen) == len(urls) and not problems, "\n".join(problems)
    assert not outside, f"requests that left the machine: {sorted(set(outside))}"
    assert not errors, "\n".join(errors)
