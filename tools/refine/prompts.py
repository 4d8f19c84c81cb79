"""Rewrite prompts (templates/refine/<name>.yaml): loaded, checked, filled in for a row, and their replies
read back into the row's fields."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

from filelib import sha256_text
from tools.core.paths import TEMPLATES
from tools.core.profiles import ConfigError, load_yaml

REFINE_TEMPLATES = TEMPLATES / "refine"
FIELDS = {"instruction", "input", "output"}
REWRITES = ("output", "instruction_and_output")
SECTIONS = re.compile(r"###\s*Instruction:\s*(?P<instruction>.+?)\s*###\s*Answer:\s*(?P<output>.+)", re.S)


class RefineError(ValueError):
    """Bad input or a refused run: a message for the person at the keyboard, nothing written."""


@dataclass(frozen=True)
class RewritePrompt:
    name: str
    version: int
    rewrites: str
    system: str
    user: str
    max_tokens: int
    path: Path

    @property
    def fingerprint(self) -> str:
        """Name, version and text: any change to the prompt makes new calls, never stale cache hits."""
        return sha256_text(self.name, str(self.version), self.system, self.user)

    def messages(self, row: dict) -> list[dict]:
        values = {f: str(row.get(f) or "") for f in FIELDS}
        user = self.user.format(**values).replace("\n\n\n", "\n\n")
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def apply(self, row: dict, reply: str) -> dict | None:
        """The row with the rewritten field(s), or None when the reply is not usable."""
        text = (reply or "").strip()
        if not text:
            return None
        if self.rewrites == "output":
            return {**row, "output": text}
        m = SECTIONS.search(text)
        if not m or not m["instruction"].strip() or not m["output"].strip():
            return None
        return {**row, "instruction": m["instruction"].strip(), "input": "", "output": m["output"].strip()}


def available() -> list[str]:
    return sorted(p.stem for p in REFINE_TEMPLATES.glob("*.yaml"))


def load_prompt(name_or_path: str) -> RewritePrompt:
    path = Path(name_or_path)
    if not path.suffix:
        path = REFINE_TEMPLATES / f"{name_or_path}.yaml"
    if not path.is_file():
        raise RefineError(f"no rewrite prompt {name_or_path!r} ({path}); have: {', '.join(available())}")
    try:
        spec = load_yaml(path)
    except ConfigError as e:
        raise RefineError(str(e)) from None
    if not isinstance(spec, dict):
        raise RefineError(f"{path}: a rewrite prompt is a mapping of keys to values")
    for key in ("name", "version", "rewrites", "system", "user"):
        if key not in spec:
            raise RefineError(f"{path}: missing key {key!r}")
    if spec["rewrites"] not in REWRITES:
        raise RefineError(f"{path}: rewrites = {spec['rewrites']!r}; use one of {REWRITES}")
    used = {f for _, f, _, _ in string.Formatter().parse(spec["user"]) if f is not None}
    unknown = used - FIELDS
    if unknown:
        raise RefineError(
            f"{path}: field 'user': unknown placeholder(s) {sorted(unknown)}; use {sorted(FIELDS)}"
        )
    return RewritePrompt(
        str(spec["name"]),
        int(spec["version"]),
        spec["rewrites"],
        str(spec["system"]),
        str(spec["user"]),
        int(spec.get("max_tokens", 1024)),
        path,
    )
