"""A length-controlled judge score (AlpacaEval 2's idea, on HW5's pairwise 1-10 protocol).

Judges reward length, and the tricks that won HW5 were long answers. Per study (every run judged by
the same judge with the same protocol, on the same prompts), fit by least squares

    score[run, prompt] = a[run] + p[prompt] + b * tanh((len_answer - len_reference) / sd)

where lengths are words, `sd` is the standard deviation of the length differences over the fit, and
p[prompt] are prompt effects (sum-to-zero). The prompt effects are there because all runs answer the
same prompts: a hard prompt (low scores for everyone) that happens to have a long reference would
otherwise be read as "shorter than the reference scores low"; with them, b is learnt only from
how runs' scores move with their answers' lengths on the same prompt. With one run there is no such
comparison, so the fit drops the prompt effects. The controlled score of a run is its prediction
with the length term at zero (an answer as long as the reference), averaged over the prompts:
a[run] + mean(p). Intervals: a bootstrap over prompts (all runs together), refitting each time.

Usage:
    python -m tools.judge.length --study S [--testset hw5_test] [--decoding greedy] [--model M] [--n-boot 500]

Writes a `length_controlled` block into each fitted run's scores.json (atomically) and prints the
table: run, raw mean [CI], length-controlled [CI], the length coefficient b.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np

from filelib import atomic_write_json, read_jsonl, run_main
from tools.core.args import command, opt
from tools.core.paths import runs_of_study

N_BOOT = 500
SEED = 0


def words(text: str | None) -> int:
    return len((text or "").split())


def _solve(r, g, y, d, n_runs: int, with_prompts: bool, sd: float) -> tuple[np.ndarray, float]:
    """(controlled score per run index, b). With prompt effects: the within-prompt (fixed-effects)
    estimator - demean every column inside each prompt, which removes the prompt effects exactly,
    even when some run lacks some prompt - then recover the levels from the per-prompt means."""
    x = np.tanh(d / sd)
    D = np.zeros((y.size, n_runs))
    D[np.arange(y.size), r] = 1.0
    if not with_prompts:
        coef, *_ = np.linalg.lstsq(np.column_stack([D, x]), y, rcond=None)
        return coef[:n_runs], float(coef[-1])
    cnt = np.bincount(g).astype(float)
    cnt[cnt == 0] = 1.0

    def demean(v):
        return v - (np.bincount(g, v, minlength=cnt.size) / cnt)[g]

    Z = np.column_stack([D[:, 1:], x])  # run 0 is the baseline of the differences
    coef, *_ = np.linalg.lstsq(np.column_stack([demean(c) for c in Z.T]), demean(y), rcond=None)
    delta, b = np.r_[0.0, coef[:-1]], float(coef[-1])
    level = np.bincount(g, y - delta[r] - b * x, minlength=cnt.size) / cnt  # a[0] + p[prompt]
    present = np.bincount(g, minlength=cnt.size) > 0
    return delta + level[present].mean(), b


def _arrays(obs):
    runs = sorted({o[0] for o in obs})
    prompts = sorted({o[1] for o in obs})
    r_ix, p_ix = {x: i for i, x in enumerate(runs)}, {x: i for i, x in enumerate(prompts)}
    r = np.array([r_ix[o[0]] for o in obs])
    g = np.array([p_ix[o[1]] for o in obs])
    y = np.array([o[2] for o in obs], dtype=float)
    d = np.array([o[3] for o in obs], dtype=float)
    return runs, prompts, r, g, y, d


def fit(obs: list[tuple], with_prompts: bool | None = None) -> dict:
    """obs: (run, prompt, score, answer words - reference words). {run: controlled score}, b, sd."""
    runs, _, r, g, y, d = _arrays(obs)
    with_prompts = len(runs) > 1 if with_prompts is None else with_prompts
    sd = float(d.std()) or 1.0
    lc, b = _solve(r, g, y, d, len(runs), with_prompts, sd)
    return {
        "lc": {x: float(lc[i]) for i, x in enumerate(runs)},
        "raw": {x: float(y[r == i].mean()) for i, x in enumerate(runs)},
        "b": b,
        "sd_words": sd,
        "prompt_effects": with_prompts,
    }


def length_controlled(obs: list[tuple], n_boot: int = N_BOOT, seed: int = SEED) -> dict:
    """The fit plus bootstrap 95 % intervals (prompts resampled, each draw a prompt of its own)."""
    point = fit(obs)
    runs, prompts, r, g, y, d = _arrays(obs)
    members = [np.flatnonzero(g == j) for j in range(len(prompts))]
    rng = np.random.default_rng(seed)
    lc_draws, raw_draws, b_draws = [], [], []
    for _ in range(n_boot):
        pick = rng.integers(0, len(prompts), len(prompts))
        idx = np.concatenate([members[j] for j in pick])
        g2 = np.repeat(np.arange(len(pick)), [members[j].size for j in pick])
        sd = float(d[idx].std()) or 1.0
        lc, b = _solve(r[idx], g2, y[idx], d[idx], len(runs), point["prompt_effects"], sd)
        lc_draws.append(lc)
        b_draws.append(b)
        raw_draws.append(
            [y[idx][r[idx] == i].mean() if (r[idx] == i).any() else np.nan for i in range(len(runs))]
        )
    lc_draws, raw_draws = np.array(lc_draws), np.array(raw_draws)

    def ci(x):
        x = np.asarray(x)[np.isfinite(x)]
        return [float(np.quantile(x, 0.025)), float(np.quantile(x, 0.975))] if x.size else None

    return {
        "runs": {
            x: {
                "raw": point["raw"][x],
                "raw_ci95": ci(raw_draws[:, i]),
                "lc": point["lc"][x],
                "lc_ci95": ci(lc_draws[:, i]),
                "n": int((r == i).sum()),
            }
            for i, x in enumerate(runs)
        },
        "b": point["b"],
        "b_ci95": ci(b_draws),
        "sd_words": point["sd_words"],
        "prompt_effects": point["prompt_effects"],
        "n_boot": n_boot,
    }


def study_observations(study: str, testset: str, decoding: str, model: str | None = None):
    """(obs, judge label, paths) for a study's judged runs; refuses to mix judges or protocols."""
    obs, labels, paths = [], {}, {}
    for run in runs_of_study(study, model):
        jpath, ppath = run.judgments(testset, decoding), run.predictions(testset, decoding)
        if not (jpath.exists() and ppath.exists()):
            continue
        pred = {str(r["id"]): r for r in read_jsonl(ppath)}
        rows = [r for r in read_jsonl(jpath) if r.get("order") == "ab" and r.get("parsed")]
        if not rows:
            continue
        labels[run.name] = (rows[0]["judge_model"], rows[0]["protocol"], rows[0].get("protocol_version"))
        paths[run.name] = run.scores(testset, decoding)
        for r in rows:
            p = pred.get(str(r["id"]))
            if p is not None and p.get("reference"):
                obs.append(
                    (
                        run.name,
                        str(r["id"]),
                        float(r["score_answer"]),
                        words(p["answer"]) - words(p["reference"]),
                    )
                )
    if len(set(labels.values())) > 1:
        detail = "; ".join(f"{k}: {v[1]} by {v[0]}" for k, v in sorted(labels.items()))
        raise ValueError(
            f"study {study}: runs judged with different judges or protocols do not compare ({detail})"
        )
    return obs, next(iter(labels.values()), None), paths


