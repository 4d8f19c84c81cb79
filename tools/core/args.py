"""One argument layer: a command's options as a dataclass, each option's default, help and rules in one place.

    @dataclass
    class MergeArgs:
        runs: list[str] = opt(help="adapter runs", required=True)
        density: float = opt(0.5, help="kept share", gt=0, max=1)

        def check(self) -> list[str]:  # cross-field rules, one line per problem
            return [] if len(self.runs) > 1 else ["--runs: at least two"]

    @command(MergeArgs, __doc__)  # main(argv) -> int: 2, every bad option named at once, before any work
    def main(a: MergeArgs) -> int: ...

The type says how a value is read (int, float, str, Path, X | None, list[X]; bool: a switch, `--no-x`
when it defaults to True). Rules of `opt()`: min/max (inclusive), gt/lt (exclusive), positive, nonneg,
finite (floats' default: NaN and inf refused), choices (a list, or a callable read when checked),
required, split="," (one value holding a list), repeat (given several times), env (the command line's
default read from that variable), flag (the spelling; a tuple adds aliases), metavar.
Values are converted here, not by argparse, so an unreadable number, an unknown name and a broken
cross-field rule appear in one report naming the option, the value and the rule. `checked(obj)` applies
the same rules to an object built in code, raising ArgsError (a ValueError) with every problem.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
import types
import typing

_KEY = "smalldata.arg"
RULES = {"min", "max", "gt", "lt", "positive", "nonneg", "finite", "choices", "required", "split", "repeat"}
RULES |= {"env", "flag", "metavar"}
# (rule, holds, what a value breaking it is told)
BOUNDS = (
    ("min", lambda v, b: v >= b, "must be at least {}"),
    ("max", lambda v, b: v <= b, "must be at most {}"),
    ("gt", lambda v, b: v > b, "must be above {}"),
    ("lt", lambda v, b: v < b, "must be below {}"),
    ("positive", lambda v, on: not on or v > 0, "must be positive"),
    ("nonneg", lambda v, on: not on or v >= 0, "must not be negative"),
)


class Refused(SystemExit):
    """The command line was refused, its problems on stderr: exit status 2 (`command`'s main returns 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # argparse's own refusals end the same way as ours
        fail(self, [message])


class ArgsError(ValueError):
    """Every violated rule of one set of arguments, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def opt(default=None, *, help: str = "", **rules) -> typing.Any:
    """A dataclass field carrying its help and its rules (see the module's docstring). A required option
    defaults to None too: `checked` names it when it is missing."""
    if set(rules) - RULES:
        raise TypeError(f"opt(): unknown rule(s) {sorted(set(rules) - RULES)}")
    meta = {_KEY: {"help": help, **rules}}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda d=default: list(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _shape(tp) -> tuple[type, bool]:
    """(element type, is a list) of an annotation (`X | None` is X)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = next(t for t in typing.get_args(tp) if t is not type(None))
    return (typing.get_args(tp)[0], True) if typing.get_origin(tp) is list else (tp, False)


def _fields(cls) -> list[tuple[dataclasses.Field, dict, type, bool]]:
    hints = typing.get_type_hints(cls)
    return [
        (f, f.metadata[_KEY], *_shape(hints[f.name])) for f in dataclasses.fields(cls) if _KEY in f.metadata
    ]


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def flag_of(f: dataclasses.Field, meta: dict, elem: type | None = None) -> str:
    if meta.get("flag"):  # a tuple: the spelling, then aliases
        return meta["flag"] if isinstance(meta["flag"], str) else meta["flag"][0]
    name = f.name.replace("_", "-")
    return f"--no-{name}" if elem is bool and _default(f) is True else f"--{name}"


def _choices(meta: dict) -> list | None:
    c = meta.get("choices")
    return list(c() if callable(c) else c) if c is not None else None


def _rules_text(meta: dict) -> str:
    signs = {"min": ">= {}", "max": "<= {}", "gt": "> {}", "lt": "< {}", "positive": "> 0", "nonneg": ">= 0"}
    return ", ".join(
        t.format(meta[k]) for k, t in signs.items() if meta.get(k) is not None and meta[k] is not False
    )


def build_parser(cls, doc: str | None = None, ap: argparse.ArgumentParser | None = None, **kw):
    """The argparse parser of a dataclass (or `ap` with its options added): every option with its help,
    default and range in `--help`. Values stay strings here; `parse` converts and checks them."""
    if ap is None:
        ap = _Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    for f, meta, elem, many in _fields(cls):
        flag, dflt = flag_of(f, meta, elem), _default(f)
        shown = meta["split"].join(map(str, dflt)) if meta.get("split") and dflt else dflt
        extra = [f"default: ${meta['env']}, else {shown}" if meta.get("env") else f"default: {shown}"]
        extra = ["required"] if meta.get("required") else extra
        extra += [_rules_text(meta)] if _rules_text(meta) else []
        extra += ["one of: " + ", ".join(map(str, _choices(meta)))] if "choices" in meta else []
        help_ = f"{meta['help']} ({'; '.join(extra)})".strip().replace("%", "%%")
        if elem is bool:
            ap.add_argument(
                flag, dest=f.name, action="store_false" if dflt is True else "store_true", help=help_
            )
            ap.set_defaults(**{f.name: dflt})
            continue
        spec = {"help": help_, "default": None}
        if many and not meta.get("split"):
            spec.update(action="append") if meta.get("repeat") else spec.update(nargs="+")
        aliases = () if isinstance(meta.get("flag", ""), str) else meta["flag"][1:]
        ap.add_argument(flag, *aliases, dest=f.name, metavar=meta.get("metavar"), **spec)
    return ap


_WHAT = {int: "not an integer", float: "not a number"}


def parse(cls, argv: list[str] | None = None, doc: str | None = None, **kw):
    """Parse argv into `cls`; on any problem print them all (one line each) and exit with status 2."""
    if "prog" not in kw and os.path.basename(sys.argv[0]) == "__main__.py":  # `python -m tools.refine`
        kw["prog"] = os.path.basename(os.path.dirname(sys.argv[0]))
    ap = build_parser(cls, doc, **kw)
    return from_namespace(cls, ap.parse_args(argv), ap)


def from_namespace(cls, ns: argparse.Namespace, ap: argparse.ArgumentParser):
    """The dataclass from a parsed namespace, converted and checked (exit 2 with every problem)."""
    values, problems, failed = {}, [], set()
    for f, meta, elem, many in _fields(cls):
        raw, flag = getattr(ns, f.name, None), flag_of(f, meta, elem)
        if raw is None and meta.get("env") and os.environ.get(meta["env"]):
            raw = os.environ[meta["env"]]
        if raw is None:
            continue
        if elem is bool:
            values[f.name] = raw
            continue
        items = raw if isinstance(raw, list) else [raw]
        if meta.get("split"):
            items = [p.strip() for r in items for p in r.split(meta["split"])]
        got = []
        for x in items:
            try:
                got.append(elem(x.strip()) if elem in _WHAT else elem(x))
            except ValueError:
                problems.append(f"{flag} {x!r}: {_WHAT.get(elem, 'not readable')}")
                failed.add(f.name)
                break
        else:
            values[f.name] = got if many else got[0]
    obj = cls(**values)
    problems += validate(obj, skip=failed)
    if problems:
        fail(ap, problems)
    return obj


def fail(ap: argparse.ArgumentParser, problems: list[str]) -> typing.NoReturn:
    ap.print_usage(sys.stderr)
    for p in problems:
        print(f"{ap.prog}: error: {p}", file=sys.stderr)
    raise Refused(2)


def parse_sub(table: dict[str, type], argv: list[str] | None = None, doc: str | None = None, **kw):
    """Subcommands (`configs render ...`): each name's dataclass parsed and checked as `parse` does."""
    ap = _Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    sub = ap.add_subparsers(dest="_command", required=True, metavar="{" + ",".join(table) + "}")
    parsers = {
        n: build_parser(c, ap=sub.add_parser(n, help=(c.__doc__ or "").strip())) for n, c in table.items()
    }
    ns = ap.parse_args(argv)
    return from_namespace(table[ns._command], ns, parsers[ns._command])


def command(cls, doc: str | None = None, **kw):
    """`@command(XArgs, __doc__)` on `def main(a: XArgs) -> int` makes `main(argv=None) -> int`: the
    command line parsed and checked into XArgs, or every problem printed and 2 returned. With a dict
    {name: XArgs} the names are subcommands, and `a` is the one given."""

    def wrap(fn):
        @functools.wraps(fn)
        def main(argv: list[str] | None = None) -> int:
            try:
                a = parse_sub(cls, argv, doc, **kw) if isinstance(cls, dict) else parse(cls, argv, doc, **kw)
            except Refused as e:
                return e.code
            return fn(a)

        main.args = cls
        return main

    return wrap


def _broken(value, meta: dict, elem: type) -> str | None:
    """The rule a single value breaks, or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if elem is float and meta.get("finite", True) and not math.isfinite(value):
            return "must be a finite number"
        for key, holds, text in BOUNDS:
            if meta.get(key) is not None and not holds(value, meta[key]):
                return text.format(meta[key])
    choices = _choices(meta)
    if choices is not None and value not in choices:
        return "unknown; one of: " + (", ".join(map(str, choices)) or "(none)")
    return None


def validate(obj, skip: set[str] | frozenset = frozenset()) -> list[str]:
    """Every rule `obj` breaks: per option (each element of a list; not those in `skip`), then its
    `check()` hook (which sees every value, also those breaking a rule of their own)."""
    problems = []
    for f, meta, elem, many in _fields(type(obj)):
        if f.name in skip:
            continue
        value, flag = getattr(obj, f.name), flag_of(f, meta, elem)
        if value is None:
            if meta.get("required"):
                problems.append(f"{flag}: required")
            continue
        if many and not value and not meta.get("repeat"):
            problems.append(f"{flag}: needs at least one value")
        for v in value if many else [value]:
            why = _broken(v, meta, elem)
            if why:
                problems.append(f"{flag} {v!r}: {why}" if isinstance(v, str) else f"{flag} {v}: {why}")
                break
    hook = getattr(obj, "check", None)
    return problems + (list(hook()) if callable(hook) else [])


def checked(obj):
    """`obj` when it keeps every rule, else ArgsError naming all the broken ones (for library callers)."""
    problems = validate(obj)
    if problems:
        raise ArgsError(problems)
    return obj
