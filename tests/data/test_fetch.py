"""`make fetch-hw5` (tools.data.fetch) without the internet: a real HTTP server on 127.0.0.1 serves copies of
the upstream files (from the folder the `shared_data` fixture finds), at the pinned URLs' paths, with the base
URL pointed at it. A good copy is fetched and hash-checked; a corrupted copy is refused with both hashes and
nothing is kept; a server that drops the connection half way leaves nothing half-written; offline, or with no
server at all, cached files are used and nothing is requested. Then, as a user would on a fresh clone:
`make fetch-hw5` followed by `make data SOURCE=hw5 DATA_ARGS="--eval hw5"` with no ../shared to fall back on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tools.core.paths import ROOT
from tools.data.fetch import LICENCE_FILE, RECORD, main
from tools.data.sources import load_pins

PINS = load_pins()
FILES = {k: p for k, p in PINS.files.items() if not p.hub}  # the four files served over HTTP


class Server:
    """Serves {url path: bytes}; `mode` "ok", "corrupt" (one byte flipped, same length) or "drop" (the full
    Content-Length announced, half the bytes sent, the connection closed). Counts the requests."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.mode, self.requests = files, "ok", []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                if outer.mode == "corrupt":
                    body = body[:100] + bytes([body[100] ^ 1]) + body[101:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.mode == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server(shared_data):
    files = {urlsplit(p.url).path: (shared_data / p.path).read_bytes() for p in FILES.values()}
    s = Server(files)
    yield s
    s.close()


@pytest.fixture()
def offline_env(monkeypatch):
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "SMALLDATA_FETCH_BASE"):
        monkeypatch.delenv(v, raising=False)


def leftovers(cache: Path) -> list[str]:
    """Every file and folder under the cache (none at all when it was never made)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))


def test_fetches_every_pinned_file_hash_checked_with_the_licence(server, tmp_path, offline_env, capsys):
    cache = tmp_path / "cache"
    assert main(["--cache", str(cache), "--base-url", server.url]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    for pin in FILES.values():
        assert (cache / pin.path).read_bytes() == server.files[urlsplit(pin.url).path]
        assert f"{pin.path}: fetched" in out
    assert "licence: CC BY-NC 4.0 (https://creativecommons.org/licenses/by-nc/4.0/)" in out
    licence = (cache / LICENCE_FILE).read_text()
    assert "CC BY-NC 4.0" in licence and all(p.sha256 in licence for p in FILES.values())
    record = json.loads((cache / RECORD).read_text())["files"]
    assert {k: v["sha256"] for k, v in record.items()} == {k: p.sha256 for k, p in FILES.items()}
    files = [*(p.path for p in FILES.values()), LICENCE_FILE, RECORD]
    assert [f for f in leftovers(cache) if (cache / f).is_file()] == sorted(files)
    # a second fetch finds them in the cache and asks the server for nothing
    n = len(server.requests)
    assert main(["--cache", str(cache), "--base-url", server.url]) == 0
    assert len(server.requests) == n and "in the cache, sha256" in capsys.readouterr().out


def test_a_corrupted_copy_is_refused_with_both_hashes_and_nothing_kept(server, tmp_path, offline_env, capsys):
    server.mode = "corrupt"
    cache = tmp_path / "cache"
    assert main(["--cache", str(cache), "--base-url", server.url]) == 1
    err = capsys.readouterr().err
    for pin in FILES.values():
        line = next(x for x in err.splitlines() if f"error: {pin.key}:" in x)
        assert "sha256 mismatch" in line and f"expected {pin.sha256}" in line and "nothing kept" in line
        got = line.split("got ")[1].split(";")[0]
        assert len(got) == 64 and got != pin.sha256
    assert leftovers(cache) == [] and not cache.exists()  # no final file, no temporary one, no folder


def test_a_dropped_connection_leaves_nothing_half_written(server, tmp_path, offline_env, capsys):
    server.mode = "drop"
    cache = tmp_path / "cache"
    assert main(["--cache", str(cache), "--base-url", server.url, "--timeout", "10"]) == 1
    err = capsys.readouterr().err
    assert err.count("nothing kept") == len(FILES), err
    assert leftovers(cache) == []
    # the same files from a server that behaves: fetched, and only they are there
    server.mode = "ok"
    assert main(["--cache", str(cache), "--base-url", server.url]) == 0
    assert len([f for f in leftovers(cache) if (cache / f).is_file()]) == len(FILES) + 2


def test_offline_uses_the_cache_and_requests_nothing(server, tmp_path, offline_env, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # nothing cached: nothing attempted, each missing file named
    assert main(["--cache", str(cache), "--base-url", server.url]) == 1
    assert server.requests == [] and "offline (HF_HUB_OFFLINE" in capsys.readouterr().err
    assert leftovers(cache) == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert main(["--cache", str(cache), "--base-url", server.url]) == 0
    n = len(server.requests)
    # cached: offline, or with no server listening at all, it succeeds without a request
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["--cache", str(cache), "--base-url", server.url]) == 0
    monkeypatch.delenv("HF_HUB_OFFLINE")
    server.close()
    assert main(["--cache", str(cache), "--base-url", server.url, "--timeout", "2"]) == 0
    assert len(server.requests) == n


def test_no_network_names_the_file_and_keeps_nothing(tmp_path, offline_env, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = tmp_path / "cache"
    assert main(["--cache", str(cache), "--base-url", f"http://127.0.0.1:{port}", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert all(f"error: {k}:" in err for k in FILES) and "nothing kept" in err
    assert leftovers(cache) == []


def make(args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-o", "setup", *args],
        cwd=ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_make_fetch_hw5_then_make_data_hw5_without_any_shared_folder(server, tmp_path, offline_env):
    env = {
        "SMALLDATA_CACHE": str(tmp_path / "cache"),
        "SMALLDATA_SHARED": "",  # no ../shared/data fallback: only what the fetch put in the cache
        "SMALLDATA_HW5_DIR": "",
        "SMALLDATA_OUT": str(tmp_path / "out"),
        "SMALLDATA_FETCH_BASE": server.url,
    }
    ddir = tmp_path / "data"
    data = ["data", "SOURCE=hw5", f"DATA_ARGS=--eval hw5 --dataset-dir {ddir} --no-plot"]
    before = make(data, env)  # a fresh clone: the message names the command that fetches the files
    assert before.returncode == 2 and "make fetch-hw5" in before.stderr, before.stdout + before.stderr
    p = make(["fetch-hw5"], env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "licence: CC BY-NC 4.0" in p.stdout
    p = make(data, env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "load: hw5: 1972 rows, 28 duplicates dropped" in p.stdout
    assert "hw5_test: 150 prompts, 150 with a reference joined by id, 0 without" in p.stdout
    m = json.loads((ddir / "generated/alpaca_top100/alpaca_top100.manifest.json").read_text())
    assert {f["found_in"] for f in m["source"]["files"]} == {"the cache"}
    assert all(f["path"].startswith(str(tmp_path / "cache")) for f in m["source"]["files"])
