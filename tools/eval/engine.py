"""A LLaMA-Factory-loaded model, tokenizer and template, with batched generation and answer scoring."""

from __future__ import annotations

import resource

from tools.eval.decoding import DecodingPoint
from tools.eval.prompts import user_message
from tools.eval.source import Source


class Engine:
    """A LLaMA-Factory-loaded model, tokenizer and template, with batched generation and scoring."""

    def __init__(self, source: Source):
        import torch
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import get_infer_args
        from llamafactory.model import load_model, load_tokenizer

        args = {
            "model_name_or_path": source.model_name_or_path,
            "template": source.template,
            "finetuning_type": "lora",
            # fp32 on CPU: half precision there is slow and changes answers; on GPU the profile's precision
            "infer_dtype": (source.extra.get("infer_dtype") or "auto")
            if torch.cuda.is_available()
            else "float32",
        }
        if source.adapter is not None:
            args["adapter_name_or_path"] = str(source.adapter)
        args.update({k: v for k, v in source.extra.items() if k != "infer_dtype"})
        model_args, data_args, finetuning_args, _ = get_infer_args(args)
        self.tokenizer = load_tokenizer(model_args)["tokenizer"]
        self.template = get_template_and_fix_tokenizer(self.tokenizer, data_args)
        self.model = load_model(self.tokenizer, model_args, finetuning_args, is_trainable=False)
        self.model.eval()
        self.stop_ids = list(self.template.get_stop_token_ids(self.tokenizer))
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        )
        self.device = self.model.device

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
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                **point.generate_kwargs(),
            )
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
        self, rows: list[dict], answers: list[str], batch_size: int = 8
    ) -> list[tuple[float, int]]:
        """(summed negative log-likelihood, token count) of each answer given its prompt, as training scores it."""
        import torch

        pairs = [self.encode(r, a) for r, a in zip(rows, answers, strict=True)]
        results: list[tuple[float, int]] = []
        for b in range(0, len(pairs), batch_size):
            chunk = pairs[b : b + batch_size]
            width = max(len(p) + len(a) for p, a in chunk)
            ids = [p + a + [self.pad_id] * (width - len(p) - len(a)) for p, a in chunk]
            labels = [[-100] * len(p) + a + [-100] * (width - len(p) - len(a)) for p, a in chunk]
            mask = [[1] * (len(p) + len(a)) + [0] * (width - len(p) - len(a)) for p, a in chunk]
            ids_t = torch.tensor(ids, device=self.device)
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids_t, attention_mask=torch.tensor(mask, device=self.device)
                ).logits
            logits = logits[:, :-1].float()
            tgt = torch.tensor(labels, device=self.device)[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=-100, reduction="none"
            ).view(tgt.shape)
            for i in range(len(chunk)):
                results.append((float(nll[i].sum()), int((tgt[i] != -100).sum())))
        return results


def peak_mem_mb() -> float:
    """Peak memory of this process: GPU allocations when on a GPU, else resident set size."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
