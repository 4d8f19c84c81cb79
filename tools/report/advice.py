"""Symptom -> advice: what a user should try next, with the numbers that triggered it.

The report's warnings say what went wrong; these rules say what to change. Each rule reads only the
run's own files (its loss curves, its train.log, run.json, metrics.json, scores.json) and fires with
the evidence in figures, so a reader can check it. The thresholds are deliberately plain and live
here, one constant each; the advice follows the usual LoRA fine-tuning FAQ (LLM-Pruner's and
LLaMA-Factory's: out of memory -> smaller micro-batch/cutoff/rank; slow loss -> higher lr/rank/epochs).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from tools.report import trend
from tools.report.collect import RunRecord, zeroshot_accs
from tools.report.trend import MIN_STEPS

SPIKE = 10.0  # a gradient norm this many times the median = a spike
TRUNCATED = 0.2  # this share of answers hitting max_new_tokens = too short a budget
SHORT = 0.5  # answers under this share of the references' length = much shorter
FORGETTING = 0.10  # perplexity on general held-out text this much above the base model's = forgetting
ZEROSHOT_DROP = 0.05  # mean zero-shot accuracy this much (absolute) below the base model's = forgetting
OOM = re.compile(r"out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|MemoryError", re.I)
KILLED = (-9, 137)  # SIGKILL: on Linux, most often the kernel's out-of-memory killer


@dataclass(frozen=True)
class Advice:
    run: str  # the run's label, or "study"
    symptom: str
    evidence: str  # the numbers that triggered it
    advice: str

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return f"{self.run}: {self.symptom} ({self.evidence}) -> {self.advice}"


def curve_advice(
    label: str, steps: list[int], loss: list[float], eval_steps, eval_loss, grad
) -> list[Advice]:
    out = []
    bad = [s for s, v in zip(steps, loss, strict=True) if not math.isfinite(v)]
    if bad:
        out.append(
            Advice(
                label,
                "loss is NaN/inf",
                f"first at step {bad[0]}, {len(bad)} of {len(loss)} logged points",
                "lower the learning rate (e.g. halve it) and add warmup (warmup_ratio 0.1); in fp16 try bf16",
            )
        )
    finite_g = [g for g in grad if math.isfinite(g)]
    if len(finite_g) >= MIN_STEPS:
        median = sorted(finite_g)[len(finite_g) // 2]
        peak = max(finite_g)
        if median > 0 and peak > SPIKE * median:
            out.append(
                Advice(
                    label,
                    "gradient-norm spike",
                    f"max grad norm {peak:.3g} = {peak / median:.0f}x the median {median:.3g}",
                    "lower the learning rate, add warmup, keep max_grad_norm at 1.0",
                )
            )
    t = trend.read(steps, loss, list(eval_steps), list(eval_loss))
    if not bad and t.train == "flat":
        out.append(
            Advice(
                label,
                "train loss flat",
                f"{t.first:.4g} -> {t.last:.4g} ({(t.last - t.first) / t.first:+.1%}) over {len(loss)} logged steps",
                "raise the learning rate (e.g. 2x), lora_alpha, or the number of epochs",
            )
        )
    if not bad and t.train == "rising":
        out.append(
            Advice(
                label,
                "train loss rising (diverging)",
                f"{t.first:.4g} -> {t.last:.4g} ({(t.last - t.first) / t.first:+.1%}) over {len(loss)} logged steps",
                "lower the learning rate (e.g. halve it) and add warmup (warmup_ratio 0.1)",
            )
        )
    if t.overfit:
        best_step, best, last_step, last_eval = t.overfit
        out.append(
            Advice(
                label,
                "eval loss rising while train loss falls (overfitting)",
                f"eval loss {best:.4g} at step {best_step} -> {last_eval:.4g} at step {last_step}; "
                f"train loss {t.train_at[0]:.4g} -> {t.train_at[1]:.4g}",
                f"train fewer epochs (stop near step {best_step}, or pick that epoch's checkpoint), "
                "lower the rank, or raise lora_dropout",
            )
        )
    return out


def log_advice(label: str, log_text: str, returncode: int | None) -> list[Advice]:
    hit = OOM.search(log_text or "")
    if hit:
        line = next(x for x in log_text.splitlines() if OOM.search(x)).strip()
        evidence = f"train.log: {line[:160]}"
    elif returncode in KILLED:
        evidence = f"killed by SIGKILL (returncode {returncode}): most often the out-of-memory killer"
    else:
        return []
    return [
        Advice(
            label,
            "out of memory",
            evidence,
            "lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the batch), "
            "cutoff_len or lora_rank, or train in 4 bits (QLoRA: the llama2_7b_t4 profile)",
        )
    ]


def metrics_advice(label: str, metrics: dict | None, base_metrics: dict | None = None) -> list[Advice]:
    m = metrics or {}
    out = []
    share = m.get("truncated_share")
    if isinstance(share, (int, float)) and share > TRUNCATED:
        out.append(
            Advice(
                label,
                "many answers truncated",
                f"{share:.0%} of answers hit max_new_tokens",
                "raise max_new_tokens (the decoding grid's defaults), or train on shorter answers",
            )
        )
    words, ref = m.get("answer_words_mean"), m.get("reference_words_mean")
    if isinstance(words, (int, float)) and isinstance(ref, (int, float)) and ref > 0 and words < SHORT * ref:
        out.append(
            Advice(
                label,
                "answers much shorter than the references",
                f"{words:.0f} words on average against {ref:.0f} in the references ({words / ref:.0%})",
                "select longer answers (strategy long_is_more or length) or refine the 100 rows' answers "
                "(python -m tools.refine --prompt detail); judges reward detail",
            )
        )
    ppl, base_ppl = m.get("ppl_heldout"), (base_metrics or {}).get("ppl_heldout")
    if isinstance(ppl, (int, float)) and isinstance(base_ppl, (int, float)) and base_ppl > 0:
        rise = ppl / base_ppl - 1
        if rise > FORGETTING:
            out.append(
                Advice(
                    label,
                    "forgetting: general text got harder for the model",
                    f"perplexity on held-out general text {base_ppl:.3g} (base) -> {ppl:.3g} ({rise:+.0%})",
                    "mix 1-5% general instruction data into the training set (python -m tools.data.mix), "
                    "or train fewer epochs / at a lower learning rate",
                )
            )
    accs, base_accs = zeroshot_accs(m), zeroshot_accs(base_metrics or {})
    tasks = sorted(set(accs) & set(base_accs))
    if tasks:
        mean = sum(accs[t] for t in tasks) / len(tasks)
        base_mean = sum(base_accs[t] for t in tasks) / len(tasks)
        if base_mean - mean > ZEROSHOT_DROP:
            out.append(
                Advice(
                    label,
                    "forgetting: zero-shot accuracy fell",
                    f"mean accuracy on {', '.join(tasks)} {base_mean:.3f} (base) -> {mean:.3f} "
                    f"({mean - base_mean:+.3f})",
                    "mix 1-5% general instruction data into the training set (python -m tools.data.mix), "
                    "or train fewer epochs / at a lower learning rate / a lower rank",
                )
            )
    return out


def run_advice(
    rec: RunRecord, metrics: dict | None, base_metrics: dict | None = None, log_text: str | None = None
) -> list[Advice]:
    """Every rule for one run: its curves, its training log, its metrics against the base model's."""
    c = rec.curves
    out = curve_advice(
        rec.label,
        c.steps("loss"),
        c.values("loss"),
        c.steps("eval_loss"),
        c.values("eval_loss"),
        c.values("grad_norm"),
    )
    if log_text is None and not rec.is_base:
        log = rec.run.output_dir / "train.log"
        log_text = log.read_text(encoding="utf-8", errors="replace")[-200_000:] if log.is_file() else ""
    out += log_advice(rec.label, log_text or "", rec.info.get("returncode"))
    return out + metrics_advice(rec.label, metrics, base_metrics)


def intervals_overlap(arms: list[tuple[str, float, float, float]]) -> Advice | None:
    """(label, mean, lo, hi) per arm: every pair's 95 % intervals overlap -> the test cannot separate them."""
    arms = [a for a in arms if all(isinstance(x, (int, float)) and math.isfinite(x) for x in a[1:])]
    if len(arms) < 2:
        return None
    if any(a[2] > b[3] or b[2] > a[3] for i, a in enumerate(arms) for b in arms[i + 1 :]):
        return None
    widths = [a[3] - a[2] for a in arms]
    top = max(arms, key=lambda a: a[1])
    low = min(arms, key=lambda a: a[1])
    return Advice(
        "study",
        "all arms within each other's intervals",
        f"{len(arms)} arms from {low[1]:.3g} ({low[0]}) to {top[1]:.3g} ({top[0]}); "
        f"95 % intervals {min(widths):.2g}-{max(widths):.2g} wide",
        "the judge or the test set cannot tell these arms apart: use more prompts, judge both orders "
        "(--swap), or a stronger judge before drawing a conclusion",
    )
