"""The study report: numbers from the events they came from, warnings, gaps, HParams, data section.

Run folders are real files with known values (TensorBoard event files written by TensorBoard's own
writer, run.json, metrics.json, scores.json per tools/CONTRACTS.md); tests/test_report_e2e.py adds a
real `llamafactory-cli train` run and the page in headless Chromium.
"""

from __future__ import annotations

import json
import math
import random

import pandas as pd
import pytest
from tbparse import SummaryReader

from tools.core.paths import Run, report_dir
from tools.report.build import build_report, main
from tools.report.events import read_events
from tools.report.synthetic import curve, metrics, scores, standard_series, write_events, write_run


def tb_scalars(run: Run, tag: str) -> pd.DataFrame:
    """The run's scalars for a tag, read back with tbparse: an independent reader of the same files."""
    s = SummaryReader(str(run.tb_dir)).scalars
    return s[s.tag == tag].sort_values("step")


def lr_study(means: dict[float, float], half: float = 0.3) -> list[Run]:
    """An lr study: one arm per learning rate with the given judge means; random loss curves."""
    rng = random.Random(7)
    runs = []
    for i, (lr, mean) in enumerate(sorted(means.items())):
        run = Run("tiny", "lr", f"lr{lr:g}")
        loss = [(s, 2.0 - 0.01 * s + 0.2 * rng.random()) for s in range(1, 101)]
        series = {**standard_series(100, lr=lr), "loss": loss}
        write_run(
            run,
            series,
            {"learning_rate": lr, "lora_rank": 8},
            ["learning_rate"],
            evals={
                ("demo_eval", "greedy"): {
                    "metrics": metrics(0.2 + 0.01 * i, words=100 + i),
                    "scores": scores(mean, half, n=12, unparsed=i % 2),
                }
            },
        )
        runs.append(run)
    return runs


def test_table_numbers_match_the_events_they_came_from(out_dir):
    runs = lr_study({1e-4: 6.0, 2e-4: 7.5, 5e-4: 6.2})
    write_run(
        Run.base("tiny"),
        None,
        evals={("demo_eval", "greedy"): {"metrics": metrics(0.1), "scores": scores(5)}},
    )
    rep = build_report("lr", data_dir=out_dir / "nodata")
    csv = pd.read_csv(report_dir("lr") / "runs.csv")
    assert list(csv["run"]) == [r.name for r in runs] + ["tiny/base/base"]  # arms by lr, base last
    for run in runs:
        row = csv[csv.run == run.name].iloc[0]
        loss = tb_scalars(run, "train/loss")
        assert row["final_loss"] == pytest.approx(loss["value"].iloc[-1], rel=1e-6)
        assert row["best_loss"] == pytest.approx(loss["value"].min(), rel=1e-6)
        assert row["best_loss_step"] == loss["step"].iloc[loss["value"].argmin()]
        assert row["steps"] == 100
        sc = json.loads(run.scores("demo_eval", "greedy").read_text())
        assert (row["judge_mean"], row["judge_ci_lo"], row["judge_ci_hi"]) == pytest.approx(
            (sc["mean"], *sc["ci95"])
        )
        assert row["judge_n"] == 12 and row["judge_unparsed"] == sc["n_unparsed"]
        assert (row["peak_rss_mb"], row["memory_estimate_mb"]) == (1234.5, 1300.0)  # bill beside the peak
        m = json.loads(run.metrics("demo_eval", "greedy").read_text())
        assert row["rougeL"] == pytest.approx(m["rougeL"]) and row["answer_words"] == m["answer_words_mean"]
    # 7.5 [7.2, 7.8] against 6.2 [5.9, 6.5]: apart, so a clear winner, in the middle of the grid
    assert rep.verdict.best == "lr0.0002" and rep.verdict.clear
    assert list(csv["best"]) == [False, True, False, False]
    assert not any("edge of the grid" in w for w in rep.warnings)
    md = (report_dir("lr") / "report.md").read_text()
    assert "★ lr0.0002" in md and "best arm: lr0.0002" in md
    assert f"{csv.final_loss.iloc[0]:.4g}" in md  # the markdown shows the same number
    html = (report_dir("lr") / "index.html").read_text()
    assert html.count('<img src="data:image/png;base64,') >= 4  # loss, lr, grad norm, axis


