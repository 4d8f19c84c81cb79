"""The report on any screen (issue 32): at 1366 px and at 390 px (a phone) headless Chromium lays the
page out without horizontal page scroll, every table in its own scroll box, the decision inside the
viewport and laid out at the device's width (a viewport meta: no shrinking to a third)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.core.paths import Run, report_dir
from tools.report.build import build_report
from tools.report.synthetic import metrics, scores, standard_series, write_run

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
LONG = "a_rather_long_variant_name_for_a_curriculum_stage_with_many_words"


def _page(out_dir: Path) -> Path:
    for i, r in enumerate((4, 8, 16)):
        evals = {("demo_eval", "greedy"): {"metrics": metrics(0.2 + i / 100), "scores": scores(6 + i / 2)}}
        evals[("demo_eval", "t0.7_p0.9")] = {"scores": scores(5 + i)}
        for epoch in (1, 2):
            evals[("demo_dev", "greedy", epoch)] = {
                "items": {f"d{k}": 4.0 + i + epoch / 2 + k % 3 for k in range(9)}
            }
        write_run(
            Run("tiny", "rank", f"{LONG}_r{r}"),
            standard_series(30, eval_every=10),
            {"lora_rank": r},
            evals=evals,
        )
    build_report("rank", with_base=False)
    return report_dir("rank") / "index.html"


MEASURE = """() => {
  const v = document.getElementById('verdict').getBoundingClientRect();
  const tables = [...document.querySelectorAll('table')];
  return {
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    verdict: [v.left, v.right, v.top],
    verdictFont: parseFloat(getComputedStyle(document.getElementById('verdict')).fontSize),
    tablesBoxed: tables.every(t => t.parentElement.classList.contains('scroll')),
    boxesInside: [...document.querySelectorAll('.scroll')].every(b => b.getBoundingClientRect().right <= window.innerWidth + 0.5),
    viewportMeta: !!document.querySelector('meta[name=viewport]'),
  };
}"""


@pytest.mark.slow
@pytest.mark.parametrize("width", [1366, 390])
def test_no_horizontal_page_scroll_and_the_decision_in_view(out_dir, width):
    if not CHROMIUM.exists():
        pytest.skip(
            f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium; make browser)"
        )
    sync_api = pytest.importorskip("playwright.sync_api")
    page_file = _page(out_dir)
    shot = out_dir / f"report_{width}.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            mobile = width < 600
            ctx = browser.new_context(
                viewport={"width": width, "height": 844 if mobile else 900},
                device_scale_factor=3 if mobile else 1,
                is_mobile=mobile,  # a phone honours (or, without one, ignores) the viewport meta
                has_touch=mobile,
            )
            page = ctx.new_page()
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            m = page.evaluate(MEASURE)
            page.screenshot(path=str(shot))
            page.screenshot(path=str(out_dir / f"report_{width}_full.png"), full_page=True)
        finally:
            browser.close()
    print(f"screenshots: {shot} {m}")
    assert m["viewportMeta"]
    assert m["innerWidth"] == width  # laid out at the device's width, not a desktop width shrunk
    assert m["scrollWidth"] <= m["innerWidth"], m  # no horizontal page scroll
    left, right, top = m["verdict"]
    assert 0 <= left and right <= width and top < (844 if width < 600 else 900), m  # the decision in view
    assert m["verdictFont"] >= 14  # readable without zoom
    assert m["tablesBoxed"] and m["boxesInside"], m
    assert shot.stat().st_size > 10_000
