"""The judgment cache: append-only JSONL, one line per finished judgment, keyed by its inputs.

Key = sha256(judge label, protocol name and version, order, question, reference, answer), so a
re-run of the same judgments makes no call, and an answer judged once is never judged (or paid
for) again, whichever run it came from. Only finished judgments (scored or unparsed) are cached;
failed calls are not, so the next run retries them. A killed writer can leave a torn last line:
it is cut off before the next append, so the file stays valid JSONL and nothing is counted twice.

The judge label of an endpoint (`endpoint_label`) is its model at its full endpoint - scheme, host,
port and path - so two endpoints never share a judgment; OpenAI's own endpoint keeps the bare model
name its caches were always keyed by. Caches written under the older label `model@host:port`
(`legacy_label`: no scheme, no path) are read for an endpoint on the default path /v1 only, their
judgments copied under the new label (`legacy_judgments`); on any other path the old label cannot say
which path judged them, so they are not used, and the run says so.

Every judgment is re-checked when the cache is read (`check_judgment`): `parsed` a true boolean, a
parsed row carrying its scores and an unparsed one none, and the score re-parsed from the stored
reply with its protocol's own parser and range. A row that disagrees is refused with its file and
line (the command exits 2), never averaged. A row whose protocol is neither loaded nor in
templates/judge is checked when it is looked up (only a run that loaded its protocol can ask).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse, urlsplit

from filelib import append_jsonl, read_jsonl, sha256_text
from tools.core.paths import cache_dir
from tools.judge.cost import OPENAI_HOSTS
from tools.judge.parse import HI, LO, answer_score, parse
from tools.judge.protocol import Protocol, find_protocol

JUDGE_DIR = "judge"  # cache/judge/: every row of a file there is a judgment, and is checked as one
CACHE_FIX = "the cache is damaged; delete that line (it will be judged again) or the file"
RUN_FIX = "the run's judgments are damaged; re-run tools.judge on it (cached judgments cost nothing)"
_PORTS = {"http": 80, "https": 443}


def endpoint_label(model: str, base_url: str | None) -> str:
    """Who judges, as the cache knows it: `model@scheme://host:port/path` (the default port written out,
    the path without its trailing slash), so a judge on another path, port or scheme of the same host
    is a judge of its own. OpenAI's endpoint (no URL, or https://api.openai.com/v1) is the bare model."""
    if not base_url:
        return model
    u = urlsplit(base_url.strip())
    scheme, host = (u.scheme or "http").lower(), (u.hostname or "").lower()
    try:
        port = u.port or _PORTS.get(scheme)
    except ValueError as e:
        raise ValueError(f"endpoint {base_url!r}: {e}") from None
    path = re.sub(r"/{2,}", "/", u.path).rstrip("/")
    if scheme == "https" and host in OPENAI_HOSTS and port == 443 and path in ("", "/v1") and not u.query:
        return model
    host = f"[{host}]" if ":" in host else host
    return f"{model}@{scheme}://{host}:{port}{path}" + (f"?{u.query}" if u.query else "")


LEGACY_PATH = "/v1"  # the only path an old `model@host:port` label is read as


def endpoint_path(base_url: str | None) -> str:
    """The endpoint's path as `endpoint_label` writes it (no trailing slash, no doubled slashes)."""
    return re.sub(r"/{2,}", "/", urlsplit((base_url or "").strip()).path).rstrip("/")


def legacy_label(model: str, base_url: str | None) -> str | None:
    """The label this endpoint's judgments were cached under before `endpoint_label`: `model@host:port`
    as the URL wrote them (no scheme, no path); None where it was the bare model (OpenAI's host)."""
    if not base_url:
        return None
    netloc = urlparse(base_url).netloc
    return None if netloc in OPENAI_HOSTS else f"{model}@{netloc}"


def judgment_key(
    judge_model: str,
    protocol: str,
    version: int,
    order: str,
    question: str,
    reference: str | None,
    answer: str,
) -> str:
    return sha256_text(judge_model, protocol, str(version), order, question, reference or "", answer)