def test_best_on_the_edge_and_no_clear_winner(out_dir):
    lr_study({1e-4: 6.0, 2e-4: 6.4, 5e-4: 6.6})  # rising to the last lr; 6.6±0.3 overlaps 6.4±0.3
    rep = build_report("lr", with_base=False, data_dir=out_dir / "nodata")
    assert rep.verdict.best == "lr0.0005" and not rep.verdict.clear
    assert rep.verdict.text.startswith("no clear winner")
    edge = [w for w in rep.warnings if "edge of the grid" in w]
    assert edge and "highest value" in edge[0] and "learning_rate" in edge[0]
    md = (report_dir("lr") / "report.md").read_text()
    assert "no clear winner" in md and "edge of the grid" in md
    assert "2 judgments unparsed" not in md and "1 judgments unparsed" in md


def test_diverged_improving_and_overfitting_runs_are_flagged(out_dir):
    steps = 100
    nan_loss = [(s, v if s < 60 else math.nan) for s, v in curve(steps)]
    rising = [(s, 1.0 + 0.02 * s) for s in range(1, steps + 1)]
    flat = [(s, 1.0 + 0.001 * math.sin(s)) for s in range(1, steps + 1)]
    overfit_eval = [(s, 1.0 + ((s - 40) / 60) ** 2) for s in range(10, steps + 1, 10)]  # minimum at 40
    cases = {
        "nan": {"loss": nan_loss},
        "rising": {"loss": rising},
        "improving": {"loss": curve(steps)},
        "flat": {"loss": flat},
        "overfit": {"loss": curve(steps), "eval_loss": overfit_eval},
    }
    for name, series in cases.items():
        write_run(Run("tiny", "epochs", name), series, {"num_train_epochs": 3})
    rep = build_report("epochs", with_base=False, data_dir=out_dir / "nodata")
    warn = dict(zip(rep.table["label"], rep.table["warnings"], strict=True))
    assert "diverged: loss is NaN/inf from step 60" in warn["nan"]
    assert "diverged: train loss went up" in warn["rising"]
    assert "still improving at its last step" in warn["improving"]
    assert warn["flat"] == ""
    assert "overfitting: eval loss rose from 1 (step 40)" in warn["overfit"]
    assert "still improving" not in warn["flat"] + warn["rising"]
    assert any(w.startswith("nan: diverged") for w in rep.warnings)
    assert any(w.startswith("overfit: overfitting") for w in rep.warnings)
    assert "no evaluation yet" in rep.verdict.text


def test_missing_truncated_and_running_runs_still_render(out_dir):
    whole = Run("tiny", "rank", "r4")
    write_run(
        whole, standard_series(50), {"lora_rank": 4}, evals={("demo_eval", "greedy"): {"scores": scores(6)}}
    )
    cut = Run("tiny", "rank", "r8")
    write_run(cut, standard_series(50), {"lora_rank": 8})
    (ev,) = cut.tb_dir.rglob("events.out.tfevents.*")
    raw = ev.read_bytes()
    ev.write_bytes(raw[: len(raw) - 7])  # a writer killed mid-record
    running = Run("tiny", "rank", "r16")
    write_run(running, standard_series(20), {"lora_rank": 16}, status="running")
    no_events = Run("tiny", "rank", "r32")
    write_run(no_events, None, {"lora_rank": 32}, status="failed")
    Run("tiny", "rank", "r64").output_dir.mkdir(parents=True)  # a folder and nothing else

    rep = build_report("rank", with_base=False, data_dir=out_dir / "nodata")
    t = rep.table.set_index("label")
    # the truncated file is read up to its last whole record: every step but the lost last event
    truncated = read_events(cut.tb_dir)
    assert any("partial or corrupt record" in p for p in truncated.problems)
    assert t.loc["r8", "final_loss"] == truncated.values("loss")[-1]
    assert "partial or corrupt record" in t.loc["r8", "missing"]
    assert t.loc["r16", "status"] == "running" and "still running" in t.loc["r16", "missing"]
    assert t.loc["r32", "status"] == "failed" and "no TensorBoard folder" in t.loc["r32", "missing"]
    assert "no run.json" in t.loc["r64", "missing"] and t.loc["r64", "status"] == "unknown"
    assert "no metrics" in t.loc["r4", "missing"] and pd.isna(t.loc["r4", "rougeL"])
    assert "no evaluation at demo_eval/greedy" in t.loc["r8", "missing"]
    assert rep.verdict.text.startswith("only one arm evaluated: r4")
    md = (report_dir("rank") / "report.md").read_text()
    for text in ("partial or corrupt record", "still running", "no TensorBoard folder", "no run.json"):
        assert text in md
    assert (report_dir("rank") / "index.html").exists()


