"""Where a run's model comes from: the profile's base model, a finished adapter run (or one epoch's
checkpoint of it, `<run>@epochN`), a merged folder, or a GGUF file (`gguf:<file>`, served by llama.cpp;
tools/eval/served.py)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tools.core import llama_server
from tools.core.paths import Run
from tools.core.profiles import load_profile, local_model, same_model
from tools.eval.prompts import GenerateError

# Profile keys that change how a model loads for inference, passed through to LLaMA-Factory.
_PROFILE_PASSTHROUGH = ("quantization_bit", "quantization_method", "trust_remote_code", "infer_dtype")
_INFER_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _profile_extra(prof: dict) -> dict:
    """Loading options from a profile; its training `precision` becomes the inference dtype."""
    extra = {k: prof[k] for k in _PROFILE_PASSTHROUGH if k in prof}
    if "infer_dtype" not in extra and prof.get("precision") in _INFER_DTYPE:
        extra["infer_dtype"] = _INFER_DTYPE[prof["precision"]]
    return extra


@dataclass
class Source:
    run: Run
    kind: str  # base | adapter | merged | gguf
    model_name_or_path: str
    template: str
    adapter: Path | None = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "model_name_or_path": self.model_name_or_path,
            "adapter": str(self.adapter) if self.adapter else None,
            "template": self.template,
            **self.extra,
        }


def _model_path(p: str) -> str:
    local = local_model(p)
    return str(local) if local else p


def resolve_source(
    run: Run | str | None,
    model_path: str | Path | None = None,
    template: str | None = None,
    base_model: str | Path | None = None,
) -> Source:
    """Where a run's model comes from; a missing/unfinished run or a mismatched adapter is a clear error."""
    if model_path is not None and is_gguf_spec(model_path):
        return gguf_source(model_path, run, template)
    if model_path is not None:
        model_path = Path(model_path)
        if run is None:
            run = _export_run(model_path)
            if run is None:
                raise GenerateError(f"--model-path {model_path}: name the run to write under with --run")
        if not (model_path / "config.json").exists():
            raise GenerateError(f"--model-path {model_path}: no config.json there (not a model folder)")
        run = Run.parse(run) if isinstance(run, str) else run
        tpl = template or _profile_template(run.model)
        return Source(run, "merged", str(model_path.resolve()), tpl)
    if run is None:
        raise GenerateError("name a run (--run model/study/variant) or a model folder (--model-path)")
    run = Run.parse(run) if isinstance(run, str) else run
    if run.is_base:
        prof = load_profile(run.model)
        base = base_model or prof["model_name_or_path"]
        extra = _profile_extra(prof)
        return Source(run, "base", _model_path(str(base)), template or prof["template"], extra=extra)

    out = run.output_dir
    if not out.exists():
        raise GenerateError(
            f"run {run}: no output folder {out} (not trained yet? `make sweep STUDY={run.study}`)"
        )
    info = json.loads(run.run_json.read_text()) if run.run_json.exists() else {}
    if run.epoch is not None and run.done_marker.exists() and not run.adapter.exists():
        have = ", ".join(f"@epoch{r.epoch}" for r in run.trained.epochs()) or "none"
        raise GenerateError(
            f"run {run}: no checkpoint of epoch {run.epoch} in {out} (epochs with a checkpoint: {have}; "
            "a run keeps one per epoch when trained with save_strategy: epoch)"
        )
    if not run.is_finished():
        status = info.get("status", "unknown")
        raise GenerateError(
            f"run {run} is not finished (run.json status {status!r}, "
            f"{'no DONE marker' if not run.done_marker.exists() else 'no adapter_model.safetensors'} in {out})"
        )
    if run.is_full_model:  # full / freeze / GaLore / APOLLO / BAdam: the run folder is the whole model
        tpl = template or info.get("template") or _profile_template(run.model)
        return Source(run, "merged", str(out.resolve()), tpl)
    cfg_path = run.adapter_dir / "adapter_config.json"  # an epoch's checkpoint folder, or the run's
    adapter_cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    adapter_base = adapter_cfg.get("base_model_name_or_path")
    prof = None
    base = info.get("model_name_or_path") or adapter_base
    tpl = template or info.get("template")
    if base is None or tpl is None:
        prof = load_profile(run.model)
        base = base or prof["model_name_or_path"]
        tpl = tpl or prof["template"]
    if base_model is not None:
        base = str(base_model)
    if adapter_base and not same_model(adapter_base, base):
        raise GenerateError(
            f"run {run}: its adapter was trained on {adapter_base!r} ({cfg_path}), "
            f"not on {base!r}: an adapter of another base model"
        )
    extra = {}
    try:
        prof = prof or load_profile(run.model)
        extra = _profile_extra(prof)
    except (GenerateError, FileNotFoundError, ValueError):
        pass
    return Source(run, "adapter", _model_path(str(base)), tpl, adapter=run.adapter_dir, extra=extra)


