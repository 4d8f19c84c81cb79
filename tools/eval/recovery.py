"""Evaluate a pruned model's recovery: before pruning, after pruning, after LoRA recovery.

For each stage, in a process of its own (so the peak memory is that model's): perplexity on a local
text (the held-out rows of `demo_recovery_heldout` by default, never trained on) and on WikiText-2 and
PTB when the hub is reachable; zero-shot accuracy through lm-eval (tools.eval.zeroshot: the shipped
offline task, and the standard tasks when reachable); generation speed (new tokens per second, seconds
per answer) and peak memory; the parameter count. Perplexity is LLM-Pruner's: the text is tokenised
once, cut into windows of `seq_len` tokens, and exp(mean token loss) is taken over the windows.

Stages of a run (`--run`): `unpruned` (the model the pruned one came from: the `source` in
`<pruned>.prune.json`, or --unpruned; left out when neither is given), `pruned` (run.json's
model_name_or_path) and `recovered` (the pruned model with the run's adapter merged by PEFT).
Writes `<run>/eval/recovery/<stage>.json` (kept when its settings and inputs did not change: a re-run
only evaluates what is missing) and, joined, `<run>/eval/recovery/evaluation_results.json`.

Usage:
    python -m tools.eval.recovery --run smollm2_135m/recovery/demo_recovery [--unpruned DIR]
        [--tasks local] [--text demo_recovery_heldout] [--seq-len 128] [--max-tokens N] [--dataset-dir data]
    python -m tools.eval.recovery --model PATH [--adapter DIR] [--trust-pickle] --stage NAME --out FILE.json [...]
    --tasks: local (python_mc), standard (LLM-Pruner's seven, when reachable), none, or lm-eval task names
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from filelib import atomic_write_json, run_main, sha256_file, sha256_text
from plugins.launchers import PrunedModelError, is_pruned, load, param_count
from plugins.publishing import RegistryError, resolve
from tools.core.args import command, opt
from tools.core.hub import hub_reachable
from tools.core.paths import DATA, ROOT, Run
from tools.core.profiles import resolve_model_path
from tools.core.runinfo import command_of, now, run_child
from tools.eval.zeroshot import zero_shot

CPU_MAX_TOKENS = 2048
SPEED_REPEATS = 5  # passes over SPEED_PROMPTS timed for the tokens/s median and spread
SPEED_THREADS = 1  # PyTorch threads on a CPU while timing (spin-waiting OpenMP workers on a shared CPU)
SPEED_PROMPTS = [
    "Explain what a Python list comprehension is.",
    "Write a function that checks whether a number is prime.",
    "What does the `with` statement do?",
]
ALPACA = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{}\n\n### Response:\n"
# LLM-Pruner's perplexity sets, read when the hub is reachable: (name, dataset args, text column).
HUB_TEXTS = (
    ("wikitext2", ("wikitext", "wikitext-2-raw-v1"), "text"),
    ("ptb", ("ptb_text_only", "penn_treebank"), "sentence"),
)


# ---------------------------------------------------------------------------------------- one model
def local_text(dataset: str, dataset_dir: Path = DATA) -> str:
    rows = json.loads(resolve(dataset, dataset_dir).read_text())
    return "\n\n".join(f"{r['instruction']}\n{r['output']}".strip() for r in rows)


def perplexity(
    model, tokenizer, text: str, seq_len: int = 128, max_tokens: int | None = None, batch: int = 8
) -> float:
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids[0][:max_tokens]
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than one window of {seq_len}")
    windows = ids[: n * seq_len].view(n, seq_len).to(next(model.parameters()).device)
    nll = []
    with torch.no_grad():
        for i in range(0, n, batch):
            x = windows[i : i + batch]
            logits = model(input_ids=x).logits[:, :-1].float()
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
            nll.append(loss.mean(1))
    return round(float(torch.exp(torch.cat(nll).mean())), 3)


def speed(model, tokenizer, new_tokens: int = 32, repeats: int = SPEED_REPEATS) -> dict:
    """Greedy generation of exactly `new_tokens` tokens per prompt, measured by tools.core.timing: a warm-up,
    then `repeats` passes over the prompts with PyTorch's threads pinned to SPEED_THREADS on a CPU; tokens/s
    as the median and spread of the passes (`noisy` when the spread exceeds timing.NOISY_SHARE of it)."""
    import torch

    from tools.core.timing import measure, rate

    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    encoded = [tokenizer(ALPACA.format(p), return_tensors="pt").to(device) for p in SPEED_PROMPTS]
    kw = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id}

    def one_pass():
        for enc in encoded:
            model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kw)

    with torch.no_grad():
        model.generate(**encoded[0], max_new_tokens=2, **kw)  # warm-up: kernels, caches
        t = measure(
            one_pass, repeats, 0, None if cuda else SPEED_THREADS, torch.cuda.synchronize if cuda else None
        )
    r = rate(new_tokens * len(encoded), t)
    return {
        "tokens_per_s": round(r["per_s"], 2),
        "tokens_per_s_spread": round(r["spread"], 2),
        "noisy": r["noisy"],
        "latency_s": round(t["median_s"] / len(encoded), 4),
        "new_tokens": new_tokens,
        "prompts": len(encoded),
        "repeats": repeats,
        "threads": t["threads"],
    }


def peak_memory_mb(device: str) -> tuple[float, str]:
    import resource

    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1), "cuda max_memory_allocated"
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "process peak RSS (CPU)"


def load_stage(model_path: str, adapter: str | None, trust_pickle: bool):
    """(model, tokenizer, kind): an HF folder, or a pruned model with an optional adapter merged."""
    if is_pruned(model_path):
        model, tokenizer, kind = load(model_path, trust_pickle)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(model_path)
        tokenizer, kind = AutoTokenizer.from_pretrained(model_path), "hf"
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model.eval(), tokenizer, kind


def evaluate_model(a: RecoveryEvalArgs) -> dict:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    model, tokenizer, kind = load_stage(a.model, a.adapter, a.trust_pickle)
    if device == "cuda":
        model = model.to(device=device, dtype=torch.bfloat16)
        torch.cuda.reset_peak_memory_stats()
    # The whole text on a GPU; on a CPU its first CPU_MAX_TOKENS tokens (16 windows), unless --max-tokens says.
    cap = a.max_tokens or (None if device == "cuda" else CPU_MAX_TOKENS)
    ppl: dict[str, float | str] = {}
    text = local_text(a.text, a.dataset_dir)
    ppl[f"local:{a.text}"] = perplexity(model, tokenizer, text, a.seq_len, cap)
    reachable = hub_reachable()
    for name, args, column in HUB_TEXTS:
        if not reachable:
            ppl[name] = "skipped: the Hugging Face hub is not reachable"
            continue
        try:
            from datasets import load_dataset

            text = "\n\n".join(load_dataset(*args, split="test")[column])
            ppl[name] = perplexity(model, tokenizer, text, a.seq_len, cap)
        except Exception as e:  # noqa: BLE001 (a dataset that cannot be read is recorded, not fatal)
            ppl[name] = f"skipped: {type(e).__name__}: {str(e)[:200]}"
    tasks = [] if a.tasks == ["none"] else a.tasks
    mem, basis = peak_memory_mb(device)
    return {
        "stage": a.stage,
        "model": a.model,
        "adapter": a.adapter,
        "kind": kind,
        "params": param_count(model),
        "perplexity": ppl,
        "seq_len": a.seq_len,
        "max_tokens": cap,
        "zero_shot": zero_shot(model, tokenizer, tasks) if tasks else {},
        "speed": speed(model, tokenizer, a.new_tokens),
        "peak_mem_mb": max(mem, peak_memory_mb(device)[0]),
        "peak_mem_basis": basis,
        "device": device,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "seconds": round(time.perf_counter() - t0, 1),
        "ended": now(),
    }


# ---------------------------------------------------------------------------------------- a run's stages
def stages_of(run: Run, unpruned: str | None = None) -> tuple[list[dict], bool]:
    """([{stage, model, adapter}], trust_pickle) from the run's run.json."""
    info = json.loads(run.run_json.read_text()) if run.run_json.exists() else {}
    if info.get("status") != "finished" or not run.adapter.exists():
        raise ValueError(f"{run}: not a finished run (no adapter or run.json status {info.get('status')!r})")
    pruned = resolve_model_path(str(info["model_name_or_path"]))
    trust = bool((info.get("resolved_config") or {}).get("trust_pickle"))
    if unpruned is None:
        side = Path(pruned).with_name(Path(pruned).name + ".prune.json")
        unpruned = json.loads(side.read_text()).get("source") if side.exists() else None
    stages = []
    if unpruned:
        source = resolve_model_path(unpruned)
        if not Path(source).exists() and not Path(ROOT / source).exists():
            raise ValueError(f"the unpruned model {unpruned!r} is not a local folder")
        stages.append({"stage": "unpruned", "model": source, "adapter": None})
    stages += [
        {"stage": "pruned", "model": pruned, "adapter": None},
        {"stage": "recovered", "model": pruned, "adapter": str(run.output_dir)},
    ]
    return stages, trust


