"""Decoding by prompt type: classify each prompt, then decode it with that type's decoding point.

Types, by simple rules on the instruction and input (the first rule that matches wins, in this order):

    coding   a code fence, or a programming word: python, java(script), c++, sql, code, function,
             program, algorithm, regex, html, css, script, compile, debug, api, bash, class, variable
    math     arithmetic between numbers ("3 * 4", "x = 2"), or a math word: calculate, compute, solve,
             equation, probability, integral, derivative, percentage, average, how many, sum of
    writing  a request to write: write, compose, draft, essay, story, poem, letter, email, blog, article,
             rewrite, paraphrase, summari[sz]e, slogan, tweet, lyrics, speech
    open     everything else (open questions, explanations, advice)

A policy is data, `templates/decoding/policies/<name>.yaml` (names start with `bytype_`): a decoding
point name per type (`greedy`, `t0.7_p0.9`, ... as in tools/eval/decoding.py) and shared `defaults`
(max_new_tokens, seed). Its name is used wherever a decoding name is (`--decoding bytype_recipe`), so
it is chosen on a dev set like any decoding point; answers go to `eval/<testset>/<policy name>/`, each
line of predictions.jsonl carrying its `prompt_type` and the `gen` settings of the point it used.

Usage:
    python -m tools.eval.policy [--policy bytype_recipe]   the policy's point per type
    python -m tools.eval.policy --classify "Write a poem about the sea"
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, replace

from filelib import run_main
from tools.core.args import command, opt
from tools.core.paths import TEMPLATES
from tools.core.profiles import load_yaml
from tools.eval.decoding import DecodingPoint

POLICIES = TEMPLATES / "decoding" / "policies"
TYPES = ("coding", "math", "writing", "open")
PREFIX = "bytype_"

_CODING = re.compile(
    r"```|\b(python|java|javascript|c\+\+|sql|code|coding|function|program|programming|algorithm|regex|"
    r"html|css|script|compile|debug|api|bash|class|variable)\b",
    re.I,
)
_MATH = re.compile(
    r"\d\s*[-+*/^=<>%]\s*\d|\b(calculate|compute|solve|equation|probability|integral|derivative|"
    r"percentage|average|how many|sum of)\b",
    re.I,
)
_WRITING = re.compile(
    r"\b(write|compose|draft|essay|story|poem|letter|email|blog|article|rewrite|paraphrase|"
    r"summari[sz]e|slogan|tweet|lyrics|speech)\b",
    re.I,
)


def classify(instruction: str, input_text: str = "") -> str:
    """coding | math | writing | open, by the rules in this module's docstring."""
    text = f"{instruction}\n{input_text}"
    if _CODING.search(text):
        return "coding"
    if _MATH.search(text):
        return "math"
    if _WRITING.search(text):
        return "writing"
    return "open"


@dataclass(frozen=True)
class Policy:
    """A decoding point per prompt type, under one name (the predictions folder)."""

    name: str
    points: dict  # type -> DecodingPoint
    description: str = ""

    @property
    def seed(self) -> int:  # batch seeds derive from it, as for a single point
        return next(iter(self.points.values())).seed

    def point_for(self, row: dict) -> tuple[str, DecodingPoint]:
        t = classify(row.get("instruction", ""), row.get("input", ""))
        return t, self.points[t]

    def describe(self) -> dict:
        return {t: {"decoding": p.name, **p.as_gen()} for t, p in self.points.items()}


def policy_names() -> list[str]:
    return sorted(p.stem for p in POLICIES.glob(f"{PREFIX}*.yaml"))


def is_policy(name: str) -> bool:
    return name.startswith(PREFIX)


def load_policy(name: str, max_new_tokens: int | None = None, seed: int | None = None) -> Policy:
    """`templates/decoding/policies/<name>.yaml`; CLI overrides win over its `defaults`."""
    path = POLICIES / f"{name}.yaml"
    if not is_policy(name) or not path.exists():
        raise ValueError(
            f"decoding policy {name!r}: no {path}; policies: {', '.join(policy_names()) or 'none'}"
        )
    spec = load_yaml(path) or {}  # strict: a duplicated key is refused with file and line
    unknown = set(spec) - {"description", "types", "defaults"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    d = dict(spec.get("defaults") or {})
    bad = set(d) - {"max_new_tokens", "seed"}
    if bad:
        raise ValueError(f"{path}: defaults: unknown keys {sorted(bad)}")
    if max_new_tokens is not None:
        d["max_new_tokens"] = max_new_tokens
    if seed is not None:
        d["seed"] = seed
    types = spec.get("types") or {}
    if set(types) != set(TYPES):
        raise ValueError(f"{path}: types must name a decoding point for each of {', '.join(TYPES)}")
    points = {}
    for t in TYPES:
        p = DecodingPoint.parse(str(types[t]), **d)
        points[t] = replace(p, seed=d.get("seed", p.seed))  # one seed for the whole policy
    return Policy(name, points, str(spec.get("description", "")))


@dataclass
class PolicyArgs:
    policy: str | None = opt(
        None, help="print a policy's points (default bytype_recipe)", choices=policy_names
    )
    classify: str | None = opt(None, help="print the type of this prompt")

    def check(self) -> list[str]:
        return ["--policy and --classify: give one of them"] if self.policy and self.classify else []


@command(PolicyArgs, __doc__)
def main(a: PolicyArgs) -> int:
    if a.classify:
        print(classify(a.classify))
        return 0
    try:
        pol = load_policy(a.policy or "bytype_recipe")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for t, p in pol.points.items():
        print(f"{t:<8} {p.name:<20} {json.dumps(p.as_gen())}")
    return 0


if __name__ == "__main__":
    run_main(main)