def _export_run(path: Path) -> Run | None:
    """The run an export's path names (exports/<model>/<study>/<variant>[@epochN]/...), else None."""
    parts = path.resolve().parts
    if "exports" in parts and len(parts) >= parts.index("exports") + 4:
        i = parts.index("exports")
        return Run.parse("/".join(parts[i + 1 : i + 4]))
    return None


# ------------------------------------------------------------------------------------------- gguf
GGUF_PREFIX = "gguf:"


def is_gguf_spec(model_path: str | Path) -> bool:
    """`gguf:<file>`, or a path ending in .gguf: the source is a GGUF file, not a model folder."""
    text = str(model_path)
    return text.startswith(GGUF_PREFIX) or text.endswith(".gguf")


def gguf_source(spec: str | Path, run: Run | str | None = None, template: str | None = None) -> Source:
    """A GGUF file as a source: checked to be one, its quantisation and chat template read from its header
    and its sha256 taken. Answers go under `run`, else beside the run the file was exported from, as
    `<model>/<study>/<variant>.gguf-<name>[@epochN]` so they sit next to the Hugging Face run's."""
    text = str(spec)
    path = Path(text.removeprefix(GGUF_PREFIX))
    where = f"{GGUF_PREFIX}{path}"
    if template is not None:
        raise GenerateError(f"{where}: --template does not apply (a GGUF answers with its embedded template)")
    if not path.is_file():
        raise GenerateError(f"{where}: no such file" + (" (a folder)" if path.is_dir() else ""))
    try:
        if not llama_server.is_gguf(path):
            raise GenerateError(f"{where}: not a GGUF file (no GGUF magic at its start)")
        meta = llama_server.gguf_meta(
            path, ("general.file_type", "general.architecture", "tokenizer.chat_template")
        )
    except OSError as e:
        raise GenerateError(f"{where}: unreadable ({e.strerror or e})") from None
    except (ValueError, KeyError, IndexError) as e:
        raise GenerateError(f"{where}: a broken GGUF header ({e})") from None
    chat_template = meta.get("tokenizer.chat_template")
    if not chat_template:
        raise GenerateError(
            f"{where}: no tokenizer.chat_template in its header (export it with tools.export.gguf)"
        )
    label = re.sub(r"[^A-Za-z0-9_.+-]", "_", path.stem.removeprefix("model-")) or "model"
    if run is None:
        trained = _export_run(path)
        if trained is None:
            raise GenerateError(f"{where}: name the run to write its answers under with --run")
        run = Run(trained.model, trained.study, f"{trained.variant}.gguf-{label}", trained.epoch)
    run = Run.parse(run) if isinstance(run, str) else run
    from filelib import sha256_file

    extra = {
        "file": path.name,
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "quantization": llama_server.file_type_name(meta.get("general.file_type")) or label,
        "architecture": meta.get("general.architecture"),
        "chat_template_sha256": hashlib.sha256(chat_template.encode()).hexdigest(),
    }
    try:
        extra["llama_cpp"] = f"{llama_server.PYDIST} {llama_server.pydist_version()}"
    except llama_server.Missing:
        extra["llama_cpp"] = None
    return Source(run, "gguf", str(path.resolve()), "gguf:embedded", extra=extra)


def _profile_template(model: str) -> str:
    try:
        return load_profile(model)["template"]
    except (GenerateError, FileNotFoundError, KeyError, ValueError) as e:
        raise GenerateError(f"no --template given and no profile for model {model!r} to take it from") from e
