"""Structurally pruned LLaMA-family models: read, write and describe them (LLM-Pruner's format and a safe one).

LLM-Pruner-style pruning removes attention heads and MLP channels per layer, so layers differ in
width and no `config.json` can describe the model. Two formats hold such a model:

- **pickle** (what LLM-Pruner writes, `pruned_model.bin`): `torch.save({"model": nn.Module,
  "tokenizer": tokenizer})`. Loading it unpickles, which runs code named in the file, so `load`
  refuses it unless the caller passes `trust_pickle=True` (the `--trust-pickle` flag / the
  `trust_pickle: true` key): only open files you made or trust.
- **safe** (this project's, preferred): a folder with `model.safetensors` (tensors only, no code),
  `pruned.json` (the base config plus each layer's head count, key/value head count and MLP width:
  the per-layer shape manifest) and the tokenizer's own files. `load` rebuilds the module with the
  right width per layer and loads the tensors into it. `save_safe` writes it from any loaded model,
  so a pickle converts once (`python -m plugins.launchers.pruned convert IN OUT --trust-pickle`).

When every layer has the same widths the model is an ordinary HF model again: `save_hf` writes a plain
folder (config.json with the pruned sizes) that `from_pretrained` and LLaMA-Factory load directly.

Usage:
    python -m plugins.launchers.pruned describe PATH [--trust-pickle]
    python -m plugins.launchers.pruned convert PATH OUT_DIR [--trust-pickle]   # pickle -> safe folder
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from filelib import atomic_dir, atomic_write_json, run_main

MANIFEST = "pruned.json"
WEIGHTS = "model.safetensors"
FORMAT = "smalldata-pruned/1"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl")
MLP = ("gate_proj", "up_proj", "down_proj")


class PrunedModelError(ValueError):
    """A pruned model that cannot be read as asked; the message names the file and what to do."""


# ---------------------------------------------------------------------------------------- what a path is
def kind(path: str | Path) -> str | None:
    """'pickle' for a pickled-dict file, 'safe' for a folder with pruned.json, else None."""
    p = Path(path)
    if p.is_file() and p.suffix in PICKLE_SUFFIXES:
        return "pickle"
    if p.is_dir() and (p / MANIFEST).is_file():
        return "safe"
    return None


def is_pruned(path: str | Path) -> bool:
    return kind(path) is not None


# ---------------------------------------------------------------------------------------- shapes
def _layers(model):
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise PrunedModelError(f"{type(model).__name__}: not a LLaMA-family model (no model.layers)")
    return layers


def layer_widths(model) -> list[dict]:
    """Each decoder layer's widths, read from its projection matrices (the truth after pruning)."""
    out = []
    for i, layer in enumerate(_layers(model)):
        attn, mlp = layer.self_attn, layer.mlp
        hd = int(getattr(attn, "head_dim", 0) or model.config.head_dim)
        q, k = attn.q_proj.out_features, attn.k_proj.out_features
        if q % hd or k % hd:
            raise PrunedModelError(f"layer {i}: q/k widths {q}/{k} are not whole heads of {hd}")
        out.append(
            {
                "num_attention_heads": q // hd,
                "num_key_value_heads": k // hd,
                "intermediate_size": mlp.gate_proj.out_features,
            }
        )
    return out


def uniform_widths(model) -> dict | None:
    """The one set of widths every layer shares, or None when the layers differ."""
    widths = layer_widths(model)
    return widths[0] if all(w == widths[0] for w in widths) else None


