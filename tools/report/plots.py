"""The report's figures as PNG bytes (matplotlib, Agg, no pyplot state): curves, axis, decoding grid.

Each function returns None when it has nothing to draw, so the page shows only figures with data.
"""

from __future__ import annotations

import io
import math
import re

import matplotlib

matplotlib.use("Agg")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tools.report.collect import RunRecord  # noqa: E402
from tools.report.table import Axis  # noqa: E402

MAX_POINTS = 2000  # per line: more is invisible at this size and slow to draw
SAMPLED = re.compile(r"^t(?P<t>[0-9.]+)_p(?P<p>[0-9.]+)$")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def _colors(n: int) -> list:
    import matplotlib as mpl

    cmap = mpl.colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    return [cmap(i if n <= 20 else i / max(1, n - 1)) for i in range(n)]


def _thin(steps: list[int], values: list[float]) -> tuple[list[int], list[float]]:
    k = max(1, math.ceil(len(steps) / MAX_POINTS))
    return steps[::k], values[::k]


def curves_png(records: list[RunRecord], name: str, ylabel: str, eval_too: bool = False) -> bytes | None:
    """One series per run overlaid (eval loss dashed in the run's colour when asked)."""
    runs = [r for r in records if r.curves.steps(name)]
    if not runs:
        return None
    fig = Figure(figsize=(7.5, 4), layout="constrained")
    ax = fig.add_subplot()
    # one colour per run, chained stages included (each is a run of its own, in the legend by its name);
    # a stage continues its chain's step axis (collect.chain_steps), its start marked in its colour
    colour = dict(zip([r.label for r in runs], _colors(len(runs)), strict=True))
    for r in runs:
        c = colour[r.label]
        steps = [s + r.step_offset for s in r.curves.steps(name)]
        ax.plot(*_thin(steps, r.curves.values(name)), color=c, lw=1.2, label=r.label)
        if r.step_offset:
            ax.axvline(r.step_offset, color=c, lw=0.6, ls=":")  # where this stage began
        if eval_too and r.curves.steps("eval_loss"):
            ev = [s + r.step_offset for s in r.curves.steps("eval_loss")]
            ax.plot(ev, r.curves.values("eval_loss"), "--o", color=c, lw=1, ms=3)
    ax.set_xlabel(
        "step (chained stages continue the previous stage's axis)"
        if any(r.step_offset for r in runs)
        else "step"
    )
    ax.set_ylabel(ylabel)
    if eval_too:
        ax.set_title("solid: train, dashed: eval", fontsize=9)
    ax.grid(alpha=0.3)
    if len(runs) <= 15:
        ax.legend(fontsize=8, ncol=2 if len(runs) > 6 else 1)
    return _png(fig)


