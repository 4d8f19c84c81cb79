"""Model folders every supported transformers reads the same (issue 32).

transformers 5 writes `rope_parameters` and the tokenizer class `TokenizersBackend`; 4.4x-4.5x read
`rope_theta` at config.json's top level (absent: the class default, 10000 for LLaMA, silently) and fail
on a tokenizer class they do not have. Every Hugging Face folder the project writes (the embedded base
model, merged, quantised, pruned and LLaMA-Pro exports) goes through `make_portable`, which writes 4.x's
spellings beside 5.x's; what cannot be said to a consumer comes back as one line each, for the export's
record and its output. Used by tools.models and tools.export (both may import only the core).
"""

from __future__ import annotations

import json
from pathlib import Path

from filelib import atomic_write_json

# tokenizer classes of transformers 5 that 4.x does not have: its fast tokenizer reads the same tokenizer.json
NEW_TOKENIZER_CLASSES = {"TokenizersBackend", "TokenizersBackendFast"}


def make_portable(folder: str | Path) -> list[str]:
    """Write transformers 4.x's spellings beside 5.x's in a saved model folder (in place): `rope_theta` (and
    `rope_scaling` for a scaled rope) at config.json's top level from `rope_parameters`, the tokenizer class
    `PreTrainedTokenizerFast` for a tokenizer.json-backed tokenizer, the chat template inside
    tokenizer_config.json (4.4x reads it only there). Returns one line per consumer that still cannot
    read the folder (empty when every supported version can)."""
    folder = Path(folder)
    notes: list[str] = []
    cfg_path = folder / "config.json"
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        new = dict(cfg)
        for sub in [new, *(v for k, v in new.items() if k.endswith("_config") and isinstance(v, dict))]:
            notes += _rope_both_ways(sub)
        if new != cfg:
            atomic_write_json(cfg_path, new)
    tc_path = folder / "tokenizer_config.json"
    if tc_path.exists():
        tc = json.loads(tc_path.read_text())
        new = dict(tc)
        if new.get("tokenizer_class") in NEW_TOKENIZER_CLASSES:
            if (folder / "tokenizer.json").exists():
                new["tokenizer_class"] = "PreTrainedTokenizerFast"
            else:
                notes.append(
                    f"transformers 4.x: cannot load this tokenizer ({tc['tokenizer_class']} without tokenizer.json)"
                )
        jinja = folder / "chat_template.jinja"
        if "chat_template" not in new and jinja.exists():
            new["chat_template"] = jinja.read_text()
        if isinstance(new.get("extra_special_tokens"), list):  # 4.x expects a {name: token} mapping
            new["additional_special_tokens"] = new.pop("extra_special_tokens")
        if new != tc:
            atomic_write_json(tc_path, new)
    return notes


def _rope_both_ways(cfg: dict) -> list[str]:
    rp = cfg.get("rope_parameters")
    if not isinstance(rp, dict):
        return []
    if rp and all(isinstance(v, dict) for v in rp.values()):  # one rope per layer type (5.x only)
        first = next(iter(rp.values()))
        if "rope_theta" in first:
            cfg.setdefault("rope_theta", first["rope_theta"])
        kinds = ", ".join(sorted(rp))
        return [
            f"transformers 4.x: reads one rope for every layer; this model has one per layer type ({kinds})"
        ]
    if "rope_theta" in rp:
        cfg["rope_theta"] = rp["rope_theta"]
    if "partial_rotary_factor" in rp:
        cfg.setdefault("partial_rotary_factor", rp["partial_rotary_factor"])
    if rp.get("rope_type", "default") != "default":
        scaling = {k: v for k, v in rp.items() if k not in ("rope_theta", "partial_rotary_factor")}
        cfg["rope_scaling"] = {**scaling, "type": scaling["rope_type"]}
    return []
