"""A LLaMA-Factory-loaded model, tokenizer and template, with batched generation and answer scoring.

The base model is loaded once (LLaMA-Factory's `load_model`, no adapter); an adapter is attached
with PEFT, unmerged, and `use(source)` swaps it for another run's adapter (any adapter folder: a
run's output or one of its checkpoints) or drops it for the base run, without reloading the base:
the previous adapter's layers are unloaded (PEFT's `unload`, which gives back the untouched base
modules) and the next one wraps the base (`PeftModel.from_pretrained`), whatever its PEFT type,
rank or target modules.

Dtype: on a GPU the profile's precision (LLaMA-Factory's `infer_dtype`); on a CPU `CPU_DTYPE`,
chosen by measurement (`python -m tools.bench.dtype`, figures in the README), unless a source or
caller names one. `compute_s` sums the seconds spent in forward passes (generate and scoring), so a
caller can tell compute from start-up.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

from tools.core.profiles import same_model
from tools.eval.decoding import DecodingPoint
from tools.eval.prompts import GenerateError, user_message
from tools.eval.source import Source

# bf16 on CPUs with native bf16 units (AVX512-BF16 / AMX): measured 1.6x the tokens/s of fp32 for the
# demo's generation here, see the README ("Evaluation speed"). $SMALLDATA_CPU_DTYPE overrides it.
CPU_DTYPE = "bfloat16"
DTYPES = ("float32", "bfloat16", "float16", "auto")


def default_dtype(source: Source, dtype: str | None = None) -> str:
    """The inference dtype: the caller's, else on GPU the profile's precision, else the CPU default."""
    import torch

    if dtype:
        return dtype
    if torch.cuda.is_available():
        return source.extra.get("infer_dtype") or "auto"
    env = os.environ.get("SMALLDATA_CPU_DTYPE")
    if env:
        return env
    return CPU_DTYPE if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"


def _base_key(source: Source) -> tuple:
    """What must match for two runs to share one loaded base: template and loading options."""
    return source.template, tuple(sorted((k, str(v)) for k, v in source.extra.items() if k != "infer_dtype"))


class Engine:
    """A LLaMA-Factory-loaded base model, tokenizer and template; adapters swapped in by `use`."""

    def __init__(self, source: Source, dtype: str | None = None):
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import get_infer_args
        from llamafactory.model import load_model, load_tokenizer

        if source.kind == "merged" and source.adapter is not None:
            raise GenerateError(f"{source.run}: a merged model carries no adapter")
        self.infer_dtype = default_dtype(source, dtype)
        if self.infer_dtype not in DTYPES:
            raise GenerateError(f"dtype {self.infer_dtype!r}: one of {', '.join(DTYPES)}")
        args = {
            "model_name_or_path": source.model_name_or_path,
            "template": source.template,
            "finetuning_type": "lora",
            "infer_dtype": self.infer_dtype,
        }
        args.update({k: v for k, v in source.extra.items() if k != "infer_dtype"})
        model_args, data_args, finetuning_args, _ = get_infer_args(args)
        self.tokenizer = load_tokenizer(model_args)["tokenizer"]
        self.template = get_template_and_fix_tokenizer(self.tokenizer, data_args)
        self.base = load_model(self.tokenizer, model_args, finetuning_args, is_trainable=False)
        # LLaMA-Factory 0.9.5 loads weights in the checkpoint's dtype ("auto") whatever infer_dtype says
        import torch

        want = getattr(torch, self.infer_dtype, None)
        quantized = any(k.startswith("quantization") for k in source.extra)
        if want is not None and not quantized and self.base.dtype != want:
            self.base.to(want)
        self.base.eval()
        self.model = self.base
        self.source = source
        self.adapter: Path | None = None
        self._names: dict[Path, str] = {}  # adapter folder -> its PEFT adapter name
        self._count = 0
        self.stop_ids = list(self.template.get_stop_token_ids(self.tokenizer))
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        )
        self.device = self.base.device
        self.dtype = self.base.dtype
        self.compute_s = 0.0
        self.use(source)

    # ------------------------------------------------------------------------------------ adapters
    def use(self, source: Source) -> Engine:
        """Answer as `source` from now on: its adapter attached (or none for the base); same base only."""
        mine = self.source
        if source.kind == "merged" or mine.kind == "merged":
            if source.model_name_or_path != mine.model_name_or_path:
                raise GenerateError(f"{source.run}: a merged model folder needs an engine of its own")
        elif not same_model(source.model_name_or_path, mine.model_name_or_path):
            raise GenerateError(
                f"{source.run}: its base model is {source.model_name_or_path!r}, not this engine's "
                f"{mine.model_name_or_path!r}: an adapter of another base model"
            )
        if _base_key(source) != _base_key(mine):
            raise GenerateError(
                f"{source.run}: template/loading options {_base_key(source)} differ from {_base_key(mine)}"
            )
        self.source = source
        self._attach(Path(source.adapter).resolve() if source.adapter else None)
        return self

    def _attach(self, adapter: Path | None) -> None:
        from peft import PeftConfig, PeftModel

        if adapter == self.adapter:
            return
        if adapter is not None and not (adapter / "adapter_config.json").exists():
            raise GenerateError(f"{adapter}: no adapter_config.json (not an adapter folder)")
        # Always unload, then wrap anew: PEFT's load_adapter/set_adapter/delete_adapter beside a loaded
        # adapter matched a fresh engine in fp32 but not in bf16 (a LoRA r8 on all linear layers, then r4
        # on q,v: other greedy answers, tests/eval/test_study.py); unloading gives back the untouched base
        # modules, so the result is exactly base + this adapter, whatever its type, rank or targets.
        self._detach()
        if adapter is not None:
            PeftConfig.from_pretrained(str(adapter))  # a clear error for a broken config before wrapping
            self.model = PeftModel.from_pretrained(
                self.base, str(adapter), adapter_name=self._name(adapter), is_trainable=False
            )
        self.model.eval()
        self.adapter = adapter

    def _name(self, adapter: Path) -> str:
        self._count += 1
        self._names[adapter] = f"run{self._count}"  # module keys: no dots or slashes from the path
        return self._names[adapter]

    def _detach(self) -> None:
        """Back to the bare base model: the adapter layers unloaded, the original modules restored."""
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            unload = getattr(self.model.base_model, "unload", None)
            if unload is None:  # prompt-learning types never touched the base modules
                self.base = self.model.get_base_model()
            else:
                self.base = unload()
        # PEFT leaves this behind; a new PeftModel would take it for a second adapter
        if "peft_config" in vars(self.base):
            del self.base.peft_config
        self.model, self._names = self.base, {}

    # ------------------------------------------------------------------------------------ compute
    def encode(self, row: dict, answer: str = "") -> tuple[list[int], list[int]]:
        """(prompt ids, answer ids) as in training; answer ids end with the template's end of turn."""
        messages = [{"role": "user", "content": user_message(row)}, {"role": "assistant", "content": answer}]
        prompt_ids, answer_ids = self.template.encode_oneturn(self.tokenizer, messages)
        if self.template.efficient_eos:  # LLaMA-Factory's supervised processor appends eos here
            answer_ids = answer_ids + [self.tokenizer.eos_token_id]
        return prompt_ids, answer_ids

    def generate(self, prompts: list[list[int]], point: DecodingPoint, seed: int) -> list[dict]:
        """One batch: left-padded prompts, seeded; returns {answer, new_tokens, truncated} per prompt."""
        import torch
        from transformers import set_seed

        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        set_seed(seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                **point.generate_kwargs(),
            )
        self.compute_s += time.perf_counter() - t0
        results = []
        stops = set(self.stop_ids)
        for seq in out[:, width:].tolist():
            end = next((i for i, t in enumerate(seq) if t in stops), None)
            gen = seq if end is None else seq[:end]
            results.append(
                {
                    "answer": self.tokenizer.decode(gen, skip_special_tokens=True).strip(),
                    "new_tokens": len(gen),
                    "truncated": end is None and len(seq) >= point.max_new_tokens,
                }
            )
        return results

    def answer_nll(
        self, rows: list[dict], answers: list[str], batch_size: int | None = None
    ) -> list[tuple[float, int]]:
        """(summed negative log-likelihood, token count) of each answer given its prompt, as training scores it."""
        import torch

        pairs = [self.encode(r, a) for r, a in zip(rows, answers, strict=True)]
        widest = max((len(p) + len(a) for p, a in pairs), default=1)
        batch_size = batch_size or auto_batch_size(self, len(pairs), widest, scoring=True)
        results: list[tuple[float, int]] = []
        for b in range(0, len(pairs), batch_size):
            chunk = pairs[b : b + batch_size]
            width = max(len(p) + len(a) for p, a in chunk)
            ids = [p + a + [self.pad_id] * (width - len(p) - len(a)) for p, a in chunk]
            labels = [[-100] * len(p) + a + [-100] * (width - len(p) - len(a)) for p, a in chunk]
            mask = [[1] * (len(p) + len(a)) + [0] * (width - len(p) - len(a)) for p, a in chunk]
            ids_t = torch.tensor(ids, device=self.device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids_t, attention_mask=torch.tensor(mask, device=self.device)
                ).logits
            logits = logits[:, :-1].float()
            tgt = torch.tensor(labels, device=self.device)[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=-100, reduction="none"
            ).view(tgt.shape)
            self.compute_s += time.perf_counter() - t0
            for i in range(len(chunk)):
                results.append((float(nll[i].sum()), int((tgt[i] != -100).sum())))
        return results


def auto_batch_size(engine: Engine, n: int, width: int, scoring: bool = False, cap: int = 64) -> int:
    """As many sequences of `width` tokens as fit a share of the free memory, at most `n` (and `cap`).

    Per sequence: its KV cache (2 x layers x kv heads x head dim x width) in the model's dtype, and
    for scoring its float32 logits (width x vocabulary, twice: logits and their log-softmax).
    """
    import torch

    cfg = engine.base.config
    cfg = getattr(cfg, "text_config", None) or cfg
    layers = getattr(cfg, "num_hidden_layers", 32)
    heads = getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", 32)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    elem = torch.finfo(engine.dtype).bits // 8 if engine.dtype.is_floating_point else 2
    per_seq = 2 * layers * heads * head_dim * width * elem
    per_seq += (2 * width * cfg.vocab_size * 4) if scoring else (cfg.vocab_size * 4)
    if engine.device.type == "cuda":
        free = torch.cuda.mem_get_info(engine.device)[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    fits = int(free * 0.5 // max(per_seq, 1))
    return max(1, min(n, cap, fits))


def peak_mem_mb() -> float:
    """Peak memory of this process: GPU allocations when on a GPU, else resident set size."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