def test_later_event_file_wins_from_its_first_step(out_dir):
    """A retrained run (new file from step 1) replaces the old curve; a resumed one continues it."""
    tb = out_dir / "runs"
    write_events(tb / "b", {"loss": [(s, 1.0) for s in range(6, 9)]}, wall_time=2_000_000_000)
    write_events(tb / "a", {"loss": [(s, 5.0) for s in range(1, 11)]}, wall_time=1_000_000_000)
    c = read_events(tb)
    assert c.steps("loss") == [1, 2, 3, 4, 5, 6, 7, 8]
    assert c.values("loss") == [5.0] * 5 + [1.0] * 3
    write_events(tb / "c", {"loss": [(1, 9.0), (2, 8.0)]}, wall_time=3_000_000_000)  # retrained
    assert read_events(tb).series["loss"] == ([1, 2], [9.0, 8.0])


def test_hparams_view_is_readable_and_rewritten_without_duplicates(out_dir):
    lr_study({1e-4: 6.0, 2e-4: 7.5, 5e-4: 6.2})
    write_run(
        Run.base("tiny"),
        None,
        evals={("demo_eval", "greedy"): {"metrics": metrics(0.1), "scores": scores(5)}},
    )
    build_report("lr", data_dir=out_dir / "nodata")
    rep = build_report("lr", data_dir=out_dir / "nodata")  # again: the view must not double
    tb = report_dir("lr") / "tb"
    reader = SummaryReader(str(tb), extra_columns={"dir_name"})
    hp = reader.hparams
    assert sorted(hp.dir_name.unique()) == ["tiny/_base", "tiny/lr0.0001", "tiny/lr0.0002", "tiny/lr0.0005"]
    lrs = hp[hp.tag == "learning_rate"].set_index("dir_name")["value"]
    assert lrs.to_dict() == pytest.approx(
        {"tiny/lr0.0001": 1e-4, "tiny/lr0.0002": 2e-4, "tiny/lr0.0005": 5e-4}
    )
    assert len(hp[hp.tag == "label"]) == 4  # one session per run, however often the report ran
    sc = reader.scalars
    judge = sc[sc.tag == "report/judge_score"].set_index("dir_name")["value"]
    assert judge.to_dict() == pytest.approx(
        {"tiny/_base": 5, "tiny/lr0.0001": 6, "tiny/lr0.0002": 7.5, "tiny/lr0.0005": 6.2}
    )
    final = sc[sc.tag == "report/final_loss"].set_index("dir_name")["value"]
    row = rep.table.set_index("label").loc["lr0.0002"]
    assert final["tiny/lr0.0002"] == pytest.approx(row["final_loss"], rel=1e-6)
    # TensorBoard's own reader sees the experiment with its metrics at the top of the folder
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    ea = EventAccumulator(str(tb))
    ea.Reload()
    exp = metadata.parse_experiment_plugin_data(ea.PluginTagToContent("hparams")[metadata.EXPERIMENT_TAG])
    tags = {m.name.tag for m in exp.metric_infos}
    assert {"report/judge_score", "report/rougeL", "report/final_loss"} <= tags
    assert "learning_rate" in {h.name for h in exp.hparam_infos}
    assert len(list(tb.glob("events.out.tfevents.*"))) == 1


def test_data_section_shows_manifest_stage_counts_and_plot(out_dir, tmp_path):
    lr_study({1e-4: 6.0, 2e-4: 7.5})
    gen = tmp_path / "generated"
    gen.mkdir()
    manifest = {"pool": "demo", "strategy": "ifd", "n": 100, "stages": {"easy": 34, "medium": 33, "hard": 33}}
    (gen / "alpaca_top100_manifest.json").write_text(json.dumps(manifest))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([1, 2], [3, 4])
    fig.savefig(gen / "length_vs_score.png")
    build_report("lr", data_dir=gen)
    md = (report_dir("lr") / "report.md").read_text()
    assert "| easy | 34 |" in md and "- strategy: ifd" in md
    assert "](plots/data_length_vs_score.png)" in md
    assert (report_dir("lr") / "plots" / "data_length_vs_score.png").read_bytes() == (
        gen / "length_vs_score.png"
    ).read_bytes()
    html = (report_dir("lr") / "index.html").read_text()
    assert 'alt="length_vs_score.png"' in html and "<td>hard</td><td>33</td>" in html


