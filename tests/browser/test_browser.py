"""End to end in Chromium: the first-visit demo, every page, and cancelling a run.

Streamlit reruns asynchronously and the Live page refreshes every second, so every step waits on a
condition in the DOM (with a deadline), never on a fixed sleep. Screenshots: tests/output/screenshots/.
"""
from __future__ import annotations

import re

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                    "(pip install -r requirements-dev.txt)")
from playwright.sync_api import Page, expect  # noqa: E402

TRAINING_S = 240  # the demo: ~20 s alone on 2 CPU cores, ~65 s while Live refreshes (see the report), more under load
# Streamlit serves the default page (Train) at the root: /train answers "Page not found" and falls back.
URL_PATHS = {"train": "", "live": "live", "compare": "compare", "byot": "byot", "hessian": "hessian",
             "landscape": "landscape", "runs": "runs"}
TITLES = {"train": "Train a teacher and its students", "live": "Live training",
          "compare": "Compare teacher and students", "byot": "BYOT: one network, several exits",
          "hessian": "Hessian: how sharp is each minimum?", "landscape": "Loss surface: how wide is each minimum?",
          "runs": "Run library"}


def settle(page: Page, *, idle: bool = True, timeout_s: float = 30) -> None:
    """Wait until nothing is stale or still loading (lazy elements show an stSkeleton first) and every
    Plotly chart has drawn; with `idle`, also until the script run is over (not while Live refreshes)."""
    page.wait_for_function(
        """(idle) => {
            const app = document.querySelector('[data-testid="stApp"]');
            if (!app) return false;
            if (idle && (app.getAttribute('data-test-script-state') !== 'notRunning'
                         || document.querySelector('[data-testid="stStatusWidget"]'))) return false;
            if (document.querySelector('[data-stale="true"], [data-testid="stSkeleton"]')) return false;
            const charts = document.querySelectorAll('[data-testid="stPlotlyChart"]');
            return [...charts].every(c => c.querySelector('.js-plotly-plot .main-svg'));
        }""", arg=idle, timeout=timeout_s * 1000)


def shoot(page: Page, screenshots, name: str) -> None:
    """Full-page screenshot. Streamlit scrolls inside its own container, so grow the viewport to the
    content's height for the shot (same width: charts keep their layout) and restore it after."""
    viewport = page.viewport_size
    height = page.evaluate(
        """() => Math.max(document.documentElement.scrollHeight,
               ...[...document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"],'
                  + ' [data-testid="stSidebarContent"]')].map(e => e.scrollHeight))""")
    page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], int(height))})
    try:
        page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True, animations="disabled")
    finally:
        page.set_viewport_size(viewport)


def open_page(page: Page, base: str, stem: str) -> None:
    page.goto(f"{base}/{URL_PATHS[stem]}")
    expect(page.locator("h1").filter(has_text=TITLES[stem])).to_be_visible()
    settle(page)


def assert_no_exception(page: Page, where: str) -> None:
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, f"{where}: Streamlit exception box(es): {boxes.all_inner_texts()}"
    dialogs = page.get_by_role("dialog")  # e.g. Streamlit's "Page not found" for a wrong url path
    assert dialogs.count() == 0, f"{where}: unexpected dialog(s): {dialogs.all_inner_texts()}"


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
    settle(page)
    shoot(page, screenshots, "live-done")
    assert_no_exception(page, "live (done)")

    for stem in TITLES:
        open_page(page, server_url, stem)
        assert_no_exception(page, stem)
        if stem == "compare":
            table = page.locator('[data-testid="stDataFrame"]').first
            expect(table).to_contain_text("teacher (round 0)")
            expect(table).to_contain_text("student 1")
            assert page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').count() >= 1
        if stem == "byot":
            expect(page.get_by_role("button", name="Launch the BYOT demo")).to_be_visible()
        if stem in ("hessian", "landscape"):  # minutes on a CPU; tests/test_app.py computes on a tiny model
            expect(page.get_by_role("button", name="Compute")).to_be_visible()
        shoot(page, screenshots, stem)

    # Cancel: launch the demo preset from Train, cancel it on Live.
    open_page(page, server_url, "train")
    page.get_by_role("button", name="Launch", exact=False).click()
    page.wait_for_url(re.compile(r"/live$"))
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_text("Status: cancelled")).to_be_visible(timeout=60_000)
    settle(page)
    assert_no_exception(page, "live (cancelled)")
    shoot(page, screenshots, "live-cancelled")
