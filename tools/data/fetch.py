"""Fetch HW5's files into the cache, each checked against the sha256 pinned in templates/sources/hw5.yaml.

Usage:
    python -m tools.data.fetch [--pool] [--cache DIR] [--base-url URL] [--offline] [--timeout S]
    make fetch-hw5 [ARGS="--pool"]

Downloads HW5's 150 official test prompts (the course's repository at a pinned commit), Long-Is-More's
Evol-Instruct 1k with its reference answers and its two Alpaca 1k files (the authors' repository at a
pinned commit), and with `--pool` HW5's 52k training pool from the Hugging Face hub (kciree/fastchat_alpaca_52k
at a pinned revision, through huggingface_hub and its cache), into one folder: $SMALLDATA_CACHE, else
~/.cache/smalldata-lora/hw5 (the user's cache folder). `make data SOURCE=hw5 DATA_ARGS="--eval hw5"` then
finds them there (tools/data/sources.py), online or not.

Each download goes to a temporary name beside its final one and is renamed only once its size and sha256
match the pin: a mismatch is refused with both hashes and nothing is kept, and a dropped connection leaves
nothing half-written. A file already in the cache with the right hash is not downloaded again. Offline
(HF_HUB_OFFLINE=1 or --offline) nothing is downloaded: cached files are used, missing ones are named.
The licence (CC BY-NC 4.0) is printed and written beside the files (LICENCE.md), with what came from where
(SOURCES.json).

`--base-url` (or $SMALLDATA_FETCH_BASE) replaces the scheme and host of every pinned URL: a mirror, or
the tests' server on 127.0.0.1. Exit status 0 when every file asked for is in the cache, 1 otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from filelib import atomic_write_json, atomic_write_text, run_main, sha256_file
from tools.core.args import command, opt
from tools.core.hub import hub_offline, hub_reachable
from tools.data.sources import LICENCE_FILE, RECORD, Pin, Pins, cache_root, pins, recorded

CHUNK = 1 << 16


class FetchError(RuntimeError):
    """A file that could not be fetched, or was refused: the message says which and why."""


def say(msg: str) -> None:
    print(f"fetch: {msg}", flush=True)


def with_base(url: str, base: str | None) -> str:
    """`url` with its scheme and host replaced by `base` (its path kept), or `url` when no base."""
    if not base:
        return url
    parts = urlsplit(url)
    return base.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


@contextlib.contextmanager
def _temp_beside(dest: Path):
    """A temporary file next to `dest`, removed unless the caller renamed it into place (with the folders
    made for it, when they are left empty)."""
    made = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, Path(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        for d in made:  # innermost first; one that is not empty stays
            with contextlib.suppress(OSError):
                d.rmdir()


def _check(pin: Pin, got_bytes: int, digest: str, what: str) -> None:
    if pin.bytes is not None and got_bytes != pin.bytes:
        raise FetchError(
            f"{pin.key}: {what} is {got_bytes} bytes, the pin says {pin.bytes} (sha256 {digest}, pinned "
            f"{pin.sha256 or 'none'}); refused, nothing kept"
        )
    if pin.sha256 and digest != pin.sha256:
        raise FetchError(
            f"{pin.key}: sha256 mismatch for {what}: expected {pin.sha256} (pinned in "
            f"templates/sources/hw5.yaml), got {digest}; refused, nothing kept"
        )


def download(pin: Pin, dest: Path, base: str | None = None, timeout: float = 60) -> str:
    """Download `pin` to `dest` through a temporary name; returns its sha256. Raises FetchError."""
    url = with_base(pin.url, base)
    h, n = hashlib.sha256(), 0
    with _temp_beside(dest) as (f, tmp):
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "smalldata-lora-fetch"})
            with urllib.request.urlopen(req, timeout=timeout) as r:
                length = r.headers.get("Content-Length")
                while chunk := r.read(CHUNK):
                    f.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
            if length is not None and n != int(length):
                raise FetchError(
                    f"{pin.key}: {url}: the connection closed after {n} of {length} bytes; nothing kept"
                )
        except FetchError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            why = getattr(e, "reason", None) or e  # refused, reset, cut short (IncompleteRead), 404, ...
            raise FetchError(f"{pin.key}: {url}: {type(e).__name__}: {why}; nothing kept") from None
        digest = h.hexdigest()
        _check(pin, n, digest, url)
        f.flush()
        os.fsync(f.fileno())
        os.replace(tmp, dest)
    return digest


def hub_file(pin: Pin, offline: bool) -> Path:
    """The pinned file of a hub dataset, from the Hugging Face cache or downloaded into it (huggingface_hub:
    HF_HOME / HF_HUB_CACHE, read now). Offline, only the cache is read."""
    from huggingface_hub import hf_hub_download

    hf_cache = os.environ.get("HF_HUB_CACHE") or (
        str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None
    )
    try:
        return Path(
            hf_hub_download(
                pin.repo_id,
                pin.filename,
                repo_type="dataset",
                revision=pin.revision,
                cache_dir=hf_cache,
                local_files_only=offline,
            )
        )
    except Exception as e:  # offline and not cached, no network, gone from the hub: one message
        how = "not in the Hugging Face cache and offline" if offline else "could not download it"
        raise FetchError(f"{pin.key}: {pin.where_from}: {how} ({type(e).__name__}: {str(e)[:200]})") from None


def pool_to_json(pin: Pin, parquet: Path, dest: Path) -> int:
    """The hub's parquet file as a JSON array of its rows at `dest` (atomic); returns the row count."""
    import json

    import pyarrow.parquet as pq

    rows = pq.read_table(parquet).to_pylist()
    if pin.rows is not None and len(rows) != pin.rows:
        raise FetchError(
            f"{pin.key}: {parquet} has {len(rows)} rows, the pin says {pin.rows}; refused, nothing kept"
        )
    atomic_write_text(dest, json.dumps(rows, ensure_ascii=False) + "\n")
    return len(rows)