def _key(stage: dict, settings: dict) -> str:
    files = [
        Path(stage["model"]),
        *([Path(stage["adapter"]) / "adapter_model.safetensors"] if stage["adapter"] else []),
    ]
    digests = [sha256_file(f) if f.is_file() else str(f) for f in files]
    return sha256_text(json.dumps({**stage, **settings}, sort_keys=True), *digests)


def evaluate_run(run: Run, settings: dict, unpruned: str | None = None, dataset_dir: Path = DATA) -> Path:
    stages, trust = stages_of(run, unpruned)
    folder = run.output_dir / "eval" / "recovery"
    joined = {"run": run.name, "settings": settings, "stages": {}}
    for st in stages:
        out, key = folder / f"{st['stage']}.json", _key(st, settings)
        old = json.loads(out.read_text()) if out.exists() else {}
        if old.get("key") != key:
            cmd = [
                *command_of(main),
                "--model",
                st["model"],
                "--stage",
                st["stage"],
            ]
            cmd += ["--out", str(out), "--dataset-dir", str(dataset_dir), "--key", key]
            cmd += ["--adapter", st["adapter"]] if st["adapter"] else []
            cmd += ["--trust-pickle"] if trust else []
            cmd += [
                "--tasks",
                *settings["tasks"],
                "--text",
                settings["text"],
                "--seq-len",
                str(settings["seq_len"]),
            ]
            cmd += ["--new-tokens", str(settings["new_tokens"])]
            cmd += ["--max-tokens", str(settings["max_tokens"])] if settings["max_tokens"] else []
            print(
                f"  {run.name} {st['stage']}: evaluating {st['model']}"
                + (" + adapter" if st["adapter"] else "")
            )
            child = run_child(cmd, folder / f"{st['stage']}.log", cwd=ROOT)
            if child.returncode != 0:
                raise RuntimeError(
                    f"{run}: evaluating stage {st['stage']} failed; log: {folder / st['stage']}.log"
                )
        joined["stages"][st["stage"]] = json.loads(out.read_text())
    return atomic_write_json(folder / "evaluation_results.json", joined)


