"""The documentation site builds with --strict, every page is in the nav, the README stays short and points at
pages that exist, names only modules, files and make targets that exist, and the contracts page gives the
paths `tools.core.paths` builds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tools.core.paths import ROOT, Run, report_dir, study_dir

DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = sorted(DOCS.rglob("*.md"))
TEXTS = [README, *PAGES]
# Names the code no longer has: a page naming one is stale (the layout of tools/flows, plugins/ by kind,
# filelib/, docs/contracts.md; the pinned huggingface_hub ships `hf`, not a working `huggingface-cli`).
RETIRED = [
    "tools.train.sweep",
    "tools.train.evaluation",
    "tools/train/evaluation",
    "tools.train.preflight",
    "tools.demo",
    "tools.recovery_demo",
    "plugins.peft_train",
    "plugins.pruned_train",
    "plugins.fileio",
    "plugins/fileio",
    "plugins.registry",
    "plugins.loaders",
    "plugins.select",
    "plugins.strategies",
    "plugins.curriculum",
    "plugins.publish",
    "tools/CONTRACTS.md",
    "huggingface-cli",
]
MODULE = re.compile(r"python3? -m ((?:tools|plugins|filelib)(?:\.\w+)*)(?!\.?<)")
MAKE = re.compile(r"(?<![\w-])make ((?:[A-Z_]+=\S+ )*)([a-z][a-z0-9-]*)")
REPO_PATH = re.compile(r"`((?:tools|plugins|filelib|templates|tests|experiments|docs)/[\w./-]*)`")


def nav_files(nav) -> list[str]:
    out = []
    for item in nav:
        for value in item.values() if isinstance(item, dict) else [item]:
            out += nav_files(value) if isinstance(value, list) else [value]
    return out


def config() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_the_site_builds_strict_with_every_page(built_site):
    built = {p.relative_to(built_site).as_posix() for p in built_site.rglob("index.html")}
    for page in nav_files(config()["nav"]):
        html = "index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html"
        assert html in built, f"{page} was not built"


def test_every_page_is_in_the_nav_and_the_theme_is_material():
    cfg = config()
    assert cfg["theme"]["name"] == "material" and cfg.get("strict") is True
    listed = set(nav_files(cfg["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert listed == on_disk, (
        f"not in the nav: {sorted(on_disk - listed)}; missing: {sorted(listed - on_disk)}"
    )


def test_the_readme_is_short_and_links_to_pages_that_exist():
    lines = README.read_text().splitlines()
    assert len(lines) <= 180, f"README.md has {len(lines)} lines: the details belong in docs/"
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert any(link.startswith("docs/") for link in local)
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing
    assert not (ROOT / "tools" / "CONTRACTS.md").exists(), "the contracts live in docs/contracts.md"


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_pages_name_no_retired_module_or_command(path):
    text = path.read_text()
    found = [name for name in RETIRED if re.search(re.escape(name) + r"(?![\w/-])", text)]
    assert not found, f"{path.name} names what the code no longer has: {found}"


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_pages_name_modules_files_and_targets_that_exist(path):
    text = path.read_text()
    bad = []
    for module in set(MODULE.findall(text)):
        base = ROOT.joinpath(*module.split("."))
        if not (base.with_suffix(".py").exists() or (base / "__main__.py").exists()):
            bad.append(f"python -m {module}: no such command module")
    targets = set(re.findall(r"^([a-zA-Z0-9_-]+):", (ROOT / "Makefile").read_text(), re.M))
    for _, target in MAKE.findall(text):
        if target not in targets:
            bad.append(f"make {target}: no such target")
    for rel in set(REPO_PATH.findall(text)):
        if not (ROOT / rel.rstrip(".")).exists():
            bad.append(f"{rel}: no such file or folder")
    assert not bad, "\n".join(sorted(bad))


def test_the_contracts_page_gives_the_paths_the_code_builds(monkeypatch, tmp_path):
    """Each path of the contracts table, with its placeholders filled in, is the one `tools.core.paths` builds."""
    monkeypatch.setenv("SMALLDATA_OUT", str(tmp_path))
    text = (DOCS / "contracts.md").read_text()
    run = Run("MODEL", "STUDY", "VARIANT")

    def shown(p: Path) -> str:
        s = str(p).replace(str(tmp_path), "<out>").replace(str(ROOT) + "/", "")
        for word in ("MODEL", "STUDY", "VARIANT", "TESTSET", "DECODING"):
            s = s.replace(word, f"<{word.lower()}>")
        return s

    out = shown(run.output_dir)
    expected = {
        "Run.config": shown(run.config),
        "Run.output_dir": out + "/",
        "Run.tb_dir": shown(run.tb_dir).replace(out, "<output_dir>") + "/",
        "Run.full_weights": shown(run.full_weights).replace(out, "<output_dir>"),
        "Run.eval_root": shown(run.eval_root).replace(out, "<output_dir>") + "/",
        "Run.export_dir": shown(run.export_dir) + "/",
        "report_dir(study)": shown(report_dir("STUDY")) + "/",
        "study_dir(model, study)": shown(study_dir("MODEL", "STUDY")) + "/",
    }
    rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| ")}
    for attr, path in expected.items():
        row = next((line for key, line in rows.items() if f"`{attr}`" in key), None)
        assert row is not None, f"the contracts table has no row for {attr}"
        assert f"`{path}`" in row, f"{attr}: the code builds {path}; the page says {row}"
    epoch = run.at_epoch(3)
    assert f"`{shown(epoch.eval_root).replace(out, '<output_dir>').replace('3', 'N')}/`" in text
    assert f"`{shown(epoch.export_dir).replace('3', 'N')}/`" in text
    assert shown(run.eval_dir("TESTSET", "DECODING")) == f"{out}/eval/<testset>/<decoding>"
