"""A venv copied to another folder keeps its scripts' old `#!` lines; the tools must still start them."""

import os
import subprocess
import sys

import pytest

from tools.core import paths


def test_a_script_whose_shebang_points_nowhere_still_runs(tmp_path, monkeypatch):
    bin_dir = tmp_path / "copied-venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.symlink_to(sys.executable)
    script = bin_dir / "some-cli"
    script.write_text("#!/old/checkout/.venv/bin/python\nimport sys\nprint('ran', *sys.argv[1:])\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))

    with pytest.raises(FileNotFoundError):  # what exec'ing it by path does: the failure CI met
        subprocess.run([str(script)], check=True)
    cmd = paths.venv_bin("some-cli")
    assert cmd == [str(python), str(script)]
    assert subprocess.run([*cmd, "train"], capture_output=True, text=True, check=True).stdout == "ran train\n"


def test_a_script_outside_the_venv_comes_from_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", f"/bin{os.pathsep}/usr/bin")
    assert paths.venv_bin("true") in (["/bin/true"], ["/usr/bin/true"])
    assert paths.venv_bin("no-such-script-here") == ["no-such-script-here"]
    assert paths.llamafactory_cli()[-1].endswith("llamafactory-cli")


def test_the_makefile_never_execs_a_venv_script_by_its_shebang():
    """Every recipe starts the venv's scripts through $(PY) (ruff is a binary and python itself is fine)."""
    import re

    from tools.core.paths import ROOT

    direct = []
    for n, line in enumerate((ROOT / "Makefile").read_text().splitlines(), 1):
        if not line.startswith("\t"):
            continue
        for cmd in re.split(r"&&|\|\||;|\|", line.strip().lstrip("@")):
            words = [w for w in cmd.split() if not re.fullmatch(r"[A-Z_]+=\S*", w)]
            first = words[0] if words else ""
            name = first.removeprefix("$(VENV)/bin/") if first.startswith("$(VENV)/bin/") else None
            if first == "$(LF)" or (name is not None and name not in ("python", "ruff")):
                direct.append(f"Makefile:{n}: {line.strip()}")
    assert direct == []
