"""The report end to end: a real `llamafactory-cli train` run's events, the page in headless Chromium,
and the HParams view served by a real TensorBoard on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tbparse import SummaryReader

from filelib import atomic_write_json, atomic_write_text
from tools.core import warm
from tools.core.paths import ROOT, Run, llamafactory_cli, report_dir, venv_bin
from tools.report.build import build_report
from tools.report.synthetic import metrics, scores, standard_series, write_run
from tools.train.smoke import doc_rows, write_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def train_tiny(run: Run, model: Path, steps: int = 6) -> tuple[int, str]:
    """A few LoRA steps with evaluation every 2 steps, so train/* and eval/* tags are both written; trained
    as the sweep's --warm trains (a child of the test process's fork server, fresh where there is none).
    (exit status, log)"""
    data = run.output_dir.parent / f".{run.variant}-data"
    atomic_write_json(data / "smoke_docs.json", doc_rows())
    atomic_write_json(data / "dataset_info.json", {"smoke_docs": {"file_name": "smoke_docs.json"}})
    cfg_path = write_config(model, steps, run.output_dir, data, lr=2e-2)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg.update(val_size=0.25, eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=4)
    atomic_write_text(cfg_path, yaml.safe_dump(cfg, sort_keys=False))
    t0 = time.time()
    log = data / "train.log"
    proc = warm.run_command([*llamafactory_cli(), "train", str(cfg_path)], log, ROOT, dict(os.environ))
    atomic_write_json(
        run.run_json,
        {
            "run": run.name,
            "model": run.model,
            "study": run.study,
            "variant": run.variant,
            "scientific": ["lora_rank", "learning_rate"],
            "hparams": {"lora_rank": 8, "learning_rate": 2e-2},
            "status": "finished" if proc.returncode == 0 else "failed",
            "returncode": proc.returncode,
            "wall_s": time.time() - t0,
            "peak_rss_mb": None,
            "peak_gpu_mb": None,
        },
    )
    atomic_write_text(run.done_marker, "")
    return proc.returncode, log.read_text()


@pytest.mark.slow
def test_real_llamafactory_run_gives_the_tags_the_report_reads(tiny_model, out_dir):
    run = Run("tiny", "real", "r8")
    rc, log = train_tiny(run, tiny_model)
    assert rc == 0, log[-4000:]
    write_run(
        Run("tiny", "real", "r4"), standard_series(6, eval_every=2), {"lora_rank": 4, "learning_rate": 2e-2}
    )
    rep = build_report("real", with_base=False, data_dir=out_dir / "nodata")
    row = rep.table.set_index("label").loc["r8"]
    s = SummaryReader(str(run.tb_dir)).scalars
    for tag in ("train/loss", "eval/loss", "train/learning_rate", "train/grad_norm"):
        assert tag in set(s.tag), f"LLaMA-Factory no longer writes {tag}: {sorted(set(s.tag))}"
    loss = s[s.tag == "train/loss"].sort_values("step")
    ev = s[s.tag == "eval/loss"].sort_values("step")
    assert row["steps"] == 6 and row["final_loss"] == pytest.approx(loss.value.iloc[-1], rel=1e-6)
    assert row["best_loss"] == pytest.approx(loss.value.min(), rel=1e-6)
    assert row["final_eval_loss"] == pytest.approx(ev.value.iloc[-1], rel=1e-6)
    assert row["best_eval_loss"] == pytest.approx(ev.value.min(), rel=1e-6)
    assert row["missing"].startswith("not evaluated yet")
    rec = next(r for r in rep.records if r.label == "r8")
    assert rec.curves.steps("learning_rate") == list(range(1, 7)) and not rec.curves.problems


def _study_for_the_page(out_dir: Path) -> Path:
    for i, r in enumerate((4, 8, 16)):
        evals = {("demo_eval", "greedy"): {"metrics": metrics(0.2 + i / 100), "scores": scores(6 + i / 2)}}
        evals[("demo_eval", "t0.7_p0.9")] = {"scores": scores(5 + i)}
        evals[("demo_eval", "t1.0_p0.9")] = {"scores": scores(4 + i)}
        for epoch in (
            1,
            2,
        ):  # a dev score per epoch: the choice is made there; the test set scored at epoch 2
            evals[("demo_dev", "greedy", epoch)] = {
                # each arm its own prompt-to-prompt noise, so the paired interval rests on a spread
                "items": {f"d{k}": 4.0 + i + epoch / 2 + k % 3 + (k * (r + 3)) % 5 / 10 for k in range(9)}
            }
        evals[("demo_eval", "greedy", 2)] = {"metrics": metrics(0.3), "scores": scores(6.5 + i / 2)}
        write_run(
            Run("tiny", "rank", f"r{r}"), standard_series(50, eval_every=10), {"lora_rank": r}, evals=evals
        )
    write_run(Run("tiny", "rank", "r32"), standard_series(10), {"lora_rank": 32}, status="running")
    gen = out_dir / "generated"
    gen.mkdir()
    (gen / "demo_top100_manifest.json").write_text(json.dumps({"n": 100, "stages": {"easy": 40, "hard": 60}}))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    fig.add_subplot().scatter([10, 200, 400], [3, 6, 8])
    fig.savefig(gen / "length_vs_score.png")
    build_report("rank", with_base=False, data_dir=gen)
    return report_dir("rank") / "index.html"


@pytest.mark.slow
def test_page_renders_in_chromium_with_every_image(out_dir):
    if not CHROMIUM.exists():
        pytest.skip(
            f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium; make browser)"
        )
    sync_api = pytest.importorskip("playwright.sync_api")
    page_file = _study_for_the_page(out_dir)
    shot = out_dir / "report.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({alt: e.alt, ok: e.complete && e.naturalWidth > 0}))"
            )
            page.screenshot(path=str(shot), full_page=True)
            verdict = page.inner_text("#verdict")
            rows = page.eval_on_selector_all("#runs tbody tr", "els => els.map(e => e.dataset.run)")
            # a laptop-width window: the decision comes before the table, and the dev and test scores
            # are on screen without scrolling sideways
            page.set_viewport_size({"width": 1280, "height": 800})
            box = "e => { const r = e.getBoundingClientRect(); return [r.top, r.right]; }"
            heads = page.eval_on_selector_all("#runs thead th", "els => els.map(e => e.innerText)")
            dev_top, _ = page.eval_on_selector("#verdict", box)
            table_top, _ = page.eval_on_selector("#runs", box)
            _, test_right = page.eval_on_selector("#runs thead th:nth-child(4)", box)
        finally:
            browser.close()
    titles = [i["alt"] for i in images]
    assert len(images) >= 6, titles  # loss, lr, grad norm, axis, decoding grid, data plot
    assert all(i["ok"] for i in images), [i for i in images if not i["ok"]]
    assert "length_vs_score.png" in titles and any(t.startswith("Decoding grid") for t in titles)
    assert verdict.startswith("Chosen on demo_dev by judge mean: tiny/rank/r16@epoch2 (greedy)")
    assert heads[:4] == ["run", "point (chosen on dev)", "dev demo_dev", "test demo_eval"]
    assert dev_top < table_top and test_right <= 1280
    assert rows == ["tiny/rank/r4", "tiny/rank/r8", "tiny/rank/r16", "tiny/rank/r32"]
    assert shot.stat().st_size > 20_000


@pytest.mark.slow
def test_tensorboard_serves_the_hparams_view(out_dir):
    import urllib.request

    _study_for_the_page(out_dir)
    tb = report_dir("rank") / "tb"
    log = out_dir / "tb.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [
                *venv_bin("tensorboard"),
                "--logdir",
                str(tb),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--load_fast=false",
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    try:
        port = None
        for _ in range(120):
            m = re.search(r"http://127\.0\.0\.1:(\d+)/", log.read_text())
            if m:
                port = int(m.group(1))
                break
            assert proc.poll() is None, log.read_text()
            time.sleep(0.25)
        assert port, log.read_text()
        body = {
            "experimentName": "",
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [{"metric": {"tag": "report/judge_score"}, "order": "ORDER_DESC"}],
            "startIndex": 0,
            "sliceSize": 100,
        }
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/data/plugin/hparams/session_groups",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        groups = json.loads(urllib.request.urlopen(req, timeout=30).read())["sessionGroups"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    by_run = {g["name"]: g for g in groups}
    assert sorted(by_run) == [f"tiny/rank/r{r}" for r in (16, 32, 4, 8)]
    judge = {
        n: next((m["value"] for m in g["metricValues"] if m["name"]["tag"] == "report/judge_score"), None)
        for n, g in by_run.items()
    }
    assert judge == pytest.approx(
        # each run's test score at the point chosen on dev (epoch 2 here), as the report's table shows it
        {"tiny/rank/r4": 6.5, "tiny/rank/r8": 7.0, "tiny/rank/r16": 7.5, "tiny/rank/r32": None}
    )
    assert by_run["tiny/rank/r32"]["sessions"][0]["status"] == "STATUS_RUNNING"
    assert by_run["tiny/rank/r8"]["hparams"]["lora_rank"] == 8
    csv = pd.read_csv(report_dir("rank") / "runs.csv")
    assert len(csv) == len(groups)
