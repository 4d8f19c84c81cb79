"""The `gguf:` source kind (tools/eval/source.py, tools/eval/served.py): a GGUF file read and refused without
llama.cpp, then served by a real llama-server and answered through the same generation and judge path as
the Hugging Face sources. The served tests need `make setup-gguf` (a one-time build) and skip, saying so,
until it has run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from filelib import atomic_write_json, read_jsonl, sha256_file
from tests.eval.test_generate import FIELDS, PROMPTS
from tools.core import llama_server
from tools.core.paths import Run, exports_dir
from tools.eval import generate as gen
from tools.eval.decoding import DecodingPoint
from tools.eval.prompts import GenerateError
from tools.eval.served import CTX, sampling
from tools.eval.source import resolve_source

needs_server = pytest.mark.skipif(
    not llama_server.have_binaries(),
    reason=f"llama.cpp binaries not built in {llama_server.bin_dir()}: run `make setup-gguf` (compiles llama.cpp once)",
)


@pytest.fixture()
def dataset_dir(tmp_path) -> Path:
    """tests/eval/test_generate.py's five prompts as the registered set mini_eval (p3 has no reference)."""
    d = tmp_path / "data"
    atomic_write_json(d / "mini.json", PROMPTS)
    atomic_write_json(d / "dataset_info.json", {"mini_eval": {"file_name": "mini.json"}})
    return d


