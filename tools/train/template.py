"""The one train template (templates/train.yaml.j2): its Jinja environment, its variables, its scalars."""

from __future__ import annotations

import difflib
from functools import cache
from typing import Any

import yaml

from tools.core.paths import TEMPLATES
from tools.core.profiles import ConfigError
from tools.train.validate import check_value, range_problems

TRAIN_TEMPLATE = TEMPLATES / "train.yaml.j2"
# Set by the renderer itself, never by a profile or study.
RENDERER_KEYS = frozenset(
    {"config_path", "study", "variant", "model", "study_comment", "profile_description"}
)


def yaml_scalar(value: Any) -> str:
    """One YAML scalar as LLaMA-Factory's examples write it (2.0e-4, true, null, quoted when needed)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-2:
            for digits in range(1, 17):
                mant, exp = f"{value:.{digits}e}".split("e")
                if float(f"{mant}e{exp}") == value:
                    return f"{mant}e{int(exp)}"
        return repr(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    return text[:-4].strip() if text.endswith("\n...") or text.endswith(" ...") else text


@cache
def _environment(folder: str):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["yaml"] = yaml_scalar
    return env


def train_template():
    return _environment(str(TRAIN_TEMPLATE.parent)).get_template(TRAIN_TEMPLATE.name)


@cache
def _variables(folder: str, name: str, mtime: float) -> frozenset[str]:
    from jinja2 import meta

    env = _environment(folder)
    return frozenset(meta.find_undeclared_variables(env.parse(env.loader.get_source(env, name)[0])))


def template_variables() -> frozenset[str]:
    """Every variable the template reads: the keys a profile or study may set (plus the renderer's)."""
    return _variables(str(TRAIN_TEMPLATE.parent), TRAIN_TEMPLATE.name, TRAIN_TEMPLATE.stat().st_mtime)


def settable_keys() -> frozenset[str]:
    return template_variables() - RENDERER_KEYS


def check_keys(values: dict, where: str, meta_keys: frozenset[str] = frozenset()) -> None:
    allowed = settable_keys()
    for key, value in values.items():
        if key in meta_keys:
            continue
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where}: unknown key {key!r}{hint}; the template takes: {', '.join(sorted(allowed))}"
            )
        check_value(key, value, where)


def parse_set(items: list[str]) -> dict:
    """`key=value` pairs; the value is read as YAML (12 -> int, 2e-4 -> str, 2.0e-4 -> float, true -> bool)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write key=value")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


def set_problems(items: list[str]) -> list[str]:
    """What is wrong with `--set KEY=VALUE` items: unreadable, or a number outside its variable's range."""
    try:
        return range_problems(parse_set(items), "--set", "--set {key}={value!r}")
    except ConfigError as e:
        return [str(e)]
