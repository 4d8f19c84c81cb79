"""The code's layout keeps its promises (docs/architecture.md): the file library at the bottom, plugins/ by
kind, one package per stage used by the others only through its public face, orchestration on top, imports
running one way, no circles, no tool started by a module-name string, small files."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tools.core.paths import ROOT

# Which stage packages each one may import (besides itself, the core, plugins/ and filelib). Later stages
# never feed earlier ones; orchestration (flows) drives them all, and bench measures everything.
STAGES = ("core", "models", "data", "refine", "train", "eval", "judge", "export", "report", "flows", "bench")
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
    "flows": {"models", "data", "refine", "train", "eval", "judge", "export", "report"},
    "bench": set(STAGES),
}
# plugins/ by kind: which other kinds each may import (through their faces); none imports tools/.
KINDS = {"pools": set(), "selection": {"pools"}, "publishing": {"pools", "selection"}, "launchers": set()}
# Module names that are data, not a way to start a tool: the launcher a rendered config names.
NAMES_AS_DATA = {
    "plugins.launchers": "the value of `launcher:` in rendered configs (plugins/launchers)",
    # imported by name in the fork server (multiprocessing's preload list): imported here, they would run
    # in the caller, whose heap warm_imports would freeze
    "tools.core.warm": "the fork server's preload list (tools/core/warm.py)",
    "tools.core.warm_imports": "the fork server's preload list (tools/core/warm.py)",
}
MAX_LINES = 400


def sources() -> list[Path]:
    return sorted(p for d in ("filelib", "tools", "plugins") for p in (ROOT / d).rglob("*.py"))


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


def defining_module(package: str, face, name: str) -> str:
    """The module a face's public name comes from: a lazy face's table, else the face's own import of it."""
    lazy = getattr(getattr(face, "__getattr__", None), "names", {})
    if name in lazy:
        return f"{package}.{lazy[name].partition(':')[0]}"
    init = ROOT.joinpath(*package.split("."), "__init__.py")
    for node in ast.walk(ast.parse(init.read_text())):
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            return node.module
    return package


def resolve(module: str, names: list[str]) -> list[str]:
    """The modules an import really loads: a name from a package's face is the module defining it."""
    if not module.startswith(("tools", "plugins", "filelib")):
        return []
    targets = []
    spec = ROOT.joinpath(*module.split("."))
    if spec.is_dir():  # a package: names are submodules or public names of its face
        face = importlib.import_module(module)
        for n in names:
            if (spec / f"{n}.py").exists() or (spec / n).is_dir():
                targets.append(f"{module}.{n}")
            elif n in getattr(face, "__all__", ()):
                targets.append(defining_module(module, face, n))
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


def ours(module: str) -> bool:
    return module.split(".")[0] in ("tools", "plugins", "filelib")


def test_filelib_imports_nothing_of_ours():
    bad = [
        f"{p.relative_to(ROOT)} imports {m}"
        for p in (ROOT / "filelib").rglob("*.py")
        for m, _ in imports(p)
        if ours(m) and not m.startswith("filelib")
    ]
    assert not bad, bad


def test_plugins_never_import_tools():
    bad = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "plugins").rglob("*.py")
        for module, _ in imports(path)
        if module == "tools" or module.startswith("tools.")
    ]
    assert not bad, bad


def test_plugins_are_kinds_importing_one_way_through_faces():
    """Every plugin module lives in a kind; a kind uses another only as KINDS allows, through its package;
    tools/ uses a kind through its package, never a module inside it."""
    stray = [p.name for p in (ROOT / "plugins").glob("*.py") if p.name != "__init__.py"]
    assert not stray, f"plugins/ modules outside a kind: {stray}"
    assert {p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()} == set(KINDS)
    bad = []
    for path in sources():
        me = module_name(path)
        mine = me.split(".")[1] if me.startswith("plugins.") else None
        for module, _ in imports(path):
            parts = module.split(".")
            if parts[0] != "plugins" or len(parts) < 2 or parts[1] == mine:
                continue
            if mine is not None and parts[1] not in KINDS[mine]:
                bad.append(f"{me} imports {module}: {mine} may not depend on {parts[1]}")
            elif len(parts) > 2:
                bad.append(f"{me} imports {module}: use the face `plugins.{parts[1]}`")
    assert not bad, "\n".join(bad)


def test_every_module_of_tools_is_in_a_stage():
    loose = [p.name for p in (ROOT / "tools").glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside a stage package (the layout rules would not see them): {loose}"
    packages = {p.name for p in (ROOT / "tools").iterdir() if (p / "__init__.py").exists()}
    assert packages == set(STAGES), packages ^ set(STAGES)


def test_no_tool_is_started_by_a_module_name_string():
    """`python -m tools.x` built from a string hides a dependency from the import graph: children are
    started from the imported `main` (tools.core.runinfo.command_of) instead."""
    modules = set(graph())
    bad = []
    for path in sources():
        tree = ast.parse(path.read_text())
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                text = node.value.strip()
                if text in modules and text not in NAMES_AS_DATA:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text!r}")
    assert not bad, "\n".join(bad)


def test_stages_import_one_way_through_public_faces():
    bad = []
    for path in sources():
        me = module_name(path)
        mine = stage_of(me)
        if mine is None or not (ROOT / "tools" / mine).is_dir():
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
        return found + [("plugins.selection.strategies", ["score"])] if path.name == "ifd.py" else found

    monkeypatch.setitem(globals(), "imports", planted)
    with pytest.raises(AssertionError, match="plugins.selection.ifd"):
        test_no_import_circles()


def test_modules_are_small_or_say_why():
    """Every module of ours under MAX_LINES lines or saying why near its top; every offender listed."""
    long = []
    for path in sources():
        text = path.read_text()
        n = text.count("\n")
        if n > MAX_LINES and "Longer than 400 lines because" not in text[:2000]:
            long.append(f"{path.relative_to(ROOT)}: {n} lines, no reason given")
    assert not long, "\n".join(long)


def test_every_stage_is_a_package_with_a_face():
    for stage in STAGES:
        pkg = ROOT / "tools" / stage
        assert (pkg / "__init__.py").exists(), stage
        face = importlib.import_module(f"tools.{stage}")
        for name in getattr(face, "__all__", ()):
            assert getattr(face, name) is not None, f"tools.{stage}.{name}"
