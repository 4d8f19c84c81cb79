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

Not estimable: where the data cannot tell the length term from the run effects - its design is
rank-deficient (every answer of a run longer than its reference by the same amount, one run always
exactly N words longer, every run at one length difference), more than NOT_ESTIMABLE_DRAWS of the
bootstrap refits are, or the interval of b is degenerate (zero width) - no b and no controlled score
are reported: the command says "not estimable" and why, and writes `length_controlled:
{estimable: false, reason, raw ...}` (exit 0; the raw means stand alone). A least-squares solver would
otherwise return a minimum-norm split of the run effect into "length" and "run", a confident-looking
b = 0.000 [0.0, 0.0] that moves scores by an arbitrary amount.

References: the length term compares each answer with the reference the judge was shown - the file
judging used with `--references FILE` (recorded in scores.json: its path and sha256), else the
predictions' own - and refuses where those texts no longer match what scores.json recorded.

Usage:
    python -m tools.judge.length --study S [--testset hw5_test] [--decoding greedy] [--model M] [--n-boot 500]

Writes a `length_controlled` block into each fitted run's scores.json (atomically) and prints the
table: run, raw mean [CI], length-controlled [CI], the length coefficient b.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from filelib import atomic_write_json, read_jsonl, run_main, sha256_file, sha256_text
from tools.core.args import command, opt
from tools.core.paths import runs_of_study
from tools.judge.cache import read_judgments
from tools.judge.references import read_references

N_BOOT = 500
SEED = 0
NOT_ESTIMABLE_DRAWS = 0.05  # above this share of rank-deficient bootstrap refits, b is not estimable


def words(text: str | None) -> int:
    return len((text or "").split())


def _full_rank(M: np.ndarray) -> bool:
    return M.shape[0] >= M.shape[1] and np.linalg.matrix_rank(M) == M.shape[1]


def _solve(r, g, y, d, n_runs: int, with_prompts: bool, sd: float) -> tuple[np.ndarray, float, bool]:
    """(controlled score per run index, b, whether the design has full rank). With prompt effects: the
    within-prompt (fixed-effects) estimator - demean every column inside each prompt, which removes the
    prompt effects exactly, even when some run lacks some prompt - then recover the levels from the
    per-prompt means. A rank-deficient design has no unique b: its numbers are not to be reported."""
    x = np.tanh(d / sd)
    D = np.zeros((y.size, n_runs))
    D[np.arange(y.size), r] = 1.0
    if not with_prompts:
        M = np.column_stack([D, x])
        coef, *_ = np.linalg.lstsq(M, y, rcond=None)
        return coef[:n_runs], float(coef[-1]), _full_rank(M)
    cnt = np.bincount(g).astype(float)
    cnt[cnt == 0] = 1.0

    def demean(v):
        return v - (np.bincount(g, v, minlength=cnt.size) / cnt)[g]

    Z = np.column_stack([D[:, 1:], x])  # run 0 is the baseline of the differences
    M = np.column_stack([demean(c) for c in Z.T])
    coef, *_ = np.linalg.lstsq(M, demean(y), rcond=None)
    delta, b = np.r_[0.0, coef[:-1]], float(coef[-1])
    level = np.bincount(g, y - delta[r] - b * x, minlength=cnt.size) / cnt  # a[0] + p[prompt]
    present = np.bincount(g, minlength=cnt.size) > 0
    return delta + level[present].mean(), b, _full_rank(M)


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
    lc, b, full = _solve(r, g, y, d, len(runs), with_prompts, sd)
    return {
        "lc": {x: float(lc[i]) for i, x in enumerate(runs)},
        "raw": {x: float(y[r == i].mean()) for i, x in enumerate(runs)},
        "b": b,
        "sd_words": sd,
        "prompt_effects": with_prompts,
        "full_rank": full,
    }


def _why_not(runs, r, d) -> str:
    """Why a design is rank-deficient, in words a user can check against the answers."""
    const = [(x, d[r == i][0]) for i, x in enumerate(runs) if np.ptp(d[r == i]) == 0]
    fixed = ", ".join(f"{x}: {v:+g} words" for x, v in const)
    if len(const) == len(runs):
        return f"every run's answers differ from their references by one fixed number of words ({fixed})"
    if const:
        return f"the length differences are confounded with the runs ({fixed} on every prompt)"
    return "the length differences are confounded with the runs and prompts"


def length_controlled(obs: list[tuple], n_boot: int = N_BOOT, seed: int = SEED) -> dict:
    """The fit plus bootstrap 95 % intervals (prompts resampled, each draw a prompt of its own); or,
    where the length term is not estimable, the raw means only, with `estimable: False` and why."""
    point = fit(obs)
    runs, prompts, r, g, y, d = _arrays(obs)
    members = [np.flatnonzero(g == j) for j in range(len(prompts))]
    rng = np.random.default_rng(seed)
    lc_draws, raw_draws, b_draws, deficient = [], [], [], 0
    for _ in range(n_boot):
        pick = rng.integers(0, len(prompts), len(prompts))
        idx = np.concatenate([members[j] for j in pick])
        g2 = np.repeat(np.arange(len(pick)), [members[j].size for j in pick])
        sd = float(d[idx].std()) or 1.0
        lc, b, full = _solve(r[idx], g2, y[idx], d[idx], len(runs), point["prompt_effects"], sd)
        if full:
            lc_draws.append(lc)
            b_draws.append(b)
        else:
            deficient += 1
        raw_draws.append(
            [y[idx][r[idx] == i].mean() if (r[idx] == i).any() else np.nan for i in range(len(runs))]
        )
    lc_draws, raw_draws = np.array(lc_draws).reshape(-1, len(runs)), np.array(raw_draws)

    def ci(x):
        x = np.asarray(x)[np.isfinite(x)]
        return [float(np.quantile(x, 0.025)), float(np.quantile(x, 0.975))] if x.size else None

    b_ci = ci(b_draws)
    why = None
    if not point["full_rank"]:
        why = f"the design is rank-deficient: {_why_not(runs, r, d)}"
    elif deficient > NOT_ESTIMABLE_DRAWS * n_boot:
        why = (
            f"{deficient} of {n_boot} bootstrap refits are rank-deficient: the length term rests on too few "
            "prompts where the runs' length differences vary"
        )
    elif b_ci is None or not b_ci[1] - b_ci[0] > 1e-9:
        why = f"the interval of the length coefficient is degenerate ({b_ci})"
    if why:
        return {
            "estimable": False,
            "reason": why,
            "runs": {
                x: {"raw": point["raw"][x], "raw_ci95": ci(raw_draws[:, i]), "n": int((r == i).sum())}
                for i, x in enumerate(runs)
            },
            "prompt_effects": point["prompt_effects"],
            "n_boot": n_boot,
        }
    return {
        "estimable": True,
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
        "b_ci95": b_ci,
        "sd_words": point["sd_words"],
        "prompt_effects": point["prompt_effects"],
        "n_boot": n_boot,
    }


