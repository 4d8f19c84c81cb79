"""A tiny random model for fast tests: SmolLM2's architecture and real tokenizer, a few layers.

Seeded, so two builds are identical; built in seconds into `models/tiny-smollm2/` (or any
folder), atomically. It takes the tokenizer from the embedded base model when that is built,
else straight from the GGUF file.

Usage:
    python -m tools.models.tiny [--out models/tiny-smollm2] [--layers 2] [--hidden 64] [--seed 0]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from filelib import atomic_dir, atomic_write_json, build_lock, check_output, claim, run_main
from tools.core.args import command, opt
from tools.core.paths import MODELS
from tools.models.base import BASE_MODEL_DIR, COMPLETE, builder_id, gguf_path, is_built

TINY_MODEL_DIR = MODELS / "tiny-smollm2"
OWNER = "tools.models.tiny (the tiny random model)"


def _builder() -> str:
    """This file and base.py, whose GGUF tokenizer (and its end-of-turn fix) the tiny model takes, directly
    or from the built base model's folder (the same vocabulary, ids and chat template: checked)."""
    import tools.models.base

    return builder_id(__file__, tools.models.base.__file__)


def load_tokenizer():
    from transformers import AutoTokenizer

    if is_built(BASE_MODEL_DIR):
        return AutoTokenizer.from_pretrained(BASE_MODEL_DIR)
    src = gguf_path()
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    tok.eos_token, tok.pad_token, tok.bos_token = "<|im_end|>", "<|im_end|>", "<|im_start|>"
    return tok


def build(
    out: Path = TINY_MODEL_DIR, layers: int = 2, hidden: int = 64, seed: int = 0, force: bool = False
) -> Path:
    check_output(out, OWNER, own_files=[COMPLETE])  # never over a folder of someone else's
    with build_lock(out):  # a second builder waits, then finds it built
        return _build(out, {"layers": layers, "hidden": hidden, "seed": seed}, force)


def _build(out: Path, spec: dict, force: bool) -> Path:
    layers, hidden, seed = spec["layers"], spec["hidden"], spec["seed"]
    done = out / COMPLETE
    if done.exists() and not force:
        import json

        built = json.loads(done.read_text())
        if built.get("spec") == spec and built.get("builder") == _builder():
            return out
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        record = {"spec": spec, "llamafactory_template": "smollm2", "builder": _builder()}
        atomic_write_json(tmp / COMPLETE, record)
        claim(tmp, OWNER)
    return out


@dataclass
class TinyArgs:
    out: Path = opt(TINY_MODEL_DIR, help="the model folder to build")
    layers: int = opt(2, help="decoder layers", min=1)
    hidden: int = opt(64, help="hidden size (4 heads of hidden/4)", min=8)
    seed: int = opt(0, help="the weights' seed", nonneg=True)
    force: bool = opt(False, help="rebuild a finished model")

    def check(self) -> list[str]:
        return [f"--hidden {self.hidden}: must be a multiple of 8"] if self.hidden % 8 else []


@command(TinyArgs, __doc__)
def main(a: TinyArgs) -> int:
    print(f"tiny model: {build(a.out, a.layers, a.hidden, a.seed, a.force)}")
    return 0


if __name__ == "__main__":
    run_main(main)
