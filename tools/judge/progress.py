"""One progress bar for a judging run (tqdm, like generation's): judgments done out of all planned,
with calls made, cached, failed and the spend so far in its postfix - never a line per item."""

from __future__ import annotations

from tools.judge.cost import cost_usd


class JudgeProgress:
    def __init__(self, total: int, cached: int, desc: str, price_model: str, billed: bool, enabled=True):
        from tqdm import tqdm

        self.price_model, self.billed = price_model, billed
        self.calls = self.failed = 0
        self.cached = cached
        self.spend = 0.0
        self.bar = tqdm(total=total, initial=cached, desc=desc, unit="judgment", disable=not enabled)
        self._post()

    def _post(self) -> None:
        self.bar.set_postfix_str(
            f"calls {self.calls}, cached {self.cached}, failed {self.failed}, spend ${self.spend:.4f}",
            refresh=False,
        )

    def __call__(self, row: dict) -> None:
        self.calls += 1
        if row.get("error") is not None:
            self.failed += 1
        u = row.get("usage") or {}
        c = cost_usd(
            self.price_model,
            int(u.get("prompt_tokens", 0)),
            int(u.get("completion_tokens", 0)),
            billed=self.billed,
        )
        self.spend += c or 0.0
        self._post()
        self.bar.update(1)

    def close(self) -> None:
        self._post()
        self.bar.refresh()
        self.bar.close()
