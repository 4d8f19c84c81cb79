"""GGUF export (tools/export/gguf.py): refusals, atomic files, the chat template carried into the GGUF and
the Ollama Modelfile, and the round trip through llama.cpp's converters and llama-server (tiny and
embedded models). The llama-server tests need `make setup-gguf` (a one-time build) and skip, saying so,
until it has run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.export.test_export import fake_finished_run, train_tiny_adapter
from tools.core import llama_server, warm
from tools.core.paths import Run
from tools.export import gguf, gguf_template, llamacpp

RUN = Run("tiny", "t", "a")

try:
    llamacpp.source_root()
    CONVERTERS = ""
except llama_server.Missing as e:
    CONVERTERS = str(e)
needs_converters = pytest.mark.skipif(bool(CONVERTERS), reason=CONVERTERS)
needs_server = pytest.mark.skipif(
    not llama_server.have_binaries(),
    reason=f"llama.cpp binaries not built in {llama_server.bin_dir()}: run `make setup-gguf` (compiles llama.cpp once)",
)


# ---------------------------------------------------------------------------------------- refusals
@needs_converters
def test_unknown_quantisation_is_refused_with_the_list(out_dir, capsys):
    assert gguf.main(["--run", str(RUN), "--quant", "f16,q9_zz"]) == 2
    err = capsys.readouterr().err
    assert "q9_zz" in err and "q4_k_m" in err and "q8_0" in err and "f16" in err
    assert not (out_dir / "exports").exists()


@needs_converters
def test_quant_types_are_llama_cpps(out_dir):
    known = llamacpp.quant_types()
    assert {"f16", "q8_0", "q4_k_m", "q5_k_m", "q6_k", "q4_0"} <= set(known)
    assert "copy" not in known


@needs_converters
def test_an_unmerged_run_is_refused_with_the_command(out_dir, capsys):
    fake_finished_run(out_dir)
    assert gguf.main(["--run", str(RUN), "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert f"python -m tools.export --run {RUN}" in err and "--merge" in err
    assert not (out_dir / "exports").exists()


@pytest.mark.parametrize(
    ("given", "threads"), [("1", 1), (" 3,1", 3), ("0", None), ("many", None), (None, None)]
)
def test_llama_server_takes_this_processs_share_of_the_cores(given, threads, monkeypatch):
    """OMP_NUM_THREADS's first entry (what `make test` gives each worker), else every core (None)."""
    import os

    if given is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", given)
    assert llama_server.default_threads() == (threads or os.cpu_count())


def test_a_failed_write_leaves_no_final_name(tmp_path):
    final = tmp_path / "gguf" / "model-f16.gguf"
    with pytest.raises(RuntimeError, match="boom"), gguf.partial(final) as tmp:
        tmp.write_bytes(b"GGUF" + b"\0" * 10)
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="not a GGUF"), gguf.partial(final) as tmp:
        tmp.write_bytes(b"half")  # what a killed converter leaves
    assert list(final.parent.iterdir()) == []
    with gguf.partial(final) as tmp:
        tmp.write_bytes(b"GGUF" + b"\0" * 10)
    assert [p.name for p in final.parent.iterdir()] == ["model-f16.gguf"]


def test_a_byte_level_tokenizer_marked_byte_fallback_is_staged_as_byte_level(tiny_model, tmp_path):
    fixed = gguf.byte_level_tokenizer(tiny_model / "tokenizer.json")  # as transformers built it from the GGUF
    assert (
        fixed is not None
        and fixed["model"]["byte_fallback"] is False
        and fixed["decoder"]["type"] == "ByteLevel"
    )
    (tmp_path / "tokenizer.json").write_text(json.dumps(fixed))
    assert gguf.byte_level_tokenizer(tmp_path / "tokenizer.json") is None  # nothing left to change
    assert gguf.byte_level_tokenizer(tmp_path / "absent.json") is None


