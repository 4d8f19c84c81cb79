"""Judge protocols as data: `templates/judge/<name>.yaml` -> the chat messages for one judgment.

A protocol file holds the system and user prompt, its `version` (part of every cache key), its
kind (`pairwise` with a reference, or `single`), and the answer prefixes the offline judge fixes.
Orders for the pairwise kind: "ab" = reference is Assistant 1, answer is Assistant 2 (HW5's);
"ba" = swapped. The single kind has one order, "single".
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from tools.core.paths import TEMPLATES
from tools.core.profiles import ConfigError, load_yaml
from tools.judge.parse import HI, LO

JUDGE_TEMPLATES = TEMPLATES / "judge"
REQUIRED = ("name", "version", "kind", "system", "prompt", "max_tokens", "expected_completion_tokens")


class ProtocolError(ValueError):
    pass


@dataclass(frozen=True)
class Protocol:
    name: str
    version: int
    kind: str  # pairwise | single
    system: str
    prompt: str
    max_tokens: int
    expected_completion_tokens: int
    needs_reference: bool
    offline: dict
    # How the reply becomes scores: "robust" (parse.parse_pair, ours) or "official" (HW5's evaluate.py).
    parser: str = "robust"
    temperature: float = 0.0
    seed: int | None = 42  # None: the request carries no seed (HW5's script sends none)
    # Put back before the question when it is not there (HW5's test file embeds the Alpaca preamble in
    # each prompt; our loaders strip it, the course's script sends it).
    question_prefix: str = ""

    @property
    def score_range(self) -> tuple[float, float]:
        """The scale a score must lie on: 1-10, the range every parser here accepts (the official
        parser alone counts a number outside it, and flags it as a quirk)."""
        return (LO, HI)

    def orders(self, swap: bool) -> list[str]:
        if self.kind == "single":
            return ["single"]
        return ["ab", "ba"] if swap else ["ab"]

    def messages(self, question: str, answer: str, reference: str | None, order: str) -> list[dict]:
        if self.question_prefix and not question.startswith(self.question_prefix):
            question = self.question_prefix + question
        if self.kind == "single":
            user = self.prompt.format_map({"question": question, "answer": answer})
        else:
            if reference is None:
                raise ProtocolError(f"protocol {self.name} needs a reference answer")
            a1, a2 = (reference, answer) if order == "ab" else (answer, reference)
            user = self.prompt.format_map({"question": question, "answer_1": a1, "answer_2": a2})
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


def available() -> list[str]:
    return sorted(p.stem for p in JUDGE_TEMPLATES.glob("*.yaml") if p.stem != "prices")


PLACEHOLDERS = {"pairwise": {"question", "answer_1", "answer_2"}, "single": {"question", "answer"}}


def _check_placeholders(path: Path, d: dict) -> None:
    """Every `{name}` in the prompts is one the protocol fills; a stray one would fail mid-run."""
    allowed = PLACEHOLDERS[d["kind"]]
    for field in ("prompt", "system"):
        if not isinstance(d[field], str):
            raise ProtocolError(f"{path}: field {field!r} must be a string")
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(d["prompt"]) if f is not None}
    except ValueError as e:
        raise ProtocolError(f"{path}: field 'prompt': {e} (write a literal brace as {{{{ or }}}})") from None
    unknown = sorted(used - allowed)
    if unknown:
        raise ProtocolError(
            f"{path}: field 'prompt': unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
            f"a {d['kind']} protocol fills {', '.join(sorted(allowed))}"
        )


# Every protocol loaded in this process, by (name, version): a cached judgment names its protocol, and
# the cache re-parses its reply with that protocol's parser (a protocol YAML outside templates/ too).
_LOADED: dict[tuple[str, int], Protocol] = {}
_TRIED: set[str] = set()  # template names already read for find_protocol


def find_protocol(name: object, version: object) -> Protocol | None:
    """The protocol a judgment was made under: one loaded in this process, else templates/judge/<name>.yaml
    when its version matches; None when neither is there."""
    if not isinstance(name, str) or isinstance(version, bool) or not isinstance(version, int):
        return None
    if (name, version) not in _LOADED and name not in _TRIED and name in available():
        _TRIED.add(name)
        try:
            load_protocol(name)  # registers itself; another version of it stays unknown
        except ProtocolError:
            return None
    return _LOADED.get((name, version))


def load_protocol(name_or_path: str) -> Protocol:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = JUDGE_TEMPLATES / f"{name_or_path}.yaml"
    if not path.exists():
        raise ProtocolError(
            f"no judge protocol {name_or_path!r} ({path}); available: {', '.join(available())}"
        )
    try:
        d = load_yaml(path) or {}
    except ConfigError as e:
        raise ProtocolError(str(e)) from None
    if not isinstance(d, dict):
        raise ProtocolError(f"{path}: a judge protocol is a mapping of keys to values")
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise ProtocolError(f"{path}: missing field(s) {', '.join(missing)}")
    if d["kind"] not in ("pairwise", "single"):
        raise ProtocolError(f"{path}: kind must be pairwise or single, not {d['kind']!r}")
    _check_placeholders(path, d)
    offline = {k: v for k, v in d.items() if k.startswith("offline_")}
    parser = d.get("parser", "robust")
    if parser not in ("robust", "official"):
        raise ProtocolError(f"{path}: parser must be robust or official, not {parser!r}")
    proto = Protocol(
        name=d["name"],
        version=int(d["version"]),
        kind=d["kind"],
        system=d["system"],
        prompt=d["prompt"],
        max_tokens=int(d["max_tokens"]),
        expected_completion_tokens=int(d["expected_completion_tokens"]),
        needs_reference=bool(d.get("needs_reference", d["kind"] == "pairwise")),
        offline=offline,
        parser=parser,
        temperature=float(d.get("temperature", 0.0)),
        seed=d.get("seed", 42),
        question_prefix=d.get("question_prefix", ""),
    )
    _LOADED[(proto.name, proto.version)] = proto
    return proto
