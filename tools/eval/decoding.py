"""Decoding points and grids: the settings of one generation, and a path-safe name for them.

A point is greedy or sampled (temperature x top_p, with top_k, repetition penalty and a seed).
Its name is derived from the values that change the answers and round-trips through `parse`:

    greedy                      greedy decoding (seed irrelevant)
    greedy_rp1.1                greedy with a repetition penalty
    t0.7_p0.9                   sampled, top_k off, no penalty, the default seed 42
    t1.3_p0.95_k50_rp1.1_s7     every non-default value spelled out

`max_new_tokens` is a budget, not part of the name: generate refuses to mix two budgets in one
predictions file rather than inventing a new folder for each. Grids are data in
`templates/decoding/<name>.yaml` (`greedy: true`, lists `temperature`, `top_p` and optionally `top_k`,
the axes of the sampled points, and `defaults`).

Usage:
    python -m tools.eval.decoding [--grid hw5]        print the points of a grid and their names
    python -m tools.eval.decoding --parse t0.7_p0.9   print the settings a name stands for
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace

from filelib import run_main
from tools.core.args import command, opt
from tools.core.paths import TEMPLATES
from tools.core.profiles import load_yaml

GRIDS = TEMPLATES / "decoding"
DEFAULT_SEED = 42
DEFAULT_MAX_NEW_TOKENS = 512


def _num(x: float) -> str:
    """0.7 -> '0.7', 1 -> '1.0', 0.95 -> '0.95': short, unambiguous and path-safe."""
    s = f"{float(x):.4f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


@dataclass(frozen=True)
class DecodingPoint:
    do_sample: bool = False
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {self}")
        if self.max_new_tokens < 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise ValueError(f"bad decoding settings {self}")

    @property
    def name(self) -> str:
        if not self.do_sample:
            return "greedy" + (
                f"_rp{_num(self.repetition_penalty)}" if self.repetition_penalty != 1.0 else ""
            )
        parts = [f"t{_num(self.temperature)}", f"p{_num(self.top_p)}"]
        if self.top_k:
            parts.append(f"k{self.top_k}")
        if self.repetition_penalty != 1.0:
            parts.append(f"rp{_num(self.repetition_penalty)}")
        if self.seed != DEFAULT_SEED:
            parts.append(f"s{self.seed}")
        return "_".join(parts)

    def as_gen(self) -> dict:
        """The `gen` block of predictions.jsonl (tools/CONTRACTS.md)."""
        return asdict(self)

    def generate_kwargs(self) -> dict:
        """Keyword arguments for transformers' `generate` (everything explicit: no model defaults leak in)."""
        kw = {
            "do_sample": self.do_sample,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # neutral values, so a model's generation_config cannot switch sampling filters on
            kw.update(temperature=None, top_p=None, top_k=None)
        return kw

    @classmethod
    def greedy(cls, **kw) -> DecodingPoint:
        return cls(do_sample=False, **kw)

    @classmethod
    def sampled(cls, temperature: float, top_p: float, **kw) -> DecodingPoint:
        return cls(do_sample=True, temperature=float(temperature), top_p=float(top_p), **kw)

    @classmethod
    def parse(cls, name: str, **defaults) -> DecodingPoint:
        """The inverse of `name`; `defaults` fill what a name leaves out (max_new_tokens, seed, ...)."""
        m = re.fullmatch(r"greedy(?:_rp(?P<rp>[0-9.]+))?", name)
        given: dict = {}
        if m:
            sampled = None
        else:
            m = re.fullmatch(
                r"t(?P<t>[0-9.]+)_p(?P<p>[0-9.]+)(?:_k(?P<k>\d+))?(?:_rp(?P<rp>[0-9.]+))?(?:_s(?P<s>\d+))?",
                name,
            )
            if not m:
                raise ValueError(
                    f"decoding {name!r}: expected 'greedy', 'greedy_rp<R>' or "
                    "'t<T>_p<P>[_k<K>][_rp<R>][_s<seed>]', e.g. t0.7_p0.9"
                )
            sampled = (float(m["t"]), float(m["p"]))
            if m["k"]:
                given["top_k"] = int(m["k"])
            if m["s"]:
                given["seed"] = int(m["s"])
        if m["rp"]:
            given["repetition_penalty"] = float(m["rp"])
        canonical = cls.sampled(*sampled, **given) if sampled else cls.greedy(**given)
        if canonical.name != name:  # e.g. 't0.70_p0.9' or an explicit default '_s42': one spelling per point
            raise ValueError(f"decoding {name!r}: write it as {canonical.name!r}")
        allowed = (
            ("max_new_tokens", "seed", "top_k", "repetition_penalty") if sampled else ("max_new_tokens",)
        )
        fill = {k: v for k, v in defaults.items() if k in allowed and k not in given and v is not None}
        return replace(canonical, **fill)


def grid_names() -> list[str]:
    return sorted(p.stem for p in GRIDS.glob("*.yaml"))


def load_grid(name: str, max_new_tokens: int | None = None, seed: int | None = None) -> list[DecodingPoint]:
    """The points of `templates/decoding/<name>.yaml`, greedy first; CLI overrides win over `defaults`."""
    path = GRIDS / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"decoding grid {name!r}: no {path}; grids: {', '.join(grid_names()) or 'none'}")
    spec = load_yaml(path) or {}  # ConfigError (a ValueError) names the file and line
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a decoding grid is a mapping of keys to values")
    unknown = set(spec) - {"description", "greedy", "temperature", "top_p", "top_k", "defaults"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    d = dict(spec.get("defaults") or {})
    bad = set(d) - {"top_k", "repetition_penalty", "max_new_tokens", "seed"}
    if bad:
        raise ValueError(f"{path}: defaults: unknown keys {sorted(bad)}")
    if max_new_tokens is not None:
        d["max_new_tokens"] = max_new_tokens
    if seed is not None:
        d["seed"] = seed
    top_ks = spec.get("top_k")
    if top_ks is not None:  # an axis of its own: 0 is "off", as in the names
        if "top_k" in d:
            raise ValueError(f"{path}: top_k is both an axis and a default; keep one")
        top_ks = top_ks if isinstance(top_ks, list) else [top_ks]
        if not top_ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in top_ks):
            raise ValueError(f"{path}: top_k: a list of whole numbers >= 0, got {spec['top_k']!r}")
    points = []
    if spec.get("greedy", True):
        points.append(DecodingPoint.greedy(**{k: v for k, v in d.items() if k != "top_k"}))
    for t in spec.get("temperature") or []:
        for p in spec.get("top_p") or []:
            for k in top_ks if top_ks is not None else [d.get("top_k", 0)]:
                points.append(DecodingPoint.sampled(t, p, **{**d, "top_k": k}))
    if not points:
        raise ValueError(f"{path}: the grid has no points")
    return points


@dataclass
class DecodingArgs:
    grid: str | None = opt(None, help="print this grid's points (hw5 when no --parse)", choices=grid_names)
    parse: str | None = opt(None, help="print the settings of a decoding name, e.g. t0.7_p0.9")

    def check(self) -> list[str]:
        if self.grid and self.parse:
            return ["--grid and --parse: give one of them"]
        flag, value = ("--parse", self.parse) if self.parse else ("--grid", self.grid or "hw5")
        try:
            DecodingPoint.parse(value) if self.parse else load_grid(value)
        except ValueError as e:
            return [f"{flag} {value!r}: {e}"]
        return []


@command(DecodingArgs, __doc__)
def main(a: DecodingArgs) -> int:
    points = [DecodingPoint.parse(a.parse)] if a.parse else load_grid(a.grid or "hw5")
    for p in points:
        print(f"{p.name:28s} {json.dumps(p.as_gen())}")
    return 0


if __name__ == "__main__":
    run_main(main)
