"""Merge a run's LoRA adapter into its base model under exports/, verified by logits.

Renders an export config from templates/export.yaml.j2 into the run folder (`export.yaml`),
runs `llamafactory-cli export` into a temporary folder beside `Run.export_dir`, then checks the
result: the base model plus the adapter (PEFT) and the merged model must give the same logits on
a few fixed prompts, within `TOLERANCE[dtype]` (computed in float32 on the CPU). Only then is the
folder renamed into place with `export.json` (the check's figures); a failed merge or check
leaves nothing in exports/. Every curriculum stage is a run of its own, so each stage exports on
its own and a worse last stage can be rolled back to the one before.

Quantised export (merge, then quantise, for serving) is a second step on the merged, checked
model: `--quantize 4` renders `export_quantization_bit` and a calibration file; GPTQ needs a GPU
and the packages optimum and gptqmodel.

Usage:
    python -m tools.export --run smollm2_135m/rank/r8 [--dtype float32] [--device cpu|auto]
    python -m tools.export --run llama2_7b/rank/r8 --dtype bfloat16 --device auto --quantize 4
    python -m tools.export --run smollm2_135m/rank/r8 --render-only    # write export.yaml only
    python -m tools.export --study curriculum --model smollm2_135m    # each stage on its own
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from filelib import atomic_dir, atomic_write_json, atomic_write_text, read_jsonl, run_main, sha256_file
from tools.core.args import command, opt
from tools.core.paths import ROOT, TEMPLATES, Run, exports_dir, llamafactory_cli, runs_of_study, saves_dir
from tools.core.portable import make_portable
from tools.core.streams import streams_to
from tools.export.logits import CHECK_PROMPTS, TOLERANCE, CheckFailed, logit_check  # noqa: F401
from tools.export.needs import check_quantize
from tools.export.runs import Refused, default_dtype, refuse_quantised_base, run_info, versions  # noqa: F401

TEMPLATE = "export.yaml.j2"


# ---------------------------------------------------------------- config
def _shown(path: str | Path) -> str:
    """Paths inside the repo are written relative to it (configs run from the repo root)."""
    p = Path(path)
    with contextlib.suppress(ValueError):
        return str(p.resolve().relative_to(ROOT))
    return str(p)


def render_config(
    run: Run,
    info: dict,
    export_dir: Path,
    dtype: str = "float32",
    device: str = "cpu",
    export_size: int = 5,
    quantization_bit: int | None = None,
    quantization_dataset: str | None = None,
    quantization_nsamples: int = 128,
    quantization_maxlen: int = 512,
    command: str | None = None,
) -> str:
    """The export YAML. With `quantization_bit`, it quantises the merged model (no adapter)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    if quantization_bit is not None and not quantization_dataset:
        raise Refused("quantised export needs a calibration dataset (export_quantization_dataset)")
    text = env.get_template(TEMPLATE).render(
        command=command or f"python -m tools.export --run {run}",
        run=run.name,
        model_name_or_path=_shown(run.export_dir) if quantization_bit else info["model_name_or_path"],
        adapter_name_or_path=None if quantization_bit else _shown(info["adapter_dir"]),
        template=info["template"],
        infer_dtype="float16" if quantization_bit else dtype,
        export_dir=_shown(export_dir),
        export_size=export_size,
        export_device=device,
        quantization_bit=quantization_bit,
        quantization_dataset=quantization_dataset and _shown(quantization_dataset),
        quantization_nsamples=quantization_nsamples,
        quantization_maxlen=quantization_maxlen,
    )
    yaml.safe_load(text)  # a template bug surfaces here, not inside llamafactory-cli
    return text


def quantised_dir(run: Run, bits: int) -> Path:
    return run.export_dir.parent / f"{run.export_dir.name}-gptq{bits}bit"


