"""One argument layer: a command's options as a dataclass, each option's default, help and checks in one place.

    @dataclass
    class MergeArgs:
        runs: list[str] = opt(help="adapter runs", required=True)
        weights: list[float] | None = opt(None, help="one per run", finite=True)
        density: float = opt(0.5, help="kept share", gt=0, max=1)

        def check(self) -> list[str]:  # cross-field rules: one message per violation
            return ["--weights: one per --runs"] if self.weights and len(self.weights) != len(self.runs) else []

    @command(MergeArgs, __doc__)              # main(argv) -> int: 2 with every bad option named at once
    def main(a: MergeArgs) -> int: ...

The field's type says how a value is read (`int`, `float`, `str`, `Path`, `X | None`, `list[X]`; `bool`
is a switch, `--no-x` when it defaults to True). `opt()` rules: `min`/`max` (inclusive), `gt`/`lt`
(exclusive), `positive`, `nonneg`, `finite` (the default for floats: NaN and inf are refused),
`choices` (a list, or a callable giving it, read when checked), `required`, `split=","` (one value
holding a list), `repeat` (an option given several times), `env` (the command line's default read from
that variable), `flag` (the option's spelling, a positional when it has no leading dash; a tuple adds
aliases).

Values are read as strings and converted here, so a bad number, an unknown name and a broken cross-field
rule all appear in one report: one line per problem naming the option, the value and the rule, exit 2,
before the command reads, spends or writes anything. `checked(obj)` applies the same rules to an object
built in code (library callers), raising `ArgsError` (a ValueError) with every problem.
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
MISSING = dataclasses.MISSING
RULES = {"min", "max", "gt", "lt", "positive", "nonneg", "finite", "choices", "required"}
RULES |= {"split", "repeat", "env", "flag", "metavar", "nargs"}


class Refused(SystemExit):
    """The command line was refused (the problems are on stderr): exit status 2, or `main` returns 2."""

    def __init__(self):
        super().__init__(2)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # argparse's own refusals end the same way as ours
        fail(self, [message])


class ArgsError(ValueError):
    """Every violated rule of one set of arguments, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def opt(default=MISSING, *, help: str = "", factory=MISSING, **rules) -> typing.Any:
    """A dataclass field carrying its help and its rules (see the module's docstring for the rules)."""
    unknown = set(rules) - RULES
    if unknown:
        raise TypeError(f"opt(): unknown rule(s) {sorted(unknown)}")
    if default is MISSING and factory is MISSING:
        default = None  # a required option too: `checked` names it when it is missing
    meta = {_KEY: {"help": help, **rules}}
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------------- the fields
def _shape(tp) -> tuple[type, bool, bool]:
    """(element type, is a list, may be None) of an annotation."""
    optional = False
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        parts = [t for t in typing.get_args(tp) if t is not type(None)]
        optional, tp = len(parts) < len(typing.get_args(tp)), parts[0]
    if typing.get_origin(tp) in (list, tuple):
        return typing.get_args(tp)[0], True, optional
    return tp, False, optional


def _fields(cls) -> list[tuple[dataclasses.Field, dict, type, bool]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_KEY)
        if meta is not None:
            elem, many, _ = _shape(hints[f.name])
            out.append((f, meta, elem, many))
    return out


def _default(f: dataclasses.Field):
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def flag_of(f: dataclasses.Field, meta: dict, elem: type | None = None) -> str:
    if meta.get("flag"):  # a tuple: the spelling, then aliases
        return meta["flag"] if isinstance(meta["flag"], str) else meta["flag"][0]
    name = f.name.replace("_", "-")
    return f"--no-{name}" if elem is bool and _default(f) is True else f"--{name}"


def _choices(meta: dict) -> list | None:
    c = meta.get("choices")
    return list(c() if callable(c) else c) if c is not None else None


