"""The one-file report in a real browser with the network cut off: every section shows, every chart draws, the
loss formula renders as MathML, and nothing is requested but the file itself; the Runs page's button downloads
the same report; Chromium prints it to PDF. Screenshots: tests/output/screenshots/report-*.png.
"""
from __future__ import annotations

import re
import shutil

import pytest
from browser_steps import Page, assert_no_exception, expect, open_page, settle  # tests/browser

from sdcore import report
from sdcore.analysis import registry
from sdcore.analysis.runner import AnalysisSpec, analyze
from sdcore.runs import Run

pytestmark = pytest.mark.browser

TINY = {"epochs": 2, "data.subset": 200, "model.width": 0.25}
# Cheap settings of every curvature and loss-surface analysis (each round: well under a second).
SURFACES = dict(top_k=3, trace_samples=4, subset=64, landscape="2d", steps=5, interpolate=True, flatness=True,
                device="cpu")
KINDS = {"demo": ("calibration", "agreement", "teacher_student", "robustness"),
         "demo-byot": ("calibration", "exit_features", "exit_latency")}


@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory):
    """A KD run (teacher + 1 student) and a BYOT run, each with the analyses a page computes for it cached."""
    root = tmp_path_factory.mktemp("report-runs")
    out = {}
    for name, kinds in KINDS.items():
        run = trained(name, root=root, **TINY, **({"rounds": 1} if name == "demo" else {}))
        analyze(run, AnalysisSpec(rounds=tuple(run.finished_rounds()), **SURFACES))
        for kind in kinds:
            registry.get_or_compute(run, kind)
        out[name] = run
    return out


def open_offline(browser, path):
    """A page showing ``path`` (a file:// URL) with the network off: offline, and every other request aborted and
    recorded. Returns (page, context, requests other than the file, page errors)."""
    context = browser.new_context(viewport={"width": 1300, "height": 1000}, offline=True)
    asked, errors = [], []

    def route(r):
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            asked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(path.as_uri())
    page.wait_for_function("""() => {
        const figs = [...document.querySelectorAll('.plotly-graph-div')];
        return figs.length > 0 && figs.every(d => d.querySelector('.main-svg') && d.data && d.data.length);
    }""", timeout=60_000)
    return page, context, asked, errors


@pytest.mark.parametrize("name", list(KINDS))
def test_the_report_opens_offline_with_every_section_and_chart(browser, runs, tmp_path, screenshots, name) -> None:
    run = runs[name]
    path = tmp_path / "report.html"
    path.write_text(report.run_report(run), encoding="utf-8")
    page, context, asked, errors = open_offline(browser, path)
    try:
        for sid, title in report.RUN_SECTIONS.items():
            expect(page.locator(f"section#{sid} > h2")).to_have_text(title)
            expect(page.locator(f"section#{sid} > h2")).to_be_visible()
        analyses = page.locator("section#analyses h3").all_inner_texts()
        for kind in KINDS[name]:
            assert registry.get(kind).label.capitalize() in [a.capitalize() for a in analyses], analyses
        assert "Hessian curvature" in analyses and "Loss surface and flatness" in analyses
        expect(page.locator(".problem")).to_have_count(0)  # nothing damaged, no section failed
        drawn = page.evaluate("""() => [...document.querySelectorAll('.plotly-graph-div')].map(
            d => d.querySelectorAll('.main-svg .trace, .main-svg .barlayer .point, .main-svg .contour').length)""")
        assert len(drawn) >= 8 and all(drawn), drawn  # curves, curvature, ECDF, landscapes, calibration, ...
        formula = page.locator("section#loss math").first
        box = formula.locator("mtable").bounding_box()  # the aligned rows, laid out as maths
        assert box["height"] > 40 and box["width"] > 150, box
        expect(formula.locator("annotation")).to_be_hidden()  # the LaTeX source rides along, unseen
        assert asked == [], f"the report asked the network for {asked}"
        assert errors == [], errors
        page.screenshot(path=str(screenshots / f"report-{name}.png"), full_page=True)
        formula.screenshot(path=str(screenshots / f"report-{name}-formula.png"))
    finally:
        context.close()


def test_a_sweep_report_opens_offline_with_its_trials_and_comparison(browser, tmp_path, screenshots) -> None:
    """Two seeds of a tiny config, trained here in order as a sweep's trials (no Ray needed), and a pending third."""
    from sdcore.config import preset
    from sdcore.runs import RunStore
    from tests.helpers import trained_sweep

    store = RunStore(tmp_path / "runs")
    sweep = trained_sweep(store, preset("demo").replace(name="tiny", **{**TINY, "epochs": 1, "rounds": 1}),
                          ["seed=0,1,2"], (0, 1))
    path = report.write_report(store, sweep.id)
    page, context, asked, errors = open_offline(browser, path)
    try:
        for sid, title in report.SWEEP_SECTIONS.items():
            expect(page.locator(f"section#{sid} > h2")).to_have_text(title)
            expect(page.locator(f"section#{sid} > h2")).to_be_visible()
        expect(page.locator("section#trials tbody tr")).to_have_count(3)
        expect(page.locator("section#comparison tbody tr")).to_contain_text("±")  # two seeds pooled
        assert asked == [] and errors == []
        page.screenshot(path=str(screenshots / "report-sweep.png"), full_page=True)
    finally:
        context.close()


def test_the_runs_page_downloads_the_same_report(browser, page: Page, server_url: str, server_runs, runs,
                                                 tmp_path, screenshots) -> None:
    """The button builds the report when clicked (a deferred download) and the file is the run's report."""
    run = runs["demo"]
    shutil.copytree(run.path, server_runs / run.id)
    open_page(page, server_url, "runs")
    select = page.locator('[data-testid="stSelectbox"]').first
    if run.id not in select.inner_text():
        select.click()
        page.get_by_role("option").filter(has_text=run.id).first.click()
        settle(page)
    assert_no_exception(page, "runs")
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Download report (HTML)").click()
    assert download.value.suggested_filename == f"{run.id}-report.html"
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    doc = saved.read_text(encoding="utf-8")
    assert doc.startswith("<!DOCTYPE html>") and f"<td>{run.id}</td>" in doc
    written = re.compile(r"Written by sdlab on [0-9: -]+")  # the only difference: when it was written
    assert written.sub("", doc) == written.sub("", report.run_report(Run(server_runs / run.id)))
    shown, context, asked, errors = open_offline(browser, saved)
    try:
        expect(shown.locator("section#paper > h2")).to_be_visible()
        assert asked == [] and errors == []
    finally:
        context.close()


def test_chromium_prints_the_report_to_pdf(browser, runs) -> None:
    pdf = report.run_report(runs["demo"], pdf=True)
    assert pdf.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 3  # several pages: the charts and tables are in it
