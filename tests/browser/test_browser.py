"""End to end in Chromium: the first-visit demo, every page, the Hessian and loss-surface analyses of the
demo run (computed for real, made cheap through the pages' own widgets), and cancelling a run.

Streamlit reruns asynchronously and the Live page refreshes every second, so every step waits on a
condition in the DOM (with a deadline), never on a fixed sleep. Screenshots: tests/output/screenshots/.
"""
from __future__ import annotations

import re
import time

import pytest

# In file order: the tests share their worker's server and its runs (conftest.py); xdist runs a whole file on
# one worker (--dist loadfile, pyproject.toml). Page and expect are playwright's (None without it: the
# `browser` fixture then skips every test, naming the install command).
from browser_steps import (
    ANALYSIS_S,
    TITLES,
    TRAINING_S,
    Page,
    assert_no_exception,
    chart_traces,
    compute_and_wait,
    expect,
    jobs_done,
    open_page,  # tests/browser
    set_number,
    settle,
    shoot,
    show_explanation,
)

pytestmark = pytest.mark.browser


def check_hessian(page: Page, server_url: str, screenshots) -> float:
    """Teacher + student 1, top 5 eigenvalues, 64 training examples: λ_max/trace bars, table, density, ECDF."""
    open_page(page, server_url, "hessian")
    set_number(page, "Top eigenvalues (ECDF)", 5)
    set_number(page, "Training examples used", 64)
    page.get_by_role("button", name="Remove student 2").click()
    settle(page)
    seconds = compute_and_wait(page, missing=3 * 2)  # eigenvalues, trace, density per round
    assert_no_exception(page, "hessian (results)")
    table = page.locator('[data-testid="stDataFrame"]')
    expect(table).to_contain_text("teacher (round 0)")
    expect(table).to_contain_text("student 1")
    expect(table).not_to_contain_text("student 2")
    expect(page.get_by_role("heading", name="Eigen-spectral density")).to_be_visible()
    expect(page.get_by_role("heading", name="ECDF of the top 5 eigenvalues")).to_be_visible()
    bars, density, ecdf = chart_traces(page)
    assert bars == [("bar", 2), ("bar", 2)], bars  # λ_max and trace, one bar per round
    assert len(density) == 2 and all(n > 10 for _, n in density), density
    assert ecdf == [("scatter", 5), ("scatter", 5)], ecdf
    show_explanation(page, "This run:")
    settle(page)
    shoot(page, screenshots, "hessian-results")
    return seconds


def check_landscape(page: Page, server_url: str, screenshots) -> float:
    """Every round on a 5×5 grid: 2D contours, a 3D surface per round, teacher→student lines, noise curves."""
    open_page(page, server_url, "landscape")
    set_number(page, "Grid points per axis", 5)
    seconds = compute_and_wait(page, missing=3 + 2 + 3)  # surface and flatness per round, interpolation per student
    assert_no_exception(page, "landscape (results)")
    for heading in ("2D contours", "3D surfaces", "From the teacher to each student", "Under Gaussian weight noise"):
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
    contours, *surfaces, interp, noise = chart_traces(page)
    assert contours == [("contour", 5)] * 3, contours
    assert surfaces == [[("surface", 5)]] * 3, surfaces
    assert [t for t, _ in interp] == ["scatter"] * 2 and all(n >= 5 for _, n in interp), interp  # students 1, 2
    assert [t for t, _ in noise] == ["scatter"] * 3 and all(n > 1 for _, n in noise), noise
    show_explanation(page, "filter-normalized plots")
    settle(page)
    shoot(page, screenshots, "landscape-results")
    return seconds


