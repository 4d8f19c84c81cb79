"""Exports read the same under transformers 4.x and 5.x (issue 32): both rope spellings, a tokenizer class
4.x knows, and the same logits when a pinned transformers 4.57 in a separate environment loads them.

The 4.x environment is a venv built once per test session (transformers 4.57 and huggingface_hub 0.36
from the registry; torch, tokenizers and the rest seen from the project's venv through a .pth file); the
tests that need it are skipped, saying why, when it cannot be made (no registry). The file-level checks
(config.json and tokenizer_config.json read with 4.x's rules) run everywhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tools.core.portable import make_portable

TF4 = "transformers==4.57.6"
HUB4 = "huggingface_hub==0.36.2"
PROMPT = "Explain, step by step and at some length, how a Python list differs from a tuple. " * 6

LOAD4 = r"""
import json, sys, torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompt, out = sys.argv[1], sys.argv[2], sys.argv[3]
tok = AutoTokenizer.from_pretrained(folder)
ids = tok(prompt, return_tensors="pt").input_ids
model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
with torch.no_grad():
    logits = model(input_ids=ids).logits[0].float()
torch.save({"ids": ids[0], "logits": logits}, out)
print(json.dumps({"version": transformers.__version__, "tokenizer": type(tok).__name__,
                  "rope_theta": getattr(model.config, "rope_theta", None)}))
"""


@pytest.fixture(scope="session")
def tf4_python(tmp_path_factory) -> Path:
    """A python whose transformers is 4.57 (everything else from the project's venv)."""
    venv = tmp_path_factory.mktemp("tf4") / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True)
    py = venv / "bin" / "python"
    if made.returncode != 0:
        pytest.skip(f"cannot make a venv for transformers 4.x: {made.stderr.decode()[-300:]}")
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", TF4, HUB4],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if pip.returncode != 0:
        pytest.skip(f"cannot install {TF4} from the registry (offline?): {pip.stderr.strip()[-300:]}")
    site = subprocess.check_output(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    )
    ours = sysconfig.get_paths()["purelib"]
    (Path(site.decode().strip()) / "zz_project_venv.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n"
    )
    v = subprocess.run(
        [str(py), "-c", "import transformers; print(transformers.__version__)"], capture_output=True
    )
    if v.returncode != 0 or not v.stdout.decode().startswith("4.57"):
        pytest.skip(f"the transformers 4.x venv does not import: {v.stderr.decode()[-300:]}")
    return py


def read_as_4x(folder: Path) -> dict:
    """What transformers 4.57's code takes from the files: config.rope_theta is the top-level key (absent:
    the class default, 10000 for LLaMA), the tokenizer class must be one 4.x has."""
    import transformers

    cfg = json.loads((folder / "config.json").read_text())
    tc = json.loads((folder / "tokenizer_config.json").read_text())
    known_to_4x = {"PreTrainedTokenizerFast", "LlamaTokenizerFast", "GPT2TokenizerFast", "LlamaTokenizer"}
    return {
        "rope_theta": cfg.get("rope_theta", 10000.0),
        "rope_theta_5x": (cfg.get("rope_parameters") or {}).get("rope_theta"),
        "tokenizer_ok": tc.get("tokenizer_class") in known_to_4x
        and hasattr(transformers, tc["tokenizer_class"]),
        "chat_template_in_config": "chat_template" in tc,
    }


