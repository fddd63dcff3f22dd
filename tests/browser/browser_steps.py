"""What the browser tests do on a page: wait for Streamlit to settle, open a page, set a number, click Compute and
wait, read the charts' traces, take a full-page screenshot. Streamlit reruns asynchronously and Live refreshes
every second, so every step waits on a condition in the DOM (with a deadline), never on a fixed sleep."""
from __future__ import annotations

import time

try:
    from playwright.sync_api import Page, expect
except ImportError:  # the `browser` fixture (conftest.py) skips every test, naming the install command
    Page = expect = None

ANALYSIS_S = 180  # each analysis below: 6-12 s on 2 idle CPU cores; once 70 s while other jobs ran
TRAINING_S = 240  # the demo: ~10 s alone on 2 CPU cores, ~2x that beside two busy processes (BENCHMARKS.md)
TITLES = {"train": "Train a teacher and its students", "sweeps": "Sweeps: one config over a grid of values",
          "live": "Live training",
          "compare": "Compare teacher and students", "students": "Teacher vs students: what changes between rounds?",
          "byot": "BYOT: one network, several exits",
          "calibration": "Calibration: can you trust each model's confidence?",
          "robustness": "Robustness: does distillation carry off-distribution?",
          "papers": "Paper tables: your runs beside the papers' numbers",
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
    page.goto(f"{base}/{stem}")
    # The server's first script run imports torch & co.: seconds on a busy machine (the action timeout, not 5 s).
    expect(page.locator("h1").filter(has_text=TITLES[stem])).to_be_visible(timeout=30_000)
    # A page may queue background analyses and redraw when they end; with the other xdist worker's browser test
    # training beside it, the BYOT page once took over 30 s to settle in CI (its own test passes in 70 s alone).
    settle(page, timeout_s=90)


def jobs_done(page: Page, timeout_s: float = ANALYSIS_S) -> None:
    """Wait until the analyses the page queued in the background have ended and it has rerun with their
    results: while they run it says so ("… in the background …") and reruns itself once they end, and
    during that rerun the old elements stay on the page (stale) beside the new ones."""
    expect(page.get_by_text("in the background", exact=False)).to_have_count(0, timeout=timeout_s * 1000)
    settle(page)


def assert_no_exception(page: Page, where: str) -> None:
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, f"{where}: Streamlit exception box(es): {boxes.all_inner_texts()}"
    dialogs = page.get_by_role("dialog")  # e.g. Streamlit's "Page not found" for a wrong url path
    assert dialogs.count() == 0, f"{where}: unexpected dialog(s): {dialogs.all_inner_texts()}"


def set_number(page: Page, label: str, value: int) -> None:
    """Type into a st.number_input and commit it (Enter), then wait for the rerun it starts."""
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    expect(box).to_have_value(str(value))
    settle(page)


def chart_traces(page: Page) -> list[list[tuple[str, int]]]:
    """Per Plotly chart on the page, (trace type, number of points) for each trace it drew."""
    charts = page.evaluate(
        """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')].map(
            gd => (gd.data || []).map(t => [t.type || 'scatter', (t.z || t.y || t.x || []).length]))""")
    return [[(kind, n) for kind, n in chart] for chart in charts]


def compute_and_wait(page: Page, missing: int) -> float:
    """Click Compute on an analysis page (after checking it lists `missing` results, which also proves the
    last widget change reached the server) and wait for the results; the compute's seconds."""
    expect(page.get_by_text(f"{missing} result(s) for these settings are not computed yet")).to_be_visible()
    start = time.monotonic()
    page.get_by_role("button", name="Compute").click()
    # The job runs in a background thread; a fragment polls it every second and reruns the page at the end.
    expect(page.get_by_role("button", name="Compute")).to_be_hidden()
    expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible(timeout=ANALYSIS_S * 1000)
    settle(page)
    return time.monotonic() - start


def show_explanation(page: Page, text: str) -> None:
    """Open the page's "What am I looking at?" expander; wait until `text` shows and it has finished opening."""
    page.get_by_text("What am I looking at?").click()
    expect(page.get_by_text(text, exact=False)).to_be_visible()
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stExpander"]')].every(
            e => e.getAnimations({subtree: true}).length === 0)""")
