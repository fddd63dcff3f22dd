"""End to end in Chromium: the first-visit demo, every page, the Hessian and loss-surface analyses of the
demo run (computed for real, made cheap through the pages' own widgets), and cancelling a run.

Streamlit reruns asynchronously and the Live page refreshes every second, so every step waits on a
condition in the DOM (with a deadline), never on a fixed sleep. Screenshots: tests/output/screenshots/.
"""
from __future__ import annotations

import re
import time

import pytest

try:
    from playwright.sync_api import Page, expect
except ImportError:  # the `browser` fixture skips every test, naming the install command
    pass

# In file order: the tests share the session's server and its runs (conftest.py); one xdist worker runs the
# whole file (--dist loadfile, pyproject.toml).
pytestmark = pytest.mark.browser

ANALYSIS_S = 180  # each analysis below: 6-12 s on 2 idle CPU cores; once 70 s while other jobs ran
TRAINING_S = 240  # the demo: ~10 s alone on 2 CPU cores, ~2x that beside two busy processes (BENCHMARKS.md)
TITLES = {"train": "Train a teacher and its students", "live": "Live training",
          "compare": "Compare teacher and students", "students": "Teacher vs students: what changes between rounds?",
          "byot": "BYOT: one network, several exits", "calibration": "Calibration: can you trust each model's confidence?",
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


def test_byot_internals_dml_and_ensembles(browser, page: Page, server_url: str, server_runs, screenshots) -> None:
    """Runs trained straight into the server's runs folder: a BYOT network, a DML cohort and two seeds
    of one KD config; the pages that need them draw their sections with real numbers."""
    from sdcore.config import preset
    from sdcore.methods import train

    quick = {"epochs": 5, "data.subset": 500}
    train(preset("demo-byot").replace(**quick), runs_dir=server_runs)
    for seed in (0, 1):
        train(preset("demo").replace(name="demo-quick", seed=seed, **quick), runs_dir=server_runs)
    train(preset("demo").replace(name="demo-quick", **quick, **{"model.teachers": 2}), runs_dir=server_runs)
    sam, _ = train(preset("demo-sam").replace(**quick), runs_dir=server_runs)
    dml, _ = train(preset("demo-dml").replace(**quick), runs_dir=server_runs)

    open_page(page, server_url, "byot")
    assert_no_exception(page, "byot")
    expect(page.get_by_text("Gradients reaching each layer")).to_be_visible()
    expect(page.locator('[data-testid="stDataFrame"]').filter(has_text="SSE/SSB")).to_be_visible()
    assert page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').count() >= 5  # curves, bars, latency, grads, PCA
    grads = page.locator(".js-plotly-plot").filter(has_text="trained alone").filter(has_text="convolution layer")
    expect(grads.first).to_be_visible()  # the baseline is a KD teacher (same 3 convolutions), not the DML cohort
    shoot(page, screenshots, "byot-internals")

    open_page(page, server_url, "compare")
    assert_no_exception(page, "compare")
    expect(page.get_by_text("Ensembles: BAN vs models trained independently")).to_be_visible()
    expect(page.locator('[data-testid="stDataFrame"]').filter(has_text="independent teachers")).to_be_visible()
    expect(page.get_by_text("More teachers, better student? (ensemble as teacher)")).to_be_visible()
    shoot(page, screenshots, "compare-ensembles")

    # Hessian of one quick run's rounds next to the SAM run's teacher (both computed in the background).
    open_page(page, server_url, "hessian")
    page.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option").filter(has_text="-demo-quick").first.click()
    settle(page)
    set_number(page, "Top eigenvalues (ECDF)", 3)
    set_number(page, "Training examples used", 64)
    page.get_by_role("combobox", name="Baselines", exact=False).click()
    page.get_by_role("option").filter(has_text="SAM ρ=0.05").first.click()
    page.keyboard.press("Escape")
    settle(page)
    page.get_by_role("button", name="Compute").click()  # the run's rounds first ...
    expect(page.get_by_role("button", name="Compute")).to_be_hidden()
    expect(page.get_by_text("3 result(s) for these settings are not computed yet")).to_be_visible(
        timeout=ANALYSIS_S * 1000)  # ... then the page asks for the baseline's teacher
    compute_and_wait(page, missing=3)
    expect(page.locator('[data-testid="stDataFrame"]').first).to_contain_text("SAM ρ=0.05")
    assert_no_exception(page, "hessian (SAM baseline)")
    shoot(page, screenshots, "hessian-sam-baseline")

    page.goto(f"{server_url}/live")
    expect(page.locator("h1").filter(has_text=TITLES["live"])).to_be_visible()
    select = page.locator('[data-testid="stSelectbox"]').first
    if dml.id not in select.inner_text():  # Live opens the newest run; pick the DML one if it did not
        select.click()
        page.get_by_role("option").filter(has_text=dml.id).first.click()
    settle(page)
    assert_no_exception(page, "live (dml)")
    expect(page.locator(".js-plotly-plot").filter(has_text="peer 2").first).to_be_visible()
    shoot(page, screenshots, "live-dml")


def test_sweep_from_the_train_page(browser, page: Page, server_url: str, screenshots) -> None:
    """A 2-trial seed sweep launched from the Train page on a local Ray, followed to the end."""
    pytest.importorskip("ray", reason="sweeps need Ray (pip install -r requirements-sweep.txt)")
    open_page(page, server_url, "train")
    set_number(page, "Epochs per round", 3)
    set_number(page, "Students", 1)
    page.get_by_text("Sweep: this config over a grid of values").click()
    grid = page.get_by_label("Grid", exact=True)
    grid.fill("seed=0,1")
    grid.press("Control+Enter")  # commits a st.text_area
    expect(page.get_by_role("button", name="Launch sweep (2 trials)")).to_be_visible()
    settle(page)
    shoot(page, screenshots, "train-sweep-form")
    page.get_by_role("button", name="Launch sweep (2 trials)").click()
    expect(page.get_by_text("2 trials: 2 done")).to_be_visible(timeout=TRAINING_S * 1000)
    expect(page.get_by_role("button", name="Stop the sweep")).to_be_hidden(timeout=60_000)  # the driver exited
    settle(page)
    assert_no_exception(page, "train (sweep)")
    table = page.locator('[data-testid="stDataFrame"]').last
    expect(table).to_contain_text("seed=1")
    expect(page.get_by_role("link", name="Compare the trials (mean ± std over seeds)")).to_be_visible()
    shoot(page, screenshots, "train-sweep-done")


def test_terms_on_train_and_the_grid_on_compare(browser, page: Page, server_url: str, server_runs,
                                                 screenshots) -> None:
    """Train: one network with PS-KD, BYOT and DMFL ticked (each term's fields, the whole loss). Compare: seed
    paper 003's grid from tiny runs (3 of its 8 rows, 2 seeds) beside the paper's Table 1. Last in this file:
    its runs would change what the other tests' pages pick by default."""
    from sdcore.config import preset
    from sdcore.methods import train

    tiny = {"epochs": 2, "data.subset": 300, "model.width": 0.5}
    for seed in (0, 1):
        for name in ("demo-baseline", "demo-pskd", "demo-pskd-byot-dmfl"):
            train(preset(name).replace(**tiny, seed=seed), runs_dir=server_runs)

    open_page(page, server_url, "train")
    page.locator('[data-testid="stButtonGroup"] button').filter(has_text="one network").click()
    settle(page)
    for term in ("PS-KD", "BYOT", "DMFL"):
        page.locator('[data-testid="stCheckbox"]').filter(has_text=term).first.click()
        settle(page)
    expect(page.get_by_text("PS-KD + BYOT + DMFL", exact=True)).to_be_visible()
    for label in ("BYOT style (whose exit loss)", "DMFL weight", "PS-KD: hard-label weight at the end"):
        expect(page.get_by_text(label, exact=True)).to_be_visible()
    expect(page.get_by_label("Students", exact=True)).to_have_count(0)  # one network: no rounds
    formula = page.locator('[data-testid="stMarkdownContainer"] .katex-display').first
    expect(formula).to_contain_text("softmax")  # DMFL's q_i, the last term of the loss
    assert_no_exception(page, "train (terms)")
    shoot(page, screenshots, "train-terms")

    open_page(page, server_url, "compare")
    assert_no_exception(page, "compare (terms grid)")
    expect(page.get_by_role("heading", name="Self-distillation terms: seed paper 003's Table 1")).to_be_visible()
    grids = page.locator('[data-testid="stDataFrame"]').filter(has_text="time per epoch (s)")
    expect(grids).to_have_count(2)  # your runs, the paper's
    expect(grids.first).to_contain_text("missing")
    expect(grids.first).to_contain_text("±")
    page.get_by_role("heading", name="Self-distillation terms: seed paper 003's Table 1").scroll_into_view_if_needed()
    shoot(page, screenshots, "compare-terms-grid")