# ---------------------------------------------------------------------------------------- CLI
@dataclass
class RecoveryEvalArgs:
    run: str | None = opt(None, help="model/study/variant of a finished recovery run")
    unpruned: str | None = opt(
        None, help="the model before pruning (default: the source in <pruned>.prune.json)"
    )
    model: str | None = opt(None, help="one model: an HF folder or a pruned model")
    adapter: str | None = opt(None, help="a LoRA adapter folder to merge into --model")
    trust_pickle: bool = opt(False, help="allow unpickling (runs code from the file)")
    stage: str = opt("model", help="the stage's name in the results")
    out: Path | None = opt(None, help="with --model: the results file")
    key: str | None = opt(None, help="(internal) the caller's key, recorded in --out")
    tasks: list[str] = opt(["local"], help="zero-shot tasks")
    text: str = opt("demo_recovery_heldout", help="a registered dataset: the perplexity text")
    seq_len: int = opt(128, help="tokens per perplexity window", min=1)
    max_tokens: int | None = opt(
        None, help=f"perplexity tokens (default: all on a GPU, {CPU_MAX_TOKENS} on a CPU)", min=1
    )
    new_tokens: int = opt(32, help="tokens generated for the speed measure", min=1)
    dataset_dir: Path = opt(DATA, help="the folder holding dataset_info.json")

    def check(self) -> list[str]:
        return [] if self.run or (self.model and self.out) else ["give --run, or --model with --out"]


@command(RecoveryEvalArgs, __doc__)
def main(a: RecoveryEvalArgs) -> int:
    settings = {k: getattr(a, k) for k in ("tasks", "text", "seq_len", "max_tokens", "new_tokens")}
    try:
        if a.run:
            path = evaluate_run(Run.parse(a.run), settings, a.unpruned, a.dataset_dir)
            print(f"wrote {path}")
            return 0
        resolve(a.text, a.dataset_dir)  # a clear error before any model is loaded
        result = evaluate_model(a)
        atomic_write_json(a.out, {**result, "key": a.key})
        print(json.dumps({k: result[k] for k in ("stage", "params", "perplexity", "zero_shot", "speed")}))
        return 0
    except (ValueError, PrunedModelError, RegistryError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    run_main(main)