def _pred_reference(row: dict) -> str | None:
    ref = row.get("reference")
    return ref if isinstance(ref, str) and ref.strip() else None  # as tools.judge reads it


def judged_references(run_name: str, pred: dict[str, dict], scores_path: Path) -> dict[str, str | None]:
    """{id: the reference the judge was shown}: the file of `--references` when judging used one (its
    sha256 as recorded), else the predictions' own; refused where the texts are not those recorded."""
    scores = json.loads(scores_path.read_text()) if scores_path.exists() else {}
    prov = scores.get("references") if isinstance(scores, dict) else None
    if not isinstance(prov, dict):  # judged before scores.json recorded its references
        return {i: _pred_reference(row) for i, row in pred.items()}
    if prov.get("source") == "file":
        path = Path(str(prov.get("path")))
        if not path.is_file():
            raise ValueError(
                f"{run_name}: judged against the references in {path}, which is not there: restore it, or "
                "re-judge the run"
            )
        if prov.get("sha256") and sha256_file(path) != prov["sha256"]:
            raise ValueError(
                f"{run_name}: the references file {path} changed since judging (sha256 {prov['sha256'][:12]} "
                "recorded): re-judge the run with it, or restore the file"
            )
        file_refs = read_references(path)
        refs = {i: file_refs.get(i) for i in pred}
    else:
        refs = {i: _pred_reference(row) for i, row in pred.items()}
    recorded = prov.get("texts_sha256")
    if recorded and sha256_text(*[f"{i}\t{refs[i] or ''}" for i in sorted(refs)]) != recorded:
        raise ValueError(
            f"{run_name}: the references ({prov.get('source')}: {prov.get('path')}) are not those it was "
            "judged against (their sha256 differs from scores.json's): re-judge the run"
        )
    return refs


def study_observations(study: str, testset: str, decoding: str, model: str | None = None):
    """(obs, judge label, paths) for a study's judged runs; refuses to mix judges or protocols."""
    obs, labels, paths = [], {}, {}
    for run in runs_of_study(study, model):
        jpath, ppath = run.judgments(testset, decoding), run.predictions(testset, decoding)
        if not (jpath.exists() and ppath.exists()):
            continue
        pred = {str(r["id"]): r for r in read_jsonl(ppath)}
        rows = [r for r in read_judgments(jpath) if r.get("order") == "ab" and r["parsed"]]
        if not rows:
            continue
        labels[run.name] = (rows[0]["judge_model"], rows[0]["protocol"], rows[0].get("protocol_version"))
        paths[run.name] = run.scores(testset, decoding)
        refs = judged_references(run.name, pred, paths[run.name])
        for r in rows:
            p, ref = pred.get(str(r["id"])), refs.get(str(r["id"]))
            if p is not None and ref:
                obs.append(
                    (run.name, str(r["id"]), float(r["score_answer"]), words(p["answer"]) - words(ref))
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
    head = f"{a.study} {a.testset}/{a.decoding}: {protocol} by {judge_model}"
    if res["estimable"]:
        print(f"{head}; b = {res['b']:+.3f} {res['b_ci95']}")
    else:
        print(f"{head}; length term not estimable: {res['reason']}; no length-controlled score")
    print(f"{'run':40s} {'raw':>24s} {'length-controlled':>24s}")
    for run, r in sorted(res["runs"].items()):
        raw = f"{r['raw']:.3f} [{r['raw_ci95'][0]:.2f}, {r['raw_ci95'][1]:.2f}]"
        lc = (
            f"{r['lc']:.3f} [{r['lc_ci95'][0]:.2f}, {r['lc_ci95'][1]:.2f}]"
            if res["estimable"]
            else "not estimable"
        )
        print(f"{run:40s} {raw:>24s} {lc:>24s}")
        scores = json.loads(paths[run].read_text()) if paths[run].exists() else {}
        fitted = (
            {"b": res["b"], "b_ci95": res["b_ci95"], "sd_words": res["sd_words"]} if res["estimable"] else {}
        )
        scores["length_controlled"] = {
            "estimable": res["estimable"],
            **({} if res["estimable"] else {"reason": res["reason"]}),
            **r,
            **fitted,
            "prompt_effects": res["prompt_effects"],
            "fit_runs": sorted(res["runs"]),
            "protocol": protocol,
        }
        atomic_write_json(paths[run], scores)
    return 0


if __name__ == "__main__":
    run_main(main)