def axis_png(table, axis: Axis) -> bytes | None:
    """Judge score (with its 95 % interval) and ROUGE-L against the study's axis; base as a line."""
    arms = table[~table["is_base"]]
    has_judge, has_rouge = arms["judge_mean"].notna().any(), arms["rougeL"].notna().any()
    if arms.empty or not (has_judge or has_rouge):
        return None
    panels = [p for p, ok in (("judge_mean", has_judge), ("rougeL", has_rouge)) if ok]
    # constrained layout: each panel's y label keeps clear of its neighbour
    fig = Figure(figsize=(4.6 * len(panels) + 0.5, 4.0), layout="constrained")
    numeric = axis.numeric and axis.key is not None
    for i, metric in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        scored = arms[arms[metric].notna()]  # an arm without this score is said, not drawn as a gap
        y = scored[metric].astype(float)
        xs = [axis.values.get(lbl) for lbl in scored["label"]] if numeric else list(range(len(scored)))
        style = "-" if numeric else ""  # categories have no order: points, not a line through them
        if metric == "judge_mean":
            lo = (y - scored["judge_ci_lo"].astype(float)).fillna(0).clip(lower=0)
            hi = (scored["judge_ci_hi"].astype(float) - y).fillna(0).clip(lower=0)
            # plain arrays: matplotlib checks Series element by element (a pandas FutureWarning)
            yerr = [lo.to_numpy(), hi.to_numpy()]
            ax.errorbar(xs, y.to_numpy(), yerr=yerr, fmt="o" + style, capsize=4, label="arms (95 % interval)")
            ax.set_ylabel("judge score")
            bottom, top = float((y - lo).min()), float((y + hi).max())
        else:
            ax.plot(xs, y.to_numpy(), "s" + style, color="tab:green", label="arms")
            ax.set_ylabel("ROUGE-L")
            bottom, top = float(y.min()), float(y.max())
        pad = max(top - bottom, abs(top) * 0.05, 1e-3) * 0.15
        ax.set_ylim(bottom - pad, top + pad)  # every interval whole, never clipped at the frame
        missing = len(arms) - len(scored)
        if missing:
            ax.set_title(f"{len(scored)} of {len(arms)} arms scored", fontsize=8)
        for _, b in table[table["is_base"]].iterrows():
            if b[metric] == b[metric] and b[metric] is not None:
                ax.axhline(float(b[metric]), color="grey", ls=":", label=b["label"])
        if numeric:
            vals = [float(x) for x in xs if x is not None]
            if vals and min(vals) > 0 and max(vals) / min(vals) >= 8:
                from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

                ax.set_xscale("log", base=2 if all(float(v).is_integer() for v in vals) else 10)
                if len(set(vals)) <= 12:  # label each value tried; more would overlap
                    ax.xaxis.set_major_locator(FixedLocator(sorted(set(vals))))
                ax.xaxis.set_minor_locator(NullLocator())
                ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.set_xlabel(axis.key)
        else:
            # the axis' own values under the axis (a dataset's name on a "dataset" axis), the run where
            # the arms differ by name only
            names = [str(axis.values.get(lbl, lbl)) if axis.key else lbl for lbl in scored["label"]]
            step = max(1, len(xs) // 20)  # at most ~20 names under the axis
            ax.set_xticks(xs[::step], names[::step], rotation=30, ha="right", fontsize=8)
            ax.set_xlim(-0.6, len(xs) - 0.4)
            ax.set_xlabel(axis.key or "run")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def _annotate(ax, z: list[list[float | None]], lo: float, hi: float) -> None:
    """Each cell's value, dark on the bright end of viridis and light on the dark end."""
    for a, row in enumerate(z):
        for b, v in enumerate(row):
            if v is not None:
                bright = hi > lo and (v - lo) / (hi - lo) > 0.6
                ax.text(b, a, f"{v:.2f}", ha="center", va="center", color="k" if bright else "w", fontsize=8)


def decoding_png(records: list[RunRecord], testset: str | None, max_runs: int = 6) -> bytes | None:
    """The decoding grid where several points were run: temperature x top_p per run, greedy in the title.

    Cells hold the judge mean, or ROUGE-L where no point was judged at all. Decoding names that do
    not form a temperature x top_p grid fall back to one row per run, one column per point.
    """
    runs = [r for r in records if len({e.decoding for e in r.evals if e.testset == testset}) > 1]
    if not runs:
        return None

    judged = any(e.scores and e.scores.get("mean") is not None for r in runs for e in r.evals)
    what = "judge score" if judged else "ROUGE-L"

    def value(e) -> float | None:  # one metric for the whole figure: never judge and ROUGE-L side by side
        block, key = (e.scores, "mean") if judged else (e.metrics, "rougeL")
        return float(block[key]) if block and block.get(key) is not None else None

    grids = {}
    for r in runs:
        pts = {}
        for e in r.evals:
            m = SAMPLED.match(e.decoding)
            if e.testset == testset and m:
                pts[(float(m["t"]), float(m["p"]))] = value(e)
        if len({t for t, _ in pts}) > 1 or len({p for _, p in pts}) > 1:
            grids[r.label] = pts
    if grids:
        labels = list(grids)[:max_runs]
        allv = [v for lbl in labels for v in grids[lbl].values() if v is not None]
        lo, hi = (min(allv), max(allv)) if allv else (0, 1)
        fig = Figure(figsize=(3.2 * len(labels) + 1.2, 3.4))
        for i, label in enumerate(labels):
            rec = next(r for r in runs if r.label == label)
            pts = grids[label]
            ts, ps = sorted({t for t, _ in pts}), sorted({p for _, p in pts})
            z = [[pts.get((t, p)) for p in ps] for t in ts]
            ax = fig.add_subplot(1, len(labels), i + 1)
            im = ax.imshow(
                [[math.nan if v is None else v for v in row] for row in z], cmap="viridis", vmin=lo, vmax=hi
            )
            _annotate(ax, z, lo, hi)
            ax.set_xticks(range(len(ps)), [f"{p:g}" for p in ps])
            ax.set_yticks(range(len(ts)), [f"{t:g}" for t in ts])
            ax.set_xlabel("top_p")
            ax.set_ylabel("temperature")
            g = rec.eval_point(testset, "greedy")
            gv = value(g) if g else None
            ax.set_title(f"{label}" + (f"\ngreedy {gv:.2f}" if gv is not None else ""), fontsize=9)
        fig.colorbar(im, ax=fig.axes, shrink=0.8, label=what)
        return _png(fig)
    decs = sorted({e.decoding for r in runs for e in r.evals if e.testset == testset})
    z = [[value(r.eval_point(testset, d)) if r.eval_point(testset, d) else None for d in decs] for r in runs]
    fig = Figure(figsize=(1.2 * len(decs) + 2.5, 0.5 * len(runs) + 1.8))
    ax = fig.add_subplot()
    allv = [v for row in z for v in row if v is not None]
    lo, hi = (min(allv), max(allv)) if allv else (0, 1)
    im = ax.imshow(
        [[math.nan if v is None else v for v in row] for row in z],
        cmap="viridis",
        aspect="auto",
        vmin=lo,
        vmax=hi,
    )
    _annotate(ax, z, lo, hi)
    ax.set_xticks(range(len(decs)), decs, rotation=30, ha="right")
    ax.set_yticks(range(len(runs)), [r.label for r in runs])
    fig.colorbar(im, ax=ax, label=what)
    return _png(fig)


def epochs_png(records: list[RunRecord], dev: str, decoding: str = "greedy") -> bytes | None:
    """Dev score against epoch, one line per run with its 95 % interval (judge mean, else ROUGE-L)."""
    runs = [r for r in records if not r.is_base and any(e.epoch and e.testset == dev for e in r.evals)]
    if not runs:
        return None
    judged = any(
        e.scores and e.scores.get("mean") is not None for r in runs for e in r.evals if e.testset == dev
    )
    fig = Figure(figsize=(6.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for r, c in zip(runs, _colors(len(runs)), strict=True):
        pts = sorted(
            (e for e in r.evals if e.testset == dev and e.epoch and e.decoding == decoding),
            key=lambda e: e.epoch,
        )
        xs, ys, lo, hi = [], [], [], []
        for e in pts:
            s = e.scores or {}
            y = s.get("mean") if judged else (e.metrics or {}).get("rougeL")
            if y is None:
                continue
            ci = s.get("ci95") if judged else None
            xs.append(e.epoch)
            ys.append(y)
            lo.append(max(0.0, y - ci[0]) if ci else 0.0)
            hi.append(max(0.0, ci[1] - y) if ci else 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", capsize=3, color=c, label=r.label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{'judge score' if judged else 'ROUGE-L'} on {dev} ({decoding})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)
