"""GGUF export of a merged run, made with llama.cpp's own tools and verified in llama.cpp.

From the merged Hugging Face folder (`python -m tools.export --run <run>`; `--merge` runs it first,
otherwise an unmerged run is refused with that command), under `<export>/gguf/`:

- `model-<quant>.gguf` per requested quantisation: f32/f16/bf16/q8_0 straight from llama.cpp's
  converter (`convert_hf_to_gguf.py --outtype`), every other llama.cpp type (q4_k_m, q5_k_m, ...) by
  `llama-quantize` from the f16 file. The GGUF carries LLaMA-Factory's chat template (the one the run
  was trained with) as `tokenizer.chat_template`.
- `lora-f16.gguf`: the adapter alone (`convert_lora_to_gguf.py`), for `llama-server -m <base gguf>
  --lora lora-f16.gguf`: one base file, adapters swapped.
- `Modelfile` (Ollama: FROM the first requested file, TEMPLATE, SYSTEM, stop tokens, PARAMETERs from the
  decoding point chosen on dev, else greedy) and `Modelfile.<quant>` for each file.
- `gguf_report.json` and `gguf_report.md`: per file, llama.cpp (llama-server on 127.0.0.1) answering the
  dev prompts greedily beside the merged model in transformers: the share of prompts whose first
  `--tokens` tokens are identical, the reference perplexity of both over the first `--ppl-tokens`
  answer tokens (teacher-forced, full vocabulary), size, tokens/s, and whether llama.cpp's rendering
  of the embedded template equals LLaMA-Factory's prompt; a file below `--threshold` agreement is
  flagged.

Every file is written under a temporary name beside its final one and renamed only when complete
(and, for a GGUF, when its header reads back); a failed or killed step leaves no final name behind.
An unknown quantisation is refused with the list llama.cpp knows.

Usage:
    python -m tools.export.gguf --run smollm2_135m/demo/r8 [--quant f16,q8_0,q4_k_m] [--merge]
    python -m tools.export.gguf --run smollm2_135m/demo/r8 --no-verify      # files only
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelib import atomic_write_json, atomic_write_text, run_main
from tools.core import llama_server, warm
from tools.core.args import command, opt
from tools.core.paths import DATA, Run, report_dir
from tools.export import gguf_template as tpl
from tools.export import gguf_verify, llamacpp
from tools.export.gguf_template import Decoding
from tools.export.runs import Refused, run_info

DEFAULT_QUANTS = ("f16", "q8_0")
THRESHOLD = 0.75  # a quantised file whose greedy agreement falls below this is flagged
DEV_SET = "demo_dev"
GGUF_MAGIC = llama_server.GGUF_MAGIC


def gguf_dir(run: Run) -> Path:
    return run.export_dir / "gguf"


def model_file(run: Run, quant: str) -> Path:
    return gguf_dir(run) / f"model-{quant}.gguf"


def lora_file(run: Run) -> Path:
    return gguf_dir(run) / "lora-f16.gguf"


# ---------------------------------------------------------------------------------------- files
@contextlib.contextmanager
def partial(final: Path, gguf: bool = True) -> Iterator[Path]:
    """A temporary name beside `final`, renamed onto it only when the body succeeds (and a GGUF's
    header reads back); removed on any failure or interrupt."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        if gguf:
            with open(tmp, "rb") as f:
                if f.read(4) != GGUF_MAGIC:
                    raise RuntimeError(f"{tmp}: not a GGUF file (no GGUF magic)")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _run(cmd: list[str], log: Path, env: dict | None = None) -> None:
    """One step's process; llama.cpp's Python converters are children of this process's warm server where
    one is up already (a process that trained warm before it converts, a test worker: torch and
    transformers imported once), else fresh, as `python -m tools.export.gguf` always starts them."""
    if warm.running() and cmd[0] == sys.executable:
        returncode = warm.run_command(
            cmd, log, Path.cwd(), dict(os.environ if env is None else env)
        ).returncode
    else:
        with open(log, "a") as f:
            f.write("+ " + " ".join(cmd) + "\n")
            f.flush()
            returncode = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{Path(cmd[1]).name if len(cmd) > 1 else cmd[0]} failed ({returncode}); "
                           f"{log}:\n" + "\n".join(tail))  # fmt: skip