@dataclass
class LengthArgs:
    study: str = opt(help="the study whose judged runs are fitted", required=True)
    testset: str = opt("hw5_test", help="the judged evaluation set")
    decoding: str = opt("greedy", help="the judged decoding point")
    model: str | None = opt(None, help="only this model's runs (default: every model)")
    n_boot: int = opt(N_BOOT, help="bootstrap resamples of the intervals", min=10)


@command(LengthArgs, __doc__)
def main(a: LengthArgs) -> int:
    try:
        obs, label, paths = study_observations(a.study, a.testset, a.decoding, a.model)
        if not obs:
            raise ValueError(f"study {a.study}: no judged run with references on {a.testset}/{a.decoding}")
        res = length_controlled(obs, a.n_boot)
    except ValueError as e:
        print(f"judge.length: error: {e}", file=sys.stderr)
        return 2
    judge_model, protocol, _ = label
    print(
        f"{a.study} {a.testset}/{a.decoding}: {protocol} by {judge_model}; b = {res['b']:+.3f} {res['b_ci95']}"
    )
    print(f"{'run':40s} {'raw':>24s} {'length-controlled':>24s}")
    for run, r in sorted(res["runs"].items()):
        raw = f"{r['raw']:.3f} [{r['raw_ci95'][0]:.2f}, {r['raw_ci95'][1]:.2f}]"
        lc = f"{r['lc']:.3f} [{r['lc_ci95'][0]:.2f}, {r['lc_ci95'][1]:.2f}]"
        print(f"{run:40s} {raw:>24s} {lc:>24s}")
        scores = json.loads(paths[run].read_text()) if paths[run].exists() else {}
        scores["length_controlled"] = {
            **r,
            "b": res["b"],
            "b_ci95": res["b_ci95"],
            "sd_words": res["sd_words"],
            "prompt_effects": res["prompt_effects"],
            "fit_runs": sorted(res["runs"]),
            "protocol": protocol,
        }
        atomic_write_json(paths[run], scores)
    return 0


if __name__ == "__main__":
    run_main(main)