def _rules_text(meta: dict, elem: type) -> str:
    bits = []
    for key, text in (("min", ">= {}"), ("max", "<= {}"), ("gt", "> {}"), ("lt", "< {}")):
        if meta.get(key) is not None:
            bits.append(text.format(meta[key]))
    bits += [w for k, w in (("positive", "> 0"), ("nonneg", ">= 0")) if meta.get(k)]
    return ", ".join(bits)


# ----------------------------------------------------------------------------------------- the parser
def build_parser(cls, doc: str | None = None, ap: argparse.ArgumentParser | None = None, **kw):
    """The argparse parser of a dataclass (or `ap` with its options added): every option with its help,
    default and range in `--help`. Values stay strings here; `parse` converts and checks them."""
    if ap is None:
        ap = _Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    for f, meta, elem, many in _fields(cls):
        flag, dflt = flag_of(f, meta, elem), _default(f)
        shown = meta["split"].join(map(str, dflt)) if meta.get("split") and dflt else dflt
        extra = [f"default: ${meta['env']}, else {shown}" if meta.get("env") else f"default: {shown}"]
        if meta.get("required"):
            extra = ["required"]
        if _rules_text(meta, elem):
            extra.append(_rules_text(meta, elem))
        if meta.get("choices") is not None:
            extra.append("one of: " + ", ".join(map(str, _choices(meta))))
        help_ = f"{meta['help']} ({'; '.join(extra)})".strip().replace("%", "%%")
        if elem is bool:
            ap.add_argument(
                flag, dest=f.name, action="store_false" if dflt is True else "store_true", help=help_
            )
            ap.set_defaults(**{f.name: dflt})
            continue
        spec = {"help": help_, "default": None}
        if many and not meta.get("split"):
            spec.update(action="append") if meta.get("repeat") else spec.update(nargs=meta.get("nargs", "+"))
        if not flag.startswith("-"):  # a positional
            ap.add_argument(f.name, nargs=spec.pop("nargs", None if meta.get("required") else "?"), **spec)
        else:
            aliases = () if isinstance(meta.get("flag", ""), str) else meta["flag"][1:]
            ap.add_argument(flag, *aliases, dest=f.name, metavar=meta.get("metavar"), **spec)
    return ap


def _convert(text: str, elem: type):
    if elem is int:
        return int(text.strip())
    if elem is float:
        return float(text.strip())
    return elem(text)


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
        bad = [x for x in items if not _can(x, elem)]
        if bad:
            problems.append(f"{flag} {bad[0]!r}: {_WHAT.get(elem, 'not readable')}")
            failed.add(f.name)
            continue
        got = [_convert(x, elem) for x in items]
        values[f.name] = got if many else got[0]
    obj = cls(**values)
    problems += validate(obj, skip=failed)
    if problems:
        fail(ap, problems)
    return obj


def _can(text: str, elem: type) -> bool:
    try:
        _convert(text, elem)
        return True
    except ValueError:
        return False


def fail(ap: argparse.ArgumentParser, problems: list[str]) -> typing.NoReturn:
    ap.print_usage(sys.stderr)
    for p in problems:
        print(f"{ap.prog}: error: {p}", file=sys.stderr)
    raise Refused()


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


# ----------------------------------------------------------------------------------------- the checks
def _broken(value, meta: dict, elem: type) -> str | None:
    """The rule a single value breaks, or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if elem is float and meta.get("finite", True) and not math.isfinite(value):
            return "must be a finite number"
        for key, ok, text in (
            ("min", lambda v, b: v >= b, "must be at least {}"),
            ("max", lambda v, b: v <= b, "must be at most {}"),
            ("gt", lambda v, b: v > b, "must be above {}"),
            ("lt", lambda v, b: v < b, "must be below {}"),
        ):
            if meta.get(key) is not None and not ok(value, meta[key]):
                return text.format(meta[key])
        if meta.get("positive") and not value > 0:
            return "must be positive"
        if meta.get("nonneg") and value < 0:
            return "must not be negative"
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
        if many and not value and meta.get("nargs", "+") == "+" and not meta.get("repeat"):
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