def test_demo_every_page_and_cancel(browser, page: Page, server_url: str, screenshots) -> None:
    # (`browser` first: without Chromium or playwright the test skips before a server starts.)
    # A first-time visitor (no runs): one click runs the demo and follows it on Live.
    page.goto(server_url)
    page.get_by_role("button", name="Run the demo").click()
    page.wait_for_url(re.compile(r"/live$"))
    expect(page.locator("h1").filter(has_text=TITLES["live"])).to_be_visible()

    # The chart refreshes every second; a student's curve appears once the teacher's round is over.
    student_chart = page.locator(".js-plotly-plot").filter(has_text="student 1")
    expect(student_chart.first).to_be_visible(timeout=TRAINING_S * 1000)
    settle(page, idle=False)
    shoot(page, screenshots, "live-training")

    # Live itself says so (the sidebar's "No job running." can come a second before Live's own refresh).
    expect(page.get_by_text("Status: done")).to_be_visible(timeout=TRAINING_S * 1000)
    # Then the curvature of every kept model, computed right after training: Live ends with both answers.
    expect(page.get_by_role("heading", name="More accurate, and flatter?")).to_be_visible()
    answers = page.get_by_text(re.compile(r"^student \d is .* than the teacher \("))
    expect(answers).to_have_count(2, timeout=ANALYSIS_S * 1000)
    settle(page)
    assert_no_exception(page, "live (done)")
    curves, *rest = chart_traces(page)
    assert sum(1 for kind, n in curves if kind == "scatter" and n == 1) == 6, curves  # a ★ per round, both panels
    assert rest[-1] == [("bar", 3), ("bar", 3)], rest  # λ_max and trace of teacher and both students
    shoot(page, screenshots, "live-done")

    # Presentation mode (sidebar) for a projector: the same page, large chart text; then back.
    page.get_by_text("Presentation mode", exact=True).click()
    page.wait_for_function("""() => {  // every axis title of every chart redrawn at projector size
        const sizes = [...document.querySelectorAll('.js-plotly-plot text[class$="title"]')]  // xtitle, y2title, ...
            .map(e => parseFloat(getComputedStyle(e).fontSize));
        return sizes.length >= 4 && Math.min(...sizes) >= 20;
    }""", timeout=30_000)
    settle(page)
    shoot(page, screenshots, "live-done-presentation")
    page.get_by_text("Presentation mode", exact=True).click()
    settle(page)

    for stem in TITLES:
        open_page(page, server_url, stem)
        if stem in ("compare", "students", "robustness", "calibration", "byot", "papers"):
            jobs_done(page)  # their analyses are background jobs: the page shows the results once they end
        assert_no_exception(page, stem)
        if stem == "compare":
            table = page.locator('[data-testid="stDataFrame"]').first
            expect(table).to_contain_text("teacher (round 0)")
            expect(table).to_contain_text("student 1")
            assert page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').count() >= 1
        if stem == "students":
            expect(page.locator('[data-testid="stDataFrame"]').first).to_contain_text("student 1")
            expect(page.locator('[data-testid="stImage"]').first).to_be_visible()  # the gallery of test digits
            assert page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').count() == 2
        if stem == "robustness":
            expect(page.locator('[data-testid="stDataFrame"]').first).to_contain_text("teacher (round 0)")
            assert page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').count() == 2  # one run: no α plot
        if stem == "papers":
            expect(page.locator('[data-testid="stDataFrame"]').first).to_contain_text("paper")
        if stem == "calibration":
            expect(page.locator('[data-testid="stDataFrame"]').first).to_contain_text("teacher (round 0)")
            assert page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').count() == 1
        if stem == "byot":
            expect(page.get_by_role("button", name="Launch the BYOT demo")).to_be_visible()
        if stem in ("hessian", "landscape"):  # default settings: minutes on a CPU; cheap settings computed below
            expect(page.get_by_role("button", name="Compute")).to_be_visible()
        shoot(page, screenshots, stem)

    # The analyses of the demo run, computed for real (each cached in the run folder afterwards).
    start = time.monotonic()
    hessian_s = check_hessian(page, server_url, screenshots)
    landscape_s = check_landscape(page, server_url, screenshots)
    print(f"analysis pages: {time.monotonic() - start:.0f} s in all (compute: Hessian {hessian_s:.0f} s, "
          f"loss surface {landscape_s:.0f} s)")

    # Cancel: launch the demo preset from Train, cancel it on Live.
    open_page(page, server_url, "train")
    page.get_by_role("button", name="Launch", exact=False).click()
    page.wait_for_url(re.compile(r"/live$"))
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_text("Status: cancelled")).to_be_visible(timeout=60_000)
    settle(page)
    assert_no_exception(page, "live (cancelled)")
    shoot(page, screenshots, "live-cancelled")



def test_every_page_opens_from_its_own_url(browser, page: Page, server_url: str, screenshots) -> None:
    """A link to any page opens that page (no "Page not found" dialog), and the root opens Train."""
    for stem in TITLES:
        open_page(page, server_url, stem)
        assert_no_exception(page, f"/{stem}")
        assert page.url == f"{server_url}/{stem}"
    page.goto(server_url)  # a hidden default page sends the root on to Train (app.ui.navigation)
    expect(page.locator("h1").filter(has_text=TITLES["train"])).to_be_visible()
    settle(page)
    assert_no_exception(page, "/")
    expect(page.locator('[data-testid="stSidebarNav"] a[aria-current="page"]')).to_have_attribute(
        "href", f"{server_url}/train")
    shoot(page, screenshots, "root-opens-train")