def param_count(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _linear(old, in_f: int, out_f: int):
    import torch

    new = torch.nn.Linear(in_f, out_f, bias=old.bias is not None, device=old.weight.device)
    return new.to(old.weight.dtype)


def resize_layer(layer, heads: int, kv_heads: int, intermediate: int) -> None:
    """Give one decoder layer new widths (fresh, uninitialised weights; the caller loads or copies them)."""
    attn, mlp = layer.self_attn, layer.mlp
    hd, hidden = attn.head_dim, attn.q_proj.in_features
    if heads % kv_heads:
        raise PrunedModelError(f"{heads} heads cannot share {kv_heads} key/value heads evenly")
    attn.q_proj = _linear(attn.q_proj, hidden, heads * hd)
    attn.k_proj = _linear(attn.k_proj, hidden, kv_heads * hd)
    attn.v_proj = _linear(attn.v_proj, hidden, kv_heads * hd)
    attn.o_proj = _linear(attn.o_proj, heads * hd, hidden)
    # transformers 5 infers the head count from the projections; the GQA ratio is an attribute.
    attn.num_key_value_groups = heads // kv_heads
    attn.num_heads, attn.num_key_value_heads = heads, kv_heads  # what LLM-Pruner's older code reads
    mlp.gate_proj = _linear(mlp.gate_proj, hidden, intermediate)
    mlp.up_proj = _linear(mlp.up_proj, hidden, intermediate)
    mlp.down_proj = _linear(mlp.down_proj, intermediate, hidden)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = intermediate


def manifest(model) -> dict:
    cfg = model.config.to_dict()
    return {
        "format": FORMAT,
        "architecture": type(model).__name__,
        "config": cfg,
        "layers": layer_widths(model),
        "params": param_count(model),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "weights": WEIGHTS,
    }


# ---------------------------------------------------------------------------------------- reading
def load_pickle(path: str | Path, trust_pickle: bool = False):
    """(model, tokenizer) from LLM-Pruner's pickled dict; refused unless trust_pickle says so."""
    path = Path(path)
    if not trust_pickle:
        raise PrunedModelError(
            f"{path}: a pickled model runs code from the file when loaded; pass --trust-pickle "
            "(or `trust_pickle: true`) only for a file you made or trust, or convert it once to the "
            "safe format: python -m plugins.launchers.pruned convert PATH OUT_DIR --trust-pickle"
        )
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 (unpickling raises anything: say which file)
        raise PrunedModelError(f"{path}: cannot unpickle: {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict) or "model" not in obj or "tokenizer" not in obj:
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise PrunedModelError(f"{path}: expected a dict with 'model' and 'tokenizer', found {got}")
    model = obj["model"]
    layer_widths(model)  # a clear error now for a model we cannot describe
    return model, obj["tokenizer"]


def build_from_manifest(man: dict):
    """An empty module of the manifest's architecture and per-layer widths (weights on the meta device)."""
    import torch
    import transformers

    if man.get("format") != FORMAT:
        raise PrunedModelError(f"{MANIFEST}: format {man.get('format')!r}, expected {FORMAT!r}")
    cls = getattr(transformers, man["architecture"], None)
    if cls is None:
        raise PrunedModelError(f"{MANIFEST}: unknown architecture {man['architecture']!r}")
    config_cls = transformers.AutoConfig.for_model(man["config"]["model_type"]).__class__
    config = config_cls.from_dict(man["config"])
    with torch.device("meta"):
        model = cls(config)
    layers = _layers(model)
    if len(layers) != len(man["layers"]):
        raise PrunedModelError(f"{MANIFEST}: {len(man['layers'])} layer entries for {len(layers)} layers")
    for layer, w in zip(layers, man["layers"], strict=True):
        resize_layer(layer, w["num_attention_heads"], w["num_key_value_heads"], w["intermediate_size"])
    return model


def _rebuild_buffers(model) -> None:
    """Non-persistent buffers (rotary frequencies) are not in the file: recompute them on the CPU."""
    for name, module in model.named_modules():
        if any(b.is_meta for b in module.buffers(recurse=False)):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            fresh = type(module)(config=model.config)
            setattr(parent, name.rsplit(".", 1)[-1], fresh)


def load_safe(folder: str | Path):
    """(model, tokenizer) from the safe format: the module rebuilt from the manifest, tensors loaded."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    folder = Path(folder)
    try:
        man = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise PrunedModelError(f"{folder / MANIFEST}: unreadable manifest ({e})") from e
    model = build_from_manifest(man)
    state = load_file(str(folder / man.get("weights", WEIGHTS)))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    inp, outp = model.get_input_embeddings(), model.get_output_embeddings()
    if getattr(model.config, "tie_word_embeddings", False) and outp is not None:
        outp.weight = inp.weight if not inp.weight.is_meta else outp.weight
        if inp.weight.is_meta:
            inp.weight = outp.weight
        missing = [k for k in missing if not k.endswith(("lm_head.weight", "embed_tokens.weight"))]
    if missing or unexpected:
        raise PrunedModelError(
            f"{folder / WEIGHTS}: does not match {MANIFEST}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    _rebuild_buffers(model)
    model.eval()
    return model, AutoTokenizer.from_pretrained(str(folder))


def load(path: str | Path, trust_pickle: bool = False):
    """(model, tokenizer, kind) from either format."""
    k = kind(path)
    if k == "pickle":
        return (*load_pickle(path, trust_pickle), k)
    if k == "safe":
        return (*load_safe(path), k)
    raise PrunedModelError(
        f"{path}: not a pruned model (a {'/'.join(PICKLE_SUFFIXES)} pickled dict, or a folder with {MANIFEST})"
    )


# ---------------------------------------------------------------------------------------- writing
def save_pickle(model, tokenizer, path: str | Path) -> Path:
    """LLM-Pruner's format, written under a temporary name and renamed when complete."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"model": model, "tokenizer": tokenizer}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_safe(model, tokenizer, folder: str | Path) -> Path:
    """The safe format: model.safetensors + pruned.json + the tokenizer's files, as one atomic folder."""
    from safetensors.torch import save_model

    with atomic_dir(folder) as tmp:
        save_model(model, str(tmp / WEIGHTS))  # drops the tied copy of the embeddings
        atomic_write_json(tmp / MANIFEST, manifest(model))
        tokenizer.save_pretrained(str(tmp))
    return Path(folder)


def save_hf(model, tokenizer, folder: str | Path) -> Path | None:
    """A plain HF folder when every layer has the same widths (config.json says them); else None."""
    widths = uniform_widths(model)
    if widths is None:
        return None
    import copy

    config = copy.deepcopy(model.config)
    for key, value in widths.items():
        setattr(config, key, value)
    with atomic_dir(folder) as tmp:
        original = model.config
        model.config = config
        try:
            model.save_pretrained(str(tmp))
        finally:
            model.config = original
        tokenizer.save_pretrained(str(tmp))
    return Path(folder)


def save_like(model, tokenizer, source_kind: str, dest: str | Path) -> Path:
    """Write in the format the input came in: `dest` is the .bin file (pickle) or the folder (safe)."""
    if source_kind == "pickle":
        return save_pickle(model, tokenizer, dest)
    return save_safe(model, tokenizer, dest)


# ---------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=("describe", "convert"))
    ap.add_argument("path", type=Path)
    ap.add_argument("out", type=Path, nargs="?")
    ap.add_argument("--trust-pickle", action="store_true", help="allow unpickling (runs code from the file)")
    a = ap.parse_args(argv)
    try:
        model, tokenizer, k = load(a.path, a.trust_pickle)
    except PrunedModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.cmd == "describe":
        man = manifest(model)
        print(json.dumps({k2: man[k2] for k2 in ("architecture", "params", "dtype", "layers")}, indent=1))
        return 0
    if a.out is None:
        print("error: convert needs OUT_DIR", file=sys.stderr)
        return 2
    save_safe(model, tokenizer, a.out)
    print(f"wrote {a.out} (safe format: {WEIGHTS} + {MANIFEST}) from a {k} model")
    return 0


if __name__ == "__main__":
    run_main(main)