def calibration_file(run: Run, info: dict, maxlen: int, out: Path) -> Path:
    """GPTQ calibration texts from the run's own training rows, joined into chunks above `maxlen`.

    LLaMA-Factory samples windows of exactly `maxlen` tokens from texts longer than that, so short
    Alpaca rows are concatenated; about 6 characters per token is a safe overestimate.
    """
    resolved = (info.get("run_json") or {}).get("resolved_config") or {}
    names = [d.strip() for d in str(resolved.get("dataset", "")).split(",") if d.strip()]
    dataset_dir = ROOT / str(resolved.get("dataset_dir", "data"))
    rows: list[dict] = []
    info_file = dataset_dir / "dataset_info.json"
    registry = json.loads(info_file.read_text()) if info_file.exists() else {}
    for name in names:
        entry = registry.get(name)
        if entry and (dataset_dir / entry.get("file_name", "")).is_file():
            path = dataset_dir / entry["file_name"]
            rows += list(read_jsonl(path)) if path.suffix == ".jsonl" else json.loads(path.read_text())
    if not rows:
        raise Refused(
            f"run {run}: cannot find its training rows ({names or 'no dataset'} in {info_file}) "
            "for GPTQ calibration; pass --quant-dataset FILE (json/jsonl with a `text` column)"
        )
    texts, chunk = [], ""
    for r in rows:
        chunk += "\n\n".join(str(r[k]) for k in ("instruction", "input", "output") if r.get(k)) + "\n\n"
        if len(chunk) > maxlen * 6:
            texts.append({"text": chunk})
            chunk = ""
    if chunk:
        texts.append({"text": chunk * (maxlen * 6 // max(len(chunk), 1) + 1)})
    atomic_write_text(out, "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts))
    return out


# ---------------------------------------------------------------- export
def llamafactory_export(config: Path, export_dir: Path, log: Path) -> None:
    """`llamafactory-cli export config export_dir=...` (the override keeps the YAML's real target).

    In a process that has imported LLaMA-Factory already (a warm child: tools.core.warm), the same
    function the CLI calls runs here, its output in the log: a new process would only import it again."""
    if "llamafactory.train.tuner" in sys.modules:
        return _export_here(config, export_dir, log)
    cmd = [*llamafactory_cli(), "export", str(config), f"export_dir={export_dir}"]
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    with open(log, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"llamafactory-cli export failed (exit {proc.returncode}); log {log}:\n{tail}")


def _export_here(config: Path, export_dir: Path, log: Path) -> None:
    from llamafactory.train.tuner import export_model

    args = {**yaml.safe_load(config.read_text()), "export_dir": str(export_dir)}
    log.write_text(
        f"$ export_model({config}, export_dir={export_dir}) in this process (LLaMA-Factory imported)\n"
    )
    error = None
    with streams_to(log), contextlib.chdir(ROOT):  # where the CLI runs, for the YAML's relative paths
        try:
            export_model(args)
        except Exception as e:  # LLaMA-Factory's own refusals and failures, as the CLI would exit with them
            import traceback

            traceback.print_exc()
            error = e
    if error is not None:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"LLaMA-Factory's export failed ({error}); log {log}:\n{tail}")


def _prune_empty_parents(path: Path, stop: Path) -> None:
    """Remove folders made for a failed export, so a failure leaves nothing in exports/."""
    path, stop = path.resolve(), stop.resolve()
    while path != stop and stop in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent
    with contextlib.suppress(OSError):
        stop.rmdir()


def export_run(
    run: Run,
    dtype: str | None = None,
    device: str = "cpu",
    tolerance: float | None = None,
    prompts: list[str] | None = None,
    full_precision_base: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Merge, check and rename into `run.export_dir`; returns the export.json record."""
    info = run_info(run)
    refuse_quantised_base(info, full_precision_base)
    final = run.export_dir
    record_path = final / "export.json"
    adapter_sha = sha256_file(run.adapter)
    if record_path.exists() and not force:
        old = json.loads(record_path.read_text())
        if old.get("adapter_sha256") == adapter_sha:
            return old
    dtype = dtype or default_dtype(info)
    if dtype not in TOLERANCE:
        raise Refused(f"dtype {dtype!r}: use one of {', '.join(TOLERANCE)}")
    tol = TOLERANCE[dtype] if tolerance is None else tolerance
    prompts = prompts or CHECK_PROMPTS
    config = run.adapter_dir / "export.yaml"  # beside the adapter it merges (an epoch's: its checkpoint)
    atomic_write_text(config, render_config(run, info, final, dtype=dtype, device=device))
    t0 = time.time()
    try:
        with atomic_dir(final) as tmp:
            llamafactory_export(config, tmp, run.adapter_dir / "export.log")
            check = logit_check(info["base_path"], info["adapter_dir"], tmp, prompts, tol)
            if not check["passed"]:
                raise CheckFailed(
                    f"run {run}: merged model differs from base+adapter by {check['max_abs_diff']:.3g} "
                    f"> tolerance {tol:g} on the check prompts; export discarded"
                )
            shutil.copy(config, tmp / "export.yaml")
            cannot_read = make_portable(tmp)  # transformers 4.x's spellings beside 5.x's
            record = {
                "run": run.name,
                "export_dir": str(final),
                "model_name_or_path": info["model_name_or_path"],
                "adapter": info["adapter_dir"],
                "adapter_sha256": adapter_sha,
                "template": info["template"],
                "dtype": dtype,
                "device": device,
                "check": check,
                "trained_quantization_bit": info["quantization_bit"],
                "seconds": round(time.time() - t0, 1),
                "versions": versions(),
                "cannot_read": cannot_read,
            }
            atomic_write_json(tmp / "export.json", record)
    except BaseException:
        _prune_empty_parents(final.parent, exports_dir())
        raise
    return record


def quantise_export(
    run: Run,
    bits: int,
    dataset: Path | None = None,
    nsamples: int = 128,
    maxlen: int = 512,
    device: str = "auto",
) -> Path:
    """GPTQ-quantise the merged, checked export into `<export_dir>-gptq<bits>bit` (GPU)."""
    info = run_info(run)
    if not (run.export_dir / "export.json").exists():
        raise Refused(f"run {run}: export it first (the merged, checked model is what gets quantised)")
    config = run.output_dir / f"export_gptq{bits}bit.yaml"
    if dataset is None:
        dataset = calibration_file(run, info, maxlen, run.output_dir / "gptq_calibration.jsonl")
    final = quantised_dir(run, bits)
    text = render_config(
        run,
        info,
        final,
        device=device,
        quantization_bit=bits,
        quantization_dataset=str(dataset),
        quantization_nsamples=nsamples,
        quantization_maxlen=maxlen,
        command=f"python -m tools.export --run {run} --quantize {bits}",
    )
    atomic_write_text(config, text)
    with atomic_dir(final) as tmp:
        llamafactory_export(config, tmp, run.output_dir / f"export_gptq{bits}bit.log")
        shutil.copy(config, tmp / "export.yaml")
        record = {"run": run.name, "quantization_bit": bits, "from": str(run.export_dir)}
        record["cannot_read"] = make_portable(tmp)
        atomic_write_json(tmp / "export.json", record)
    return final


def _export_one(run: Run, a: ExportArgs) -> None:
    if a.quantize and not a.render_only:  # GPTQ's packages and GPU, before anything is merged or written
        check_quantize(a.quantize, Refused)
    if a.render_only:
        info = run_info(run)
        dtype = a.dtype or default_dtype(info)
        text = render_config(run, info, run.export_dir, dtype, a.device)
        print(f"export config: {atomic_write_text(run.adapter_dir / 'export.yaml', text)}")
        return
    rec = export_run(run, a.dtype, a.device, a.tolerance, None, a.full_precision_base, a.force)
    c = rec["check"]
    print(
        f"exported {run} -> {rec['export_dir']} ({rec['dtype']}); logit check max |diff| "
        f"{c['max_abs_diff']:.2e} <= {c['tolerance']:g} (adapter effect {c['adapter_effect']:.2e})"
    )
    for line in rec.get("cannot_read", []):
        print(f"note: {line}")
    if not c["check_is_informative"]:
        print("warning: the adapter changes logits less than the tolerance; the check cannot tell it apart")
    if a.quantize:
        q = quantise_export(run, a.quantize, a.quant_dataset, a.quant_nsamples, a.quant_maxlen)
        print(f"quantised {a.quantize}-bit -> {q}")


@dataclass
class ExportArgs:
    run: str | None = opt(None, help="model/study/variant (or its saves/ folder)")
    study: str | None = opt(None, help="every finished run of a study (e.g. each curriculum stage)")
    model: str | None = opt(None, help="with --study: only this model's runs")
    dtype: str | None = opt(None, help="merged weights' dtype", choices=lambda: sorted(TOLERANCE))
    device: str = opt("cpu", help="export_device", choices=("cpu", "auto"))
    tolerance: float | None = opt(None, help="override TOLERANCE[dtype]", positive=True)
    full_precision_base: bool = opt(False, help="allow a QLoRA run's fp base")
    force: bool = opt(False, help="re-export when export.json exists")
    render_only: bool = opt(False, help="write the run's export.yaml and stop")
    quantize: int | None = opt(None, help="then GPTQ (GPU)", choices=(2, 3, 4, 8))
    quant_dataset: Path | None = opt(None, help="calibration json/jsonl (`text`)")
    quant_nsamples: int = opt(128, help="GPTQ calibration samples", min=1)
    quant_maxlen: int = opt(512, help="GPTQ calibration tokens per sample", min=1)

    def check(self) -> list[str]:
        return [] if bool(self.run) != bool(self.study) else ["--run or --study: give one of them"]


@command(ExportArgs, __doc__)
def main(a: ExportArgs) -> int:
    try:
        runs = [Run.parse(a.run)] if a.run else runs_of_study(a.study, a.model)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: no runs of study {a.study!r} under {saves_dir()}", file=sys.stderr)
        return 2
    failed = 0
    for run in runs:
        if a.study and not run.is_finished():
            print(f"skipped {run}: not finished")
            continue
        try:
            _export_one(run, a)
        except (Refused, CheckFailed, ValueError, RuntimeError) as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


if __name__ == "__main__":
    run_main(main)