def cache_path(judge_model: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", judge_model).strip("_") or "judge"
    return cache_dir() / "judge" / f"{slug}.jsonl"


def _cut_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = f.seek(0) or f.read()
        f.truncate(data.rfind(b"\n") + 1)


def check_row(row: object, path: Path, line: int) -> dict:
    """A cached judgment as written by this tool; anything else is a damaged cache, refused by line
    (a score outside 1-10 must never be averaged in, unless the official parser counted and flagged it)."""
    where = f"{path}: line {line}"
    if not isinstance(row, dict):
        raise ValueError(f"{where}: not a judgment (a JSON {type(row).__name__}, not an object)")
    if not isinstance(row.get("key"), str) or not row["key"]:
        raise ValueError(f"{where}: not a judgment (field 'key' missing or not a string)")
    for f in ("score_answer", "score_reference"):
        x = row.get(f)
        if x is None:
            continue
        if isinstance(x, bool) or not isinstance(x, int | float) or x != x:
            raise ValueError(f"{where}: field {f!r} = {x!r} is not a number: the cache is damaged")
        # HW5's official parser counts an out-of-range number on purpose and flags it (`quirk`)
        if not LO <= x <= HI and not (isinstance(row.get("quirk"), str) and row["quirk"]):
            raise ValueError(
                f"{where}: field {f!r} = {x!r} is outside the protocol's range {LO:g}-{HI:g}: the cache is "
                "damaged; delete that line (it will be judged again) or the file"
            )
    if not isinstance(row.get("usage", {}), dict):
        raise ValueError(f"{where}: field 'usage' must be an object")
    return row


def _score(x) -> str:
    return "none" if x is None else f"{x:g}"


def check_judgment(
    row: dict, path: Path, line: int, protocol: Protocol | None, cached: bool = True, fix: str = CACHE_FIX
) -> dict:
    """A judgment as this tool writes it: `parsed` true or false, a parsed row with its scores and an
    unparsed one without, a failed call never in the cache; with its protocol, the score re-parsed from
    the stored reply (`raw`) with the protocol's parser and inside the protocol's range."""
    where = f"{path}: line {line}"

    def bad(msg: str) -> ValueError:
        return ValueError(f"{where}: {msg}; {fix}")

    parsed, ans, ref = row.get("parsed"), row.get("score_answer"), row.get("score_reference")
    if not isinstance(parsed, bool):
        raise bad(f"field 'parsed' = {parsed!r} is not true or false")
    if row.get("error") is not None:
        if cached:
            raise bad("a failed call (field 'error') is never cached")
        if parsed or ans is not None or ref is not None:
            raise bad("a failed call carries no score")
        return row
    if parsed and ans is None:
        raise bad("'parsed' is true but 'score_answer' is null (the prompt would drop out of every count)")
    if not parsed and (ans is not None or ref is not None):
        raise bad(f"'parsed' is false but it carries a score ({_score(ans)})")
    if protocol is None:
        return row
    if row.get("order") not in protocol.orders(swap=True):
        raise bad(f"order {row.get('order')!r} is not one of protocol {protocol.name}'s")
    if parsed and protocol.kind == "pairwise" and ref is None:
        raise bad("'parsed' is true but 'score_reference' is null")
    if str(row.get("judge_model") or "").startswith("offline:"):  # scores from probabilities: no text
        lo, hi = protocol.score_range
        for f, x in (("score_answer", ans), ("score_reference", ref)):
            if x is not None and not lo <= x <= hi:
                raise bad(f"field {f!r} = {x!r} is outside the protocol's range {lo:g}-{hi:g}")
        return row
    raw = row.get("raw")
    if raw is not None and not isinstance(raw, str):
        raise bad(f"field 'raw' (the judge's reply) is a {type(raw).__name__}, not text")
    p = parse(protocol.kind, raw, protocol.parser)
    want_ref, want_ans = answer_score(protocol.kind, row["order"], p)
    stored = (parsed, ans, ref) + ((row.get("quirk"),) if "quirk" in row else ())
    want = (p.ok, want_ans, want_ref) + ((p.quirk,) if "quirk" in row else ())
    if stored != want:
        raise bad(
            f"it stores score {_score(ans)} (reference {_score(ref)}, parsed {parsed}) but its reply "
            f"{(raw or '')[:60]!r} reads {_score(want_ans)} (reference {_score(want_ref)}, parsed {p.ok}) "
            f"under protocol {protocol.name}'s {protocol.parser} parser"
        )
    if p.ok and not p.quirk:  # the official parser alone counts, and flags, a number off the scale
        lo, hi = protocol.score_range
        if not all(lo <= x <= hi for x in p.scores):
            raise bad(f"score {_score(ans)} is outside the protocol's range {lo:g}-{hi:g}")
    return row


def read_judgments(path: Path) -> list[dict]:
    """A run's judge.jsonl (written from the cache, failed calls included), each row checked for the
    shape every reader counts on: `parsed` a boolean, a parsed row with its score, an unparsed one none."""
    path = Path(path)
    rows = []
    for n, row in enumerate(read_jsonl(path), 1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: line {n}: not a judgment (a JSON {type(row).__name__}, not an object)")
        rows.append(check_judgment(row, path, n, None, cached=False, fix=RUN_FIX))
    return rows


class JudgeCache:
    """`JudgeCache(path)`: a keyed JSONL cache. In cache/judge/ (or with `judgments=True`) every row is a
    judgment and re-checked as one (`check_judgment`); elsewhere (refinements) rows are the caller's."""

    def __init__(self, path: Path, judgments: bool | None = None):
        self.path = Path(path)
        self.judgments = self.path.parent.name == JUDGE_DIR if judgments is None else judgments
        _cut_torn_tail(self.path)
        self.rows: dict[str, dict] = {}
        self._later: dict[str, int] = {}  # key -> line: its protocol is checked when it is looked up
        for n, row in enumerate(read_jsonl(self.path), 1):
            row = check_row(row, self.path, n)
            known = self._check(row, n, final=False) if self.judgments else True
            if row["key"] not in self.rows:  # first answer wins: a duplicate never counts twice
                self.rows[row["key"]] = row
                if not known:
                    self._later[row["key"]] = n

    def _check(self, row: dict, line: int, final: bool) -> bool:
        proto = find_protocol(row.get("protocol"), row.get("protocol_version"))
        if proto is None and final:
            raise ValueError(
                f"{self.path}: line {line}: written under protocol {row.get('protocol')!r} "
                f"v{row.get('protocol_version')}, which is neither loaded nor in templates/judge: its "
                f"score cannot be re-checked; {CACHE_FIX}"
            )
        check_judgment(row, self.path, line, proto)
        return proto is not None

    def _looked_up(self, key: str) -> None:
        if key in self._later:
            self._check(self.rows[key], self._later.pop(key), final=True)

    def __contains__(self, key: str) -> bool:
        self._looked_up(key)
        return key in self.rows

    def get(self, key: str) -> dict | None:
        self._looked_up(key)
        return self.rows.get(key)

    def add(self, row: dict) -> None:
        if row["key"] in self.rows:
            return
        append_jsonl(self.path, row)
        self.rows[row["key"]] = row


def legacy_judgments(planned: list, protocol: Protocol, spec, cache: JudgeCache, say=print) -> int:
    """The planned judgments not in the cache but cached under the endpoint's old label `model@host:port`
    (which never recorded the path): on the default path /v1, copied into the cache (no call, no cost);
    on another path not used, since the old label cannot tell which path judged them, and said so."""
    old = spec.legacy_label
    missing = [p for p in planned if p.key not in cache]
    if not old or not missing or not cache_path(old).exists():
        return 0
    if spec.legacy_path != LEGACY_PATH:
        say(
            f"  not reusing {cache_path(old)}: it was cached under the old label {old}, which did not record "
            f"the endpoint's path, and only the default path {LEGACY_PATH} is read as it "
            f"(this judge: {spec.judge_model})"
        )
        return 0
    source, n = JudgeCache(cache_path(old)), 0  # only read: the old file stays as it is
    for p in missing:
        it = p.item
        row = source.get(
            judgment_key(old, protocol.name, protocol.version, p.order, it.question, it.reference, it.answer)
        )
        if row is not None and p.key not in cache:
            cache.add({**row, "key": p.key, "judge_model": spec.judge_model, "legacy_label": old})
            n += 1
    if n:
        say(f"  {n} judgment(s) read from {cache_path(old)} (old label {old}, path {LEGACY_PATH})")
    return n
