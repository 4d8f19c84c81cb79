"""The argument layer (tools/core/args.py): one place per option, every problem reported at once, exit 2."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.core.args import ArgsError, build_parser, checked, opt, parse, validate


@dataclass
class Demo:
    run: str = opt(help="the run", required=True)
    n: int = opt(8, help="how many", min=1)
    limit: int | None = opt(None, help="only the first K", min=1)
    cost: float = opt(1.0, help="dollars", nonneg=True)
    temp: float = opt(0.7, help="temperature", gt=0, lt=2)
    weights: list[float] | None = opt(None, help="one per run")
    only: list[str] | None = opt(None, help="names", choices=lambda: ["a", "b"], split=",")
    window: list[int] | None = opt(None, help="lo,hi", split=",", nonneg=True)
    sets: list[str] = opt([], help="KEY=VALUE", repeat=True, flag="--set")
    out: Path = opt(Path("x"), help="folder")
    base_url: str | None = opt(None, help="endpoint", env="DEMO_BASE_URL")
    quiet: bool = opt(False, help="no bar")
    base: bool = opt(True, help="leave the base out")

    def check(self) -> list[str]:
        return ["--limit: above --n"] if self.limit is not None and self.limit > self.n else []


def refuse(argv: list[str], capsys) -> list[str]:
    with pytest.raises(SystemExit) as e:
        parse(Demo, argv)
    assert e.value.code == 2
    return [x for x in capsys.readouterr().err.splitlines() if "error:" in x]


def test_defaults_types_and_switches(monkeypatch):
    monkeypatch.delenv("DEMO_BASE_URL", raising=False)
    a = parse(Demo, ["--run", "m/s/v"])
    assert a == Demo(run="m/s/v")
    a = parse(
        Demo,
        ["--run", "r", "--n", "3", "--weights", "0.5", "1", "--only", "a,b", "--window", "2,5"]
        + ["--set", "a=1", "--set", "b=2", "--out", "y", "--quiet", "--no-base"],
    )
    assert (a.n, a.weights, a.only, a.window, a.sets) == (3, [0.5, 1.0], ["a", "b"], [2, 5], ["a=1", "b=2"])
    assert a.out == Path("y") and a.quiet is True and a.base is False


def test_env_gives_the_command_lines_default_only(monkeypatch):
    monkeypatch.setenv("DEMO_BASE_URL", "http://x/v1")
    assert parse(Demo, ["--run", "r"]).base_url == "http://x/v1"
    assert parse(Demo, ["--run", "r", "--base-url", "http://y"]).base_url == "http://y"
    assert Demo(run="r").base_url is None  # code that builds the object is not steered by the environment


def test_every_problem_is_reported_at_once(capsys):
    lines = refuse(
        ["--n", "0", "--cost", "nan", "--temp", "inf", "--weights", "nan", "1", "--only", "a,nope"]
        + ["--window", "\u00b2,5", "--limit", "-1"],
        capsys,
    )
    text = "\n".join(lines)
    for want in (
        "--run: required",
        "--n 0: must be at least 1",
        "--cost nan: must be a finite number",
        "--temp inf: must be a finite number",
        "--weights nan: must be a finite number",
        "--only 'nope': unknown; one of: a, b",
        "--window '\u00b2': not an integer",
        "--limit -1: must be at least 1",
    ):
        assert want in text, f"{want!r} not in\n{text}"
    assert len(lines) == 8, text


def test_ranges_exclusive_and_negative_counts(capsys):
    assert "--temp 0.0: must be above 0" in "\n".join(refuse(["--run", "r", "--temp", "0"], capsys))
    assert "--temp 2.0: must be below 2" in "\n".join(refuse(["--run", "r", "--temp", "2"], capsys))
    assert "--window -1: must not be negative" in "\n".join(
        refuse(["--run", "r", "--window", "1,-1"], capsys)
    )
    assert "--cost -0.5: must not be negative" in "\n".join(refuse(["--run", "r", "--cost", "-0.5"], capsys))


def test_cross_field_check_runs_with_the_others(capsys):
    lines = refuse(["--run", "r", "--n", "2", "--limit", "5", "--cost", "-1"], capsys)
    assert [x.split("error: ", 1)[1] for x in lines] == [
        "--cost -1.0: must not be negative",
        "--limit: above --n",
    ]


def test_empty_values_are_refused(capsys):
    assert any("--only '': unknown" in x for x in refuse(["--run", "r", "--only", ""], capsys))
    assert any("--n '': not an integer" in x for x in refuse(["--run", "r", "--n", ""], capsys))


def test_help_lists_each_default_and_range(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["demo"])
    with pytest.raises(SystemExit) as e:
        parse(Demo, ["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for want in (
        "how many (default: 8; >= 1)",
        "dollars (default: 1.0; >= 0)",
        "temperature (default: 0.7; > 0, < 2)",
        "names (default: None; one of: a, b)",
        "the run (required)",
        "--no-base",
        "endpoint (default: $DEMO_BASE_URL, else None)",
    ):
        assert want in out, f"{want!r} not in {out}"


def test_library_callers_get_the_same_rules():
    assert validate(Demo(run="r")) == []
    with pytest.raises(ArgsError) as e:
        checked(Demo(run=None, n=0, cost=float("nan")))
    assert e.value.problems == [
        "--run: required",
        "--n 0: must be at least 1",
        "--cost nan: must be a finite number",
    ]
    assert isinstance(e.value, ValueError)


def test_unknown_rule_is_a_programming_error():
    with pytest.raises(TypeError, match="unknown rule"):
        opt(1, minimum=0)


def test_options_added_to_an_existing_parser():
    import argparse

    ap = argparse.ArgumentParser()
    build_parser(Demo, ap=ap)
    assert ap.parse_args(["--run", "r", "--n", "4"]).n == "4"  # converted and checked by from_namespace


def test_command_returns_2_for_every_refusal(capsys):
    from tools.core.args import command

    @command(Demo, "demo")
    def main(a: Demo) -> int:
        return 0 if a.n == 3 else 1

    assert main(["--run", "r", "--n", "3"]) == 0
    assert main(["--run", "r", "--n", "0"]) == 2  # our rule
    assert main(["--run", "r", "--bogus"]) == 2  # argparse's own refusal, the same way
    err = capsys.readouterr().err
    assert "error: --n 0: must be at least 1" in err and "error: unrecognized arguments: --bogus" in err
    assert main.args is Demo and main.__name__ == "main"