def fetch_hub(pin: Pin, cache: Path, offline: bool) -> dict:
    # out of reach: only the Hugging Face cache is read, at once rather than after the client's retries
    parquet = hub_file(pin, offline or not hub_reachable())
    digest = sha256_file(parquet)
    _check(pin, parquet.stat().st_size, digest, str(parquet))
    if not pin.sha256:
        say(
            f"{pin.key}: its sha256 is not pinned in templates/sources/hw5.yaml; this file's is {digest} "
            f"({parquet.stat().st_size} bytes, as pinned); kept in {cache / RECORD}"
        )
    dest = cache / pin.path
    n = pool_to_json(pin, parquet, dest)
    return {"sha256": sha256_file(dest), "parquet_sha256": digest, "rows": n, "from": pin.where_from}


def licence_text(p: Pins, done: dict[str, dict]) -> str:
    lines = [
        "# Licence of the files in this folder",
        "",
        f"{p.licence} ({p.licence_url}). {p.licence_note}",
        "",
        "| file | origin | from | sha256 | licence |",
        "|---|---|---|---|---|",
    ]
    for key, entry in done.items():
        pin = p.files[key]
        lines.append(f"| {pin.path} | {pin.origin} | {pin.where_from} | {entry['sha256']} | {pin.licence} |")
    return "\n".join(lines) + "\n"


def fetch(
    pool: bool = False,
    cache: Path | None = None,
    base: str | None = None,
    offline: bool | None = None,
    timeout: float = 60,
    p: Pins | None = None,
) -> tuple[dict[str, dict], dict[str, str]]:
    """({key: record} of the files now in the cache, {key: why not} of those that are not)."""
    p = p or pins()
    cache = Path(cache) if cache is not None else cache_root()
    offline = hub_offline() if offline is None else offline
    rec = recorded(cache)
    done: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for key, pin in p.files.items():
        if pin.hub and not pool:
            continue
        dest = cache / pin.path
        expect = pin.sha256 or rec.get(key, {}).get("sha256")
        if dest.is_file() and expect and sha256_file(dest) == expect:
            done[key] = rec.get(key) or {"sha256": expect, "from": pin.where_from}
            say(f"{pin.path}: in the cache, sha256 {expect[:12]} checked")
            continue
        if offline and not pin.hub:
            failed[key] = (
                f"{pin.path}: not in the cache, and offline (HF_HUB_OFFLINE or --offline): not downloaded"
            )
            continue
        t0 = time.time()
        try:
            if pin.hub:
                done[key] = fetch_hub(pin, cache, offline)
            else:
                done[key] = {"sha256": download(pin, dest, base, timeout), "from": with_base(pin.url, base)}
        except FetchError as e:
            failed[key] = str(e)
            continue
        say(f"{pin.path}: fetched in {time.time() - t0:.1f} s, sha256 {done[key]['sha256'][:12]} checked")
    if done:
        atomic_write_json(cache / RECORD, {"files": {**rec, **done}, "licence": p.licence})
        atomic_write_text(
            cache / LICENCE_FILE, licence_text(p, {**{k: v for k, v in rec.items() if k in p.files}, **done})
        )
    return done, failed


@dataclass
class FetchArgs:
    pool: bool = opt(False, help="also HW5's 52k pool from the Hugging Face hub")
    cache: Path | None = opt(None, help="the folder to fill (default $SMALLDATA_CACHE or the user's cache)")
    base_url: str | None = opt(None, help="a mirror's base URL", env="SMALLDATA_FETCH_BASE")
    offline: bool | None = opt(None, help="download nothing (as HF_HUB_OFFLINE=1)")
    timeout: float = opt(60.0, help="seconds a connection may stall", positive=True)


@command(FetchArgs, __doc__)
def main(a: FetchArgs) -> int:
    cache = a.cache or cache_root()
    p = pins()
    done, failed = fetch(a.pool, cache, a.base_url, a.offline, a.timeout, p)
    for why in failed.values():
        print(f"fetch: error: {why}", file=sys.stderr)
    say(f"{len(done)} file(s) in {cache}" + (f", {len(failed)} missing" if failed else ""))
    written = f" Written to {cache / LICENCE_FILE}." if (cache / LICENCE_FILE).exists() else ""
    say(f"licence: {p.licence} ({p.licence_url}): {p.licence_note}{written}")
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main)
