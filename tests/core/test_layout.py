"""The code's layout keeps its promises (README, "Where the code lives"): one package per stage, each
used by the others only through its public face, imports running one way, no circles, small files."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tools.core.paths import ROOT

# Which stage packages each one may import (besides itself, the core and plugins/). Later stages
# never feed earlier ones; bench and the demo sit on top.
STAGES = ("core", "models", "data", "refine", "train", "eval", "judge", "export", "report", "bench")
MAY_IMPORT = {
    "core": set(),
    "models": set(),
    "data": set(),
    # refinement calls an endpoint: it reuses the judge's client, cache and prices
    "refine": {"data", "judge"},
    "train": {"models"},
    "eval": {"judge"},  # a study's evaluation scores answers with the judge in the same process
    "judge": set(),
    "export": set(),
    "report": {"judge"},  # its statistics (paired bootstrap), through the face
    "bench": set(STAGES),
    "demo": set(STAGES),
}
MAX_LINES = 400


def sources() -> list[Path]:
    return sorted(p for d in ("tools", "plugins") for p in (ROOT / d).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every import in the file, at any depth (lazy imports count too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
    return out


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "tools" or len(parts) < 2:
        return None
    return parts[1]


def resolve(module: str, names: list[str]) -> list[str]:
    """The modules an import really loads: a name from a package's face is the module defining it."""
    if not module.startswith(("tools", "plugins")):
        return []
    targets = []
    spec = ROOT.joinpath(*module.split("."))
    if spec.is_dir():  # a package: names are submodules or public names of its face
        face = importlib.import_module(module)
        for n in names:
            if (spec / f"{n}.py").exists() or (spec / n).is_dir():
                targets.append(f"{module}.{n}")
            elif n in getattr(face, "__all__", ()):
                targets.append(getattr(face, n).__module__)
            else:
                targets.append(module)
    else:
        targets.append(module)
    return targets


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sources():
        me = module_name(path)
        edges.setdefault(me, set())
        for module, names in imports(path):
            edges[me].update(t for t in resolve(module, names) if t != me)
    return edges


def test_plugins_never_import_tools():
    bad = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "plugins").rglob("*.py")
        for module, _ in imports(path)
        if module == "tools" or module.startswith("tools.")
    ]
    assert not bad, bad


def test_stages_import_one_way_through_public_faces():
    bad = []
    for path in sources():
        me = module_name(path)
        mine = stage_of(me)
        if mine is None or not (ROOT / "tools" / mine).is_dir() and mine != "demo":
            continue
        for module, _ in imports(path):
            theirs = stage_of(module)
            if theirs is None or theirs == mine or theirs == "core":
                continue
            if theirs not in MAY_IMPORT.get(mine, set()):
                bad.append(f"{me} imports {module}: {mine} may not depend on {theirs}")
            elif module != f"tools.{theirs}" and mine not in ("bench",):
                bad.append(f"{me} imports {module}: use the face `tools.{theirs}`, not its modules")
    assert not bad, "\n".join(bad)


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [node, nxt]) if nxt in stack else nxt)
            elif nxt in edges and not state.get(nxt):
                visit(nxt, stack + [node])
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node, [])
    assert not cycles, cycles


def test_a_planted_circle_is_found(tmp_path, monkeypatch):
    """The circle check is not vacuous: ifd importing strategies back would be caught."""
    real = imports

    def planted(path: Path):
        found = real(path)
        return found + [("plugins.strategies", ["score"])] if path.name == "ifd.py" else found

    monkeypatch.setitem(globals(), "imports", planted)
    with pytest.raises(AssertionError, match="plugins.ifd"):
        test_no_import_circles()


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_are_small_or_say_why(path):
    text = path.read_text()
    n = text.count("\n")
    assert n <= MAX_LINES or "Longer than 400 lines because" in text[:2000], f"{n} lines, no reason given"


def test_every_stage_is_a_package_with_a_face():
    for stage in STAGES:
        pkg = ROOT / "tools" / stage
        assert (pkg / "__init__.py").exists(), stage
        face = importlib.import_module(f"tools.{stage}")
        for name in getattr(face, "__all__", ()):
            assert getattr(face, name) is not None, f"tools.{stage}.{name}"
