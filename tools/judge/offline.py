"""The offline judge: a local model scores G-Eval's way, so every item gets a score.

Small local models do not follow the judge prompt (SmolLM2-135M answers HW5's prompt with prose,
not two numbers), so generating text would leave every judgment unparsed. Instead the answer's
start is fixed (e.g. "Rating: [[", or "" for HW5's first score) so that the next token is the
score, and the score is the expectation over the probabilities of "1".."10" (renormalised over
those ten; `mass` says how much of the next-token probability they held). For HW5's pairwise
prompt the second score is read after the most likely first score ("7 "). One forward pass per
score, computed locally with transformers. These scores are NOT comparable with GPT-4o-mini's.
"""

from __future__ import annotations

import json
from pathlib import Path

from tools.judge.protocol import Protocol

CANDIDATES = [str(i) for i in range(1, 11)]


class OfflineError(ValueError):
    pass


class OfflineJudge:
    def __init__(self, model_path: str | Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = Path(model_path)
        if not (self.path / "config.json").exists():
            raise OfflineError(f"offline judge model {self.path}: no config.json (give a local model folder)")
        self.name = self.path.name
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32).eval()
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    @property
    def judge_model(self) -> str:
        return f"offline:{self.name}"

    def _text(self, messages: list[dict]) -> str:
        if self.tok.chat_template:
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\nASSISTANT: "

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _candidates(self, text: str) -> tuple[list[int], list[list[int]], list[int]]:
        """Token ids of text, each score's continuation after it, and the extra token "10" needs."""
        base = self._ids(text)
        conts = []
        for c in CANDIDATES:
            ids = self._ids(text + c)
            if ids[: len(base)] != base or not 1 <= len(ids) - len(base) <= 2:
                raise OfflineError(
                    f"{self.name}: score {c!r} does not tokenize as 1-2 tokens after the prefix"
                )
            conts.append(ids[len(base) :])
        firsts = {c[0] for c in conts if len(c) == 2}
        if len(firsts) > 1:
            raise OfflineError(f"{self.name}: two-token scores start with different tokens")
        return base, conts, [next(iter(firsts))] if firsts else []

    @staticmethod
    def _score_probs(p0, p1, conts: list[list[int]], extra: list[int]) -> list[float]:
        probs = []
        for c in conts:
            p = float(p0[c[0]])
            if len(c) == 2:
                p *= float(p1[c[1]])
            elif extra and c[0] == extra[0]:  # "1" is also the start of "10": only the part that stops
                p *= 1.0 - sum(float(p1[o[1]]) for o in conts if len(o) == 2)
            probs.append(p)
        return probs

    def prompt_state(self, messages: list[dict]) -> dict:
        """One forward pass over the prompt; its KV cache serves every answer prefix after it."""
        torch = self.torch
        text = self._text(messages)
        ids = self._ids(text)[-(self.max_len - 16) :]  # keep the end: instructions and answer sit there
        with torch.no_grad():
            out = self.model(torch.tensor([ids]), use_cache=True)
        return {"text": text, "ids": ids, "n": len(self._ids(text)), "past": out.past_key_values,
                "last": out.logits[0, -1]}  # fmt: skip

    def distribution(self, messages: list[dict] | dict, prefix: str) -> tuple[list[float], float, int]:
        """P(score = 1..10) after `prefix`, renormalised; the raw mass on them; prompt tokens."""
        torch = self.torch
        state = messages if isinstance(messages, dict) else self.prompt_state(messages)
        full, conts, extra = self._candidates(state["text"] + prefix)
        n_prompt = state["n"]
        if full[:n_prompt] != self._ids(state["text"]):
            raise OfflineError(f"{self.name}: the answer prefix {prefix!r} changes the prompt's tokens")
        feed = full[n_prompt:] + extra
        logits = [state["last"]]
        if feed:
            past = state["past"]
            with torch.no_grad():
                out = self.model(torch.tensor([feed]), past_key_values=past, use_cache=True)
            past.crop(len(state["ids"]))  # back to the prompt alone, for the next prefix
            logits += list(out.logits[0])
        at = len(feed) - len(extra)  # logits[at] predicts the token right after the prefix
        p0 = torch.softmax(logits[at].float(), -1)
        p1 = torch.softmax(logits[at + 1].float(), -1) if extra else None
        probs = self._score_probs(p0, p1, conts, extra)
        mass = sum(probs)
        if mass <= 0:
            raise OfflineError(f"{self.name}: no probability on the score tokens")
        return [p / mass for p in probs], mass, len(state["ids"]) + len(feed)

    @staticmethod
    def expected(dist: list[float]) -> float:
        return sum((i + 1) * p for i, p in enumerate(dist))

    def judge(self, protocol: Protocol, messages: list[dict]) -> tuple[str, tuple[float, ...], dict]:
        """(raw description, scores as the protocol's parser would give them, usage)."""
        steps = []
        if protocol.kind == "single":
            prefixes = [protocol.offline.get("offline_prefix", "Rating: [[")]
        else:
            prefixes = [protocol.offline.get("offline_prefix_first", "")]
        scores, prompt_tokens = [], 0
        state = self.prompt_state(messages)
        for step in range(2 if protocol.kind == "pairwise" else 1):
            if step == 1:
                first = min(10, max(1, round(scores[0])))
                prefixes.append(
                    protocol.offline.get("offline_prefix_second", "{score_1} ").format(score_1=first)
                )
            dist, mass, n = self.distribution(state, prefixes[step])
            prompt_tokens += n
            e = self.expected(dist)
            scores.append(round(e, 4))
            steps.append(
                {
                    "prefix": prefixes[step],
                    "expected": round(e, 4),
                    "mass": round(mass, 6),
                    "p": [round(p, 4) for p in dist],
                }
            )
        raw = "offline G-Eval (expected score from the probabilities of 1..10): " + json.dumps(steps)
        return raw, tuple(scores), {"prompt_tokens": prompt_tokens, "completion_tokens": 0}