def stage_with_template(merged: Path, stage: Path, chat_template: str) -> Path:
    """The merged folder as the converter should see it: its files linked, the tokenizer config
    carrying `chat_template` (and no separate chat_template file that would win over it), and a
    byte-level BPE tokenizer described as one (`byte_level_tokenizer`)."""
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    fixed = byte_level_tokenizer(merged / "tokenizer.json")
    if fixed is not None:
        (stage / "tokenizer.json").write_text(json.dumps(fixed, ensure_ascii=False))
    for p in merged.iterdir():
        if (
            p.is_file()
            and not (stage / p.name).exists()
            and p.name
            not in (
                "tokenizer_config.json",
                "chat_template.jinja",
                "chat_template.json",
            )
        ):
            (stage / p.name).symlink_to(p.resolve())
    cfg_path = merged / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    cfg["chat_template"] = chat_template
    (stage / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    return stage


def byte_level_tokenizer(path: Path) -> dict | None:
    """A byte-level BPE tokenizer.json that says `byte_fallback` (transformers writes it so when it
    builds a tokenizer from a GGUF, as the embedded SmolLM2's is built) with its decoder made
    byte-level; None when it needs no change. llama.cpp's converter takes `byte_fallback` for a
    SentencePiece-style vocabulary and writes a `llama` tokenizer that llama-server cannot tokenize
    with (`unordered_map::at`); a byte-level pre-tokenizer maps every byte to a token, so byte
    fallback never happens and the tokenizer is GPT-2's kind (`gpt2`, the pre-tokenizer by its hash)."""
    if not path.exists():
        return None
    tj = json.loads(path.read_text())
    model, pre = tj.get("model") or {}, tj.get("pre_tokenizer") or {}
    kinds = [p.get("type") for p in pre.get("pretokenizers", [pre])]
    if model.get("type") != "BPE" or not model.get("byte_fallback") or "ByteLevel" not in kinds:
        return None
    model["byte_fallback"] = False
    tj["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    return tj


def convert(stage: Path, out: Path, outtype: str, log: Path) -> Path:
    with partial(out) as tmp:
        cmd = [*llamacpp.converter(), str(stage), "--outfile", str(tmp), "--outtype", outtype]
        _run(cmd, log, llamacpp.converter_env())
    return out


def quantize(src: Path, out: Path, quant: str, log: Path) -> Path:
    with partial(out) as tmp:
        _run([str(llama_server.binary("llama-quantize")), str(src), str(tmp), quant.upper()], log)
    return out


def convert_lora(adapter: Path, base: Path, out: Path, log: Path) -> Path:
    with partial(out) as tmp:
        cmd = [*llamacpp.converter("convert_lora_to_gguf.py"), "--base", str(base), "--outtype", "f16"]
        _run([*cmd, "--outfile", str(tmp), str(adapter)], log, llamacpp.converter_env())
    return out


def read_gguf_meta(path: Path, keys: tuple[str, ...] = ("tokenizer.chat_template",)) -> dict[str, Any]:
    """String and number metadata of a GGUF file (gguf-py's reader)."""
    return llama_server.gguf_meta(path, keys)


# ---------------------------------------------------------------------------------------- choice
def decoding_for(run: Run, given: str | None, max_new_tokens: int = 512) -> tuple[Decoding, str]:
    """The Modelfile's decoding point: as given, else the study's choice on dev when it is this run,
    else greedy; with where it came from."""
    if given:
        return Decoding.parse(given, max_new_tokens=max_new_tokens), "--decoding"
    path = report_dir(run.study) / "choice.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        best = json.loads(path.read_text())["best"]
        if best and Run.parse(best["run"]).trained.name == run.trained.name:
            return Decoding.parse(best["decoding"], max_new_tokens=max_new_tokens), str(path)
    return Decoding.greedy(max_new_tokens=max_new_tokens), "default (greedy)"


# ---------------------------------------------------------------------------------------- export
def _merged(run: Run, merge: bool) -> Path:
    merged = run.export_dir
    if not (merged / "export.json").exists():
        if not merge:
            raise Refused(
                f"run {run} is not merged yet (no {merged / 'export.json'}): run "
                f"`python -m tools.export --run {run}` (make export RUN={run}) first, or pass --merge"
            )
        from tools.export.export import export_run

        export_run(run)
    return merged


def export_gguf(
    run: Run | str,
    quants: list[str] | tuple[str, ...] = DEFAULT_QUANTS,
    merge: bool = False,
    lora: bool = True,
    verify: bool = True,
    testset: str = DEV_SET,
    limit: int = 16,
    tokens: int = 32,
    ppl_tokens: int = 32,
    threshold: float = THRESHOLD,
    decoding: str | None = None,
    dataset_dir: Path = DATA,
) -> dict[str, Any]:
    """Convert, quantise, write the Modelfile and (with `verify`) the report; returns the report record."""
    run = Run.parse(run) if isinstance(run, str) else run
    known = llamacpp.quant_types()
    bad = [q for q in quants if q not in known]
    if bad:
        raise Refused(f"quantisation {', '.join(bad)}: llama.cpp knows {', '.join(known)}")
    if verify or any(q not in llamacpp.CONVERTER_TYPES for q in quants):
        llama_server.binary("llama-server" if verify else "llama-quantize")  # Missing, before any work
    info = run_info(run)
    merged = _merged(run, merge)
    out = gguf_dir(run)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "convert.log"
    log.write_text("")

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    template = tpl.lf_template(info["template"], tokenizer)
    chat_template = tpl.gguf_jinja(template, tokenizer)
    stage = stage_with_template(merged, out / f".stage-{os.getpid()}", chat_template)
    files: dict[str, Path] = {}
    t0 = time.time()
    try:
        needs_f16 = any(q not in llamacpp.CONVERTER_TYPES for q in quants)
        for q in [q for q in quants if q in llamacpp.CONVERTER_TYPES] + (["f16"] if needs_f16 else []):
            if q not in files:
                files[q] = convert(stage, model_file(run, q), q, log)
        for q in quants:
            if q not in files:
                files[q] = quantize(files["f16"], model_file(run, q), q, log)
        lora_path = None
        if lora and info.get("adapter_dir") and Path(info["base_path"]).is_dir():
            lora_path = convert_lora(Path(info["adapter_dir"]), Path(info["base_path"]), lora_file(run), log)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    convert_s = time.time() - t0

    point, point_from = decoding_for(run, decoding)
    for i, q in enumerate(quants):
        text = tpl.modelfile(files[q].name, template, tokenizer, point)
        atomic_write_text(out / f"Modelfile.{q}", text)
        if i == 0:
            atomic_write_text(out / "Modelfile", text)

    record: dict[str, Any] = {
        "run": run.name,
        "merged": str(merged),
        "template": info["template"],
        "chat_template": chat_template,
        "quants": list(quants),
        "files": [{"file": files[q].name, "size_bytes": files[q].stat().st_size} for q in quants],
        "lora": lora_path.name if lora_path else None,
        "decoding": point.name,
        "decoding_from": point_from,
        "llama_cpp": f"{llamacpp.PYDIST} {llamacpp.pydist_version()}",
        "convert_s": round(convert_s, 1),
        "verified": False,
    }
    if verify:
        rows = gguf_verify.dev_rows(testset, dataset_dir)[:limit]
        hf = gguf_verify.hf_reference(merged, info["template"], rows, tokens, ppl_tokens)
        results = [
            gguf_verify.verify_file(files[q], hf, tokens, threshold, out / f"server-{q}.log") for q in quants
        ]
        for q, r in zip(quants, results, strict=True):
            r["quant"] = q
        record.update(
            verified=True, testset=testset, prompts=len(rows), tokens=tokens, ppl_tokens=ppl_tokens,
            threshold=threshold, hf_tokens_per_s=hf["tokens_per_s"], files=results,
        )  # fmt: skip
        atomic_write_text(out / "gguf_report.md", gguf_verify.report_markdown(record))
    atomic_write_json(out / "gguf_report.json", record)
    return record


# ---------------------------------------------------------------------------------------- command
def _quant_choices() -> list[str]:
    try:
        return llamacpp.quant_types()
    except llama_server.Missing:
        return list(llamacpp.CONVERTER_TYPES)


@dataclass
class GgufArgs:
    run: str = opt(help="the run to export (model/study/variant)", required=True)
    quant: list[str] = opt(
        list(DEFAULT_QUANTS), help="quantisations, comma-separated", split=",", choices=_quant_choices
    )
    merge: bool = opt(False, help="merge the run first (tools.export) when it has no merged export")
    lora: bool = opt(True, help="also write the adapter alone as a LoRA GGUF")
    verify: bool = opt(True, help="answer the dev prompts in llama.cpp and write the report")
    testset: str = opt(DEV_SET, help="the prompts the check answers")
    limit: int = opt(16, help="prompts checked", min=1)
    tokens: int = opt(32, help="greedy tokens compared per prompt", min=1)
    ppl_tokens: int = opt(32, help="reference answer tokens scored per prompt", min=1)
    threshold: float = opt(THRESHOLD, help="agreement below this is flagged", min=0, max=1)
    decoding: str | None = opt(None, help="decoding point for the Modelfile (default: the study's choice)")


@command(GgufArgs, __doc__)
def main(a: GgufArgs) -> int:
    try:
        rec = export_gguf(
            a.run, a.quant, merge=a.merge, lora=a.lora, verify=a.verify, testset=a.testset, limit=a.limit,
            tokens=a.tokens, ppl_tokens=a.ppl_tokens, threshold=a.threshold, decoding=a.decoding,
        )  # fmt: skip
    except (Refused, llama_server.Missing, ValueError) as e:
        print(e, file=sys.stderr)
        return 2
    out = gguf_dir(Run.parse(a.run))
    print(f"GGUF files in {out}: {', '.join(f['file'] for f in rec['files'])}" + (
        f", {rec['lora']}" if rec["lora"] else ""))  # fmt: skip
    if rec["verified"]:
        print((out / "gguf_report.md").read_text())
    return 0


if __name__ == "__main__":
    run_main(main)