# ---------------------------------------------------------------------------------------- templates
def _three_renderings(model: Path, name: str, user: str, system: str | None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    t = gguf_template.lf_template(name, tok)
    lf, ids = gguf_template.lf_prompt(t, tok, user, system)
    jinja = gguf_template.render_jinja(gguf_template.gguf_jinja(t, tok), tok, user, system)
    mf = gguf_template.parse_modelfile(gguf_template.modelfile("m.gguf", t, tok, gguf.Decoding.greedy()))
    ollama = gguf_template.render_ollama(mf["TEMPLATE"], user, system or mf.get("SYSTEM"))
    return tok, lf, ids, jinja, ollama, mf


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2", "llama2"])
@pytest.mark.parametrize("system", [None, "Answer in one word."])
def test_gguf_and_modelfile_templates_render_llamafactorys_prompt(base_model, name, system):
    user = "Name a colour.\nJust one."
    tok, lf, ids, jinja, ollama, mf = _three_renderings(base_model, name, user, system)
    assert jinja == lf and ollama == lf, (lf, jinja, ollama)
    assert tok(jinja, add_special_tokens=False)["input_ids"] == ids  # the same tokens, not only text
    if name == "smollm2":
        assert lf.startswith("<|im_start|>system\n") and lf.endswith("<|im_start|>assistant\n")
        assert mf["stop"] == ["<|im_end|>"]
    else:
        assert "[INST]" in lf and lf.endswith(" [/INST]")
    assert mf["PARAMETER"]["temperature"] == "0" and mf["PARAMETER"]["top_k"] == "1"


def test_modelfile_parameters_follow_a_sampled_point():
    point = gguf.Decoding.parse("t0.7_p0.9_k40", max_new_tokens=256)
    params = gguf_template.point_parameters(point)
    assert params == {
        "num_predict": 256, "repeat_penalty": 1.0, "temperature": 0.7, "top_p": 0.9, "seed": 42, "top_k": 40,
    }  # fmt: skip


def test_the_decoding_point_comes_from_the_studys_choice(out_dir):
    from tools.core.paths import report_dir

    assert gguf.decoding_for(RUN, None)[0].name == "greedy"
    report_dir("t").mkdir(parents=True)
    (report_dir("t") / "choice.json").write_text(
        json.dumps({"best": {"run": "tiny/t/a@epoch2", "decoding": "t0.7_p0.9"}})
    )
    point, src = gguf.decoding_for(RUN, None)
    assert point.name == "t0.7_p0.9" and src.endswith("choice.json")
    assert gguf.decoding_for(Run("tiny", "t", "b"), None)[0].name == "greedy"  # another run's choice
    assert gguf.decoding_for(RUN, "greedy_rp1.1")[0].repetition_penalty == 1.1


# ---------------------------------------------------------------------------------------- round trips
@pytest.fixture()
def tiny_run(tiny_trained) -> Path:
    """The session's tiny run (tests/export/conftest.py); each test copies it into its own root (_install)."""
    return tiny_trained


def _install(src_root: Path, out_dir: Path) -> None:
    shutil.copytree(src_root / "saves", out_dir / "saves", dirs_exist_ok=True)


@pytest.mark.slow
@needs_converters
def test_tiny_round_trip_files_template_and_lora(tiny_run, out_dir, monkeypatch):
    _install(tiny_run, out_dir)
    # the converters as `python -m tools.export.gguf` starts them: fresh processes (no warm server up)
    monkeypatch.setattr(warm, "running", lambda: False)
    rec = gguf.export_gguf(RUN, ["f16", "q8_0"], merge=True, verify=False)
    out = gguf.gguf_dir(RUN)
    log = (out / "convert.log").read_text()
    started = [line.split()[2].rsplit("/", 1)[-1] for line in log.splitlines() if line.startswith("+ ")]
    assert started == ["convert_hf_to_gguf.py"] * 2 + ["convert_lora_to_gguf.py"], log[-2000:]
    assert "(warm start)" not in log
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "model-f16.gguf",
            "model-q8_0.gguf",
            "lora-f16.gguf",
            "Modelfile",
            "Modelfile.f16",
            "Modelfile.q8_0",
            "gguf_report.json",
            "convert.log",
        ]
    ), names  # fmt: skip  (no partial file, no staging folder left)
    assert rec["lora"] == "lora-f16.gguf" and not rec["verified"]
    assert gguf.model_file(RUN, "q8_0").stat().st_size < gguf.model_file(RUN, "f16").stat().st_size
    # The GGUF carries LLaMA-Factory's template (the training one), not the base model's own.
    meta = gguf.read_gguf_meta(gguf.model_file(RUN, "f16"))
    assert meta["tokenizer.chat_template"] == rec["chat_template"]
    # SmolLM2's byte-level BPE as llama.cpp's gpt2 kind with its smollm pre-tokenizer (not a `llama`
    # SentencePiece vocabulary that llama-server cannot tokenize with)
    tok_meta = gguf.read_gguf_meta(
        gguf.model_file(RUN, "f16"), ("tokenizer.ggml.model", "tokenizer.ggml.pre")
    )
    assert tok_meta == {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm"}
    assert "You are a helpful AI assistant named SmolLM, trained by Hugging Face." in rec["chat_template"]
    lora_meta = gguf.read_gguf_meta(gguf.lora_file(RUN), ("general.type", "adapter.type"))
    assert lora_meta == {"general.type": "adapter", "adapter.type": "lora"}
    mf = gguf_template.parse_modelfile((out / "Modelfile").read_text())
    assert mf["FROM"] == "./model-f16.gguf" and mf["stop"] == ["<|im_end|>"]


@pytest.mark.slow
@needs_server
def test_tiny_round_trip_verified_in_llama_server(tiny_run, out_dir):
    _install(tiny_run, out_dir)
    rec = gguf.export_gguf(RUN, ["f16", "q4_k_m"], merge=True, limit=3, tokens=8, ppl_tokens=4)
    assert rec["verified"] and [f["quant"] for f in rec["files"]] == ["f16", "q4_k_m"]
    if warm.running():  # the shared run was trained warm in this process: the converter is its child
        log = (gguf.gguf_dir(RUN) / "convert.log").read_text()
        assert "convert_hf_to_gguf.py" in log and "(warm start)" in log, log[-2000:]
    for f in rec["files"]:
        assert f["template_matches"], f["template_rendered"]  # llama.cpp's own jinja rendering
        assert f["tokens_match"], f["tokens_llama_cpp"]  # and its own tokenizer on it
        assert f["prompts"] == 3 and f["tokens_per_s"] > 0 and f["ppl_llama_cpp"] and f["ppl_hf"]
        assert f["flagged"] == (f["agreement"] < gguf.THRESHOLD)
    md = (gguf.gguf_dir(RUN) / "gguf_report.md").read_text()
    assert "| model-q4_k_m.gguf |" in md and "ppl HF (merged)" in md


@pytest.mark.slow
@needs_server
def test_embedded_model_f16_matches_the_merged_model_token_for_token(base_model, tmp_path_factory, out_dir):
    root = tmp_path_factory.mktemp("gguf_embedded")
    run = Run("tiny", "e", "a")  # no profile needed: run.json names the embedded model
    train_tiny_adapter(base_model, root / "saves/tiny/lora/e/a", steps=2)
    _install(root, out_dir)
    rec = gguf.export_gguf(run, ["f16", "q8_0"], merge=True, lora=False, limit=6, tokens=32, ppl_tokens=16)
    f16, q8 = rec["files"]
    assert f16["agreement"] == 1.0 and not f16["flagged"], f16["per_prompt"]
    assert abs(f16["ppl_llama_cpp"] / f16["ppl_hf"] - 1) < 0.01, (f16["ppl_llama_cpp"], f16["ppl_hf"])
    assert q8["ppl_llama_cpp"] / q8["ppl_hf"] < 1.05 and q8["template_matches"] and q8["tokens_match"]