def compare_with_4x(py: Path, folder: Path, tmp: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp / "logits4.pt"
    p = subprocess.run([str(py), "-c", LOAD4, str(folder), PROMPT, str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    seen = json.loads(p.stdout.strip().splitlines()[-1])
    assert seen["version"].startswith("4.57")
    got = torch.load(out)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok(PROMPT, return_tensors="pt").input_ids
    assert ids[0].tolist() == got["ids"].tolist()  # the same tokens
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        want = model(input_ids=ids).logits[0].float()
    seen["max_abs_diff"] = float((want - got["logits"]).abs().max())
    seen["rope_theta_5x"] = model.config.rope_parameters["rope_theta"]
    return seen


def _tiny_with_rope(tiny_model: Path, dest: Path, theta: float = 100000.0) -> Path:
    """The tiny model as transformers 5 writes it, with SmolLM2-135M's rope_theta (not 4.x's default)."""
    shutil.copytree(tiny_model, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_theta": theta, "rope_type": "default"}
    cfg.pop("rope_theta", None)
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def test_make_portable_writes_both_spellings(tiny_model, tmp_path):
    folder = _tiny_with_rope(tiny_model, tmp_path / "m")
    assert read_as_4x(folder)["rope_theta"] == 10000.0  # today's files: 4.x reads the wrong rope
    assert not read_as_4x(folder)["tokenizer_ok"]
    assert make_portable(folder) == []
    seen = read_as_4x(folder)
    assert seen["rope_theta"] == seen["rope_theta_5x"] == 100000.0
    assert seen["tokenizer_ok"] and seen["chat_template_in_config"]
    # a scaled rope gets 4.x's rope_scaling; one rope per layer type cannot be said to 4.x: one line says so
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_theta": 5e5, "rope_type": "linear", "factor": 2.0}
    (folder / "config.json").write_text(json.dumps(cfg))
    make_portable(folder)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["rope_theta"] == 5e5 and cfg["rope_scaling"] == {
        "rope_type": "linear",
        "type": "linear",
        "factor": 2.0,
    }
    cfg["rope_parameters"] = {"full_attention": {"rope_theta": 1e6}, "sliding_attention": {"rope_theta": 1e4}}
    (folder / "config.json").write_text(json.dumps(cfg))
    notes = make_portable(folder)
    assert len(notes) == 1 and "transformers 4.x" in notes[0] and "sliding_attention" in notes[0]


@pytest.mark.slow  # a second environment (transformers 4.57) in a fresh process
def test_embedded_base_reads_the_same_under_4x(tf4_python, base_model, tmp_path):
    from tools.models.base import is_current

    folder = base_model  # the session's build: this code's (its builder recorded), not a cache's older one
    assert is_current(folder)
    assert json.loads((folder / "BUILD_COMPLETE.json").read_text())["cannot_read"] == []
    assert read_as_4x(folder)["rope_theta"] == 100000.0
    seen = compare_with_4x(tf4_python, folder, tmp_path)
    assert seen["rope_theta"] == seen["rope_theta_5x"] == 100000.0
    assert seen["tokenizer"] == "PreTrainedTokenizerFast"
    assert seen["max_abs_diff"] < 1e-3, seen


@pytest.mark.slow  # a real merge, read in a second environment
def test_merged_export_reads_the_same_under_4x(tf4_python, tiny_model, out_dir, tmp_path):
    """A real merge (LLaMA-Factory's export through tools.export, in this process) of a LoRA adapter on a
    rope-100000 model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tools.core.paths import Run
    from tools.export import export

    base = _tiny_with_rope(tiny_model, tmp_path / "base")
    run = Run("tiny", "t", "portable")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # a visible adapter effect
    run.output_dir.mkdir(parents=True)
    peft.save_pretrained(run.output_dir)
    rj = {"model_name_or_path": str(base), "template": "smollm2", "status": "finished", "run": run.name}
    (run.output_dir / "run.json").write_text(json.dumps(rj))
    (run.output_dir / "DONE").write_text("")
    rec = export.export_run(run)
    assert rec["check"]["passed"] and rec["cannot_read"] == []
    seen = compare_with_4x(tf4_python, run.export_dir, tmp_path)
    assert seen["rope_theta"] == 100000.0 and seen["tokenizer"] == "PreTrainedTokenizerFast"
    assert seen["max_abs_diff"] < 1e-3, seen


def test_llama_pro_expansion_is_portable(tiny_model, tmp_path):
    from tools.models.llama_pro import expand

    base = _tiny_with_rope(tiny_model, tmp_path / "base")
    out = expand(str(base), 2, tmp_path / "pro")
    seen = read_as_4x(out)
    assert seen["rope_theta"] == seen["rope_theta_5x"] == 100000.0 and seen["tokenizer_ok"]