def write_gguf(
    path: Path, file_type: int = 7, chat_template: str | None = "{{ messages[0]['content'] }}"
) -> Path:
    """A GGUF header as llama.cpp's converter writes one (metadata only, no tensors)."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_file_type(file_type)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def one_line_refusal(capsys, args: list[str], out_dir: Path) -> str:
    assert gen.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert not (out_dir / "saves").exists()  # refused before anything was written
    return err


# ---------------------------------------------------------------------------------------- without llama.cpp
def test_a_gguf_under_exports_answers_beside_its_run(out_dir):
    path = write_gguf(exports_dir() / "tiny/t/a/gguf/model-q8_0.gguf")
    s = resolve_source(None, f"gguf:{path}")
    assert s.kind == "gguf" and s.run == Run("tiny", "t", "a.gguf-q8_0") and s.adapter is None
    assert s.model_name_or_path == str(path.resolve())
    d = s.describe()
    assert d["kind"] == "gguf" and d["quantization"] == "q8_0" and d["sha256"] == sha256_file(path)
    assert d["file"] == "model-q8_0.gguf" and d["size_bytes"] == path.stat().st_size
    # one epoch's export: its epoch carries over; the quantisation is read from the header, not the name
    epoch = write_gguf(exports_dir() / "tiny/t/a@epoch2/gguf/mine.gguf", file_type=15)
    s = resolve_source(None, str(epoch))  # a .gguf path needs no prefix
    assert s.run == Run("tiny", "t", "a.gguf-mine", 2) and s.describe()["quantization"] == "q4_k_m"
    assert resolve_source("tiny/t/other", f"gguf:{epoch}").run == Run("tiny", "t", "other")


def test_a_gguf_elsewhere_needs_a_run_and_takes_no_template(out_dir, tmp_path):
    path = write_gguf(tmp_path / "elsewhere" / "model-f16.gguf", file_type=1)
    with pytest.raises(GenerateError, match="name the run"):
        resolve_source(None, f"gguf:{path}")
    with pytest.raises(GenerateError, match="--template does not apply"):
        resolve_source("tiny/t/a", f"gguf:{path}", template="smollm2")
    bare = write_gguf(tmp_path / "bare.gguf", chat_template=None)
    with pytest.raises(GenerateError, match="no tokenizer.chat_template"):
        resolve_source("tiny/t/a", f"gguf:{bare}")


def test_missing_and_non_gguf_files_are_refused_in_one_line(out_dir, tmp_path, capsys, dataset_dir):
    base = ["--run", "tiny/t/a", "--testset", "mini_eval", "--dataset-dir", str(dataset_dir)]
    err = one_line_refusal(capsys, [*base, "--model-path", f"gguf:{tmp_path / 'nope.gguf'}"], out_dir)
    assert "nope.gguf" in err and "no such file" in err
    fake = tmp_path / "model-q8_0.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf at all")
    err = one_line_refusal(capsys, [*base, "--model-path", f"gguf:{fake}"], out_dir)
    assert str(fake) in err and "not a GGUF file" in err
    err = one_line_refusal(capsys, [*base, "--model-path", f"gguf:{tmp_path}"], out_dir)
    assert "(a folder)" in err


def test_a_gguf_without_llama_server_is_refused_naming_the_build(
    out_dir, tmp_path, capsys, monkeypatch, dataset_dir
):
    monkeypatch.setenv("SMALLDATA_LLAMA_CPP", str(tmp_path / "no-binaries"))
    path = write_gguf(exports_dir() / "tiny/t/a/gguf/model-q8_0.gguf")
    base = ["--testset", "mini_eval", "--dataset-dir", str(dataset_dir), "--model-path", f"gguf:{path}"]
    assert "make setup-gguf" in one_line_refusal(capsys, base, out_dir)
    assert "--dtype does not apply" in one_line_refusal(capsys, [*base, "--dtype", "float32"], out_dir)


def test_decoding_points_map_onto_llama_cpps_samplers():
    greedy = sampling(DecodingPoint.greedy(), 7)
    assert greedy["samplers"] == ["top_k"] and greedy["top_k"] == 1 and greedy["temperature"] == 0.0
    assert greedy["seed"] == 7 and greedy["min_p"] == 0.0
    rp = sampling(DecodingPoint.parse("greedy_rp1.1"), 7)
    assert (
        rp["samplers"] == ["penalties", "top_k"]
        and rp["repeat_penalty"] == 1.1
        and rp["repeat_last_n"] == CTX
    )
    sampled = sampling(DecodingPoint.parse("t0.7_p0.9_k40"), 3)
    assert sampled["samplers"] == ["temperature", "top_k", "top_p"]  # transformers' order of warpers
    assert (sampled["temperature"], sampled["top_p"], sampled["top_k"]) == (0.7, 0.9, 40)


# ---------------------------------------------------------------------------------------- served
@pytest.fixture(scope="module")
def tiny_gguf(tiny_model, tmp_path_factory) -> tuple[Path, str]:
    """The tiny model as an f32 GGUF carrying LLaMA-Factory's smollm2 template, made by llama.cpp's own
    converter (no training: the eval path is what is tested here), and that template's jinja."""
    from transformers import AutoTokenizer

    from tools.export import gguf as export_gguf
    from tools.export import gguf_template as tpl

    root = tmp_path_factory.mktemp("gguf_source")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    jinja = tpl.gguf_jinja(tpl.lf_template("smollm2", tok), tok)
    stage = export_gguf.stage_with_template(tiny_model, root / "stage", jinja)
    out = export_gguf.convert(stage, root / "model-f32.gguf", "f32", root / "convert.log")
    return out, jinja