def test_decoding_grid_heat_map_and_evals_csv(out_dir):
    for i, r in enumerate((4, 8)):
        evals = {("demo_eval", "greedy"): {"scores": scores(6 + i)}}
        for t in (0.7, 1.0):
            for p in (0.8, 0.9):
                evals[("demo_eval", f"t{t}_p{p}")] = {"scores": scores(5 + i + p - t)}
        write_run(Run("tiny", "rank", f"r{r}"), standard_series(20), {"lora_rank": r}, evals=evals)
    rep = build_report("rank", with_base=False, data_dir=out_dir / "nodata")
    assert (rep.out / "plots" / "decoding.png").stat().st_size > 1000
    ev = pd.read_csv(rep.out / "evals.csv")
    assert len(ev) == 10 and set(ev.decoding) >= {"greedy", "t0.7_p0.8", "t1.0_p0.9"}
    assert ev.set_index(["label", "decoding"]).loc[("r8", "t0.7_p0.9"), "judge_mean"] == pytest.approx(6.2)
    assert rep.table["decoding"].iloc[0] == "greedy"  # the table shows greedy


def test_offline_judge_is_labelled_and_cli_runs(out_dir, capsys):
    write_run(
        Run("tiny", "target", "qv"),
        standard_series(20),
        {"lora_target": ["q_proj", "v_proj"]},
        evals={("demo_eval", "greedy"): {"scores": scores(6, offline=True)}},
    )
    write_run(
        Run("tiny", "target", "all"),
        standard_series(20),
        {"lora_target": "all"},
        evals={("demo_eval", "greedy"): {"scores": scores(7)}},
    )
    assert main(["--study", "target", "--no-base"]) == 0
    out = capsys.readouterr().out
    assert "different judges" in out and "index.html" in out
    md = (report_dir("target") / "report.md").read_text()
    assert "6 [5.7, 6.3] offline" in md and "q_proj,v_proj" in md
    with pytest.raises(SystemExit, match="no run folders"):
        main(["--study", "nothing_here"])


def test_event_cache_follows_the_file(out_dir):
    run = Run("tiny", "rank", "r4")
    write_run(run, {"loss": [(1, 3.0), (2, 2.0)]}, {"lora_rank": 4})
    assert read_events(run.tb_dir).values("loss") == [3.0, 2.0]
    cached = list((out_dir / "cache" / "report_events").glob("*.json"))
    assert len(cached) == 1
    assert read_events(run.tb_dir).values("loss") == [3.0, 2.0]  # from the cache, same numbers
    (ev,) = run.tb_dir.rglob("events.out.tfevents.*")
    write_events(ev.parent / "x", {"loss": [(1, 9.0), (2, 8.0)]})
    new = next((ev.parent / "x").glob("events.out.tfevents.*"))
    ev.write_bytes(new.read_bytes())  # the same file name, other contents: a new key
    assert read_events(run.tb_dir).values("loss") == [9.0, 8.0]
    assert read_events(run.tb_dir, cache=False).values("loss") == [9.0, 8.0]


def test_broken_json_and_several_models_are_reported_not_fatal(out_dir):
    a, b = Run("tiny", "lr", "lr1"), Run("smollm2_135m", "lr", "lr1")
    for run, mean in ((a, 6.0), (b, 7.0)):
        write_run(
            run,
            standard_series(10),
            {"learning_rate": 1e-4},
            evals={("demo_eval", "greedy"): {"scores": scores(mean)}},
        )
    a.run_json.write_text("{not json")
    b.metrics("demo_eval", "greedy").write_text("[1, 2]")
    rep = build_report("lr", with_base=False, data_dir=out_dir / "nodata")
    t = rep.table.set_index("label")
    assert list(t.index) == ["smollm2_135m/lr1", "tiny/lr1"]  # unique labels across models
    assert "run.json: broken JSON" in t.loc["tiny/lr1", "missing"]
    assert "expected a JSON object, got list" in t.loc["smollm2_135m/lr1", "missing"]
    assert rep.verdict.best == "smollm2_135m/lr1"
    hp = SummaryReader(str(rep.out / "tb"), extra_columns={"dir_name"}).hparams
    assert sorted(hp.dir_name.unique()) == ["smollm2_135m/lr1", "tiny/lr1"]