@pytest.mark.slow
@needs_server
def test_a_gguf_is_served_generated_and_judged_beside_the_hf_model(
    tiny_gguf,
    tiny_model,
    out_dir,
    dataset_dir,
    monkeypatch,
):
    from transformers import AutoTokenizer

    from tools.eval.prompts import user_message
    from tools.export import gguf_template as tpl
    from tools.judge import cli as judge

    src, _ = tiny_gguf
    path = exports_dir() / "tiny/t/a/gguf" / src.name
    path.parent.mkdir(parents=True)
    path.write_bytes(src.read_bytes())
    common = [
        "--testset",
        "mini_eval",
        "--dataset-dir",
        str(dataset_dir),
        "--max-new-tokens",
        "12",
        "--quiet",
    ]
    assert gen.main([*common, "--model-path", f"gguf:{path}"]) == 0
    assert gen.main([*common, "--model-path", str(tiny_model), "--template", "smollm2", "--run", "tiny/t/a",
                     "--dtype", "float32"]) == 0  # fmt: skip
    g_run, hf_run = Run("tiny", "t", "a.gguf-f32"), Run("tiny", "t", "a")
    g_rows = list(read_jsonl(g_run.predictions("mini_eval", "greedy")))
    hf_rows = list(read_jsonl(hf_run.predictions("mini_eval", "greedy")))
    assert [r["id"] for r in g_rows] == [r["id"] for r in hf_rows] == ["p1", "p2", "p3", "p4", "p5"]
    assert all(set(r) == FIELDS and r["run"] == g_run.name for r in g_rows)
    # the GGUF's embedded template, rendered by llama.cpp, is LLaMA-Factory's prompt, byte for byte
    tok = AutoTokenizer.from_pretrained(tiny_model)
    template = tpl.lf_template("smollm2", tok)
    for g, hf in zip(g_rows, hf_rows, strict=True):
        assert g["prompt"] == hf["prompt"] == tpl.lf_prompt(template, tok, user_message(g))[0]
        assert 0 < g["new_tokens"] <= 12 and g["truncated"] == (g["new_tokens"] == 12)
    # f32 in llama.cpp against float32 transformers, both greedy: the same answers
    assert [r["answer"] for r in g_rows] == [r["answer"] for r in hf_rows]
    side = json.loads(gen.sidecar_path(g_run.predictions("mini_eval", "greedy")).read_text())
    assert side["source"]["kind"] == "gguf" and side["source"]["sha256"] == sha256_file(path)
    assert side["source"]["quantization"] == "f32" and side["dtype"] == "f32" and side["batch_size"] == 1
    assert side["engine"].startswith("llama.cpp llama-server --jinja") and side["tokens_per_s"] > 0
    assert side["peak_mem_mb"] > path.stat().st_size / 2**20  # the server's, holding the f32 weights
    # a re-run finds every answer there and starts no server
    monkeypatch.setattr(llama_server, "serve", None)
    assert gen.main([*common, "--model-path", f"gguf:{path}"]) == 0
    # judged through the same path as any run
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    args = ["--testset", "mini_eval", "--offline-model", str(tiny_model)]
    assert judge.main(["--run", g_run.name, *args]) == 0
    scores = json.loads(g_run.scores("mini_eval", "greedy").read_text())
    # p3 has no reference, so the protocol is `single`: every answer scored alone
    assert scores["protocol"] == "single" and scores["n"] == len(g_rows) and scores["n_failed"] == 0


@pytest.mark.slow
@needs_server
def test_scored_tokens_read_the_same_log_probability_from_the_top_or_the_whole_vocabulary(
    tiny_gguf, tmp_path
):
    """token_logprobs asks for the top FIRST_PROBS and falls back to the whole vocabulary: both are read off
    one softmax over the whole vocabulary, so each value is the whole-vocabulary request's, a rare token's
    included (up to float32 rounding: the server sums the softmax in the order its partial sort leaves)."""
    from transformers import AutoTokenizer

    src, _ = tiny_gguf
    n_vocab = len(AutoTokenizer.from_pretrained(src.parent / "stage"))
    prompt = [1, 9690, 198, 3057, 28, 2096, 314, 260]
    with llama_server.serve(src, log=tmp_path / "server.log") as server:
        greedy, _ = server.greedy(prompt, 3)
        rare = next(t for t in range(n_vocab - 1, 0, -1) if server._logprob(prompt, t, 40) is None)
        answer = [*greedy[:2], rare]
        got = server.token_logprobs(prompt, answer, n_vocab)
        whole = [server._logprob(prompt + answer[:i], t, n_vocab) for i, t in enumerate(answer)]
    assert got == pytest.approx(whole, abs=1e-4) and all(lp < 0 for lp in got)
    assert got[-1] < got[0]  # the rare token, found only in the whole vocabulary, is the least likely
