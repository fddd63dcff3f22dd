"""Runs trained straight into the server's runs folder, then the pages that need them: BYOT internals, DML,
ensembles and a SAM baseline; a sweep launched from Train; PS-KD / BYOT / DMFL terms and seed paper 003's grid.
A file of its own so that xdist (--dist loadfile) can run it beside test_browser.py; on the same worker the two
share one server, this file after that one (its runs would change what the demo's pages pick by default).
"""
from __future__ import annotations

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
    compute_and_wait,
    expect,
    jobs_done,
    open_page,
    set_number,  # tests/browser
    settle,
    shoot,
)

pytestmark = pytest.mark.browser


def test_byot_internals_dml_and_ensembles(browser, page: Page, server_url: str, server_runs, screenshots) -> None:
    """Runs trained straight into the server's runs folder: a BYOT network, a DML cohort and two seeds
    of one KD config; the pages that need them draw their sections with real numbers."""
    from sdcore.config import preset
    from sdcore.training import train

    quick = {"epochs": 5, "data.subset": 500}
    train(preset("demo-byot").replace(**quick), runs_dir=server_runs)
    for seed in (0, 1):
        train(preset("demo").replace(name="demo-quick", seed=seed, **quick), runs_dir=server_runs)
    train(preset("demo").replace(name="demo-quick", **quick, **{"model.teachers": 2}), runs_dir=server_runs)
    sam, _ = train(preset("demo-sam").replace(**quick), runs_dir=server_runs)
    dml, _ = train(preset("demo-dml").replace(**quick), runs_dir=server_runs)

    open_page(page, server_url, "byot")
    jobs_done(page)  # exit latency and exit features: background jobs
    assert_no_exception(page, "byot")
    expect(page.get_by_text("Gradients reaching each layer")).to_be_visible()
    expect(page.locator('[data-testid="stDataFrame"]').filter(has_text="SSE/SSB")).to_be_visible()
    # curves, bars, latency, grads, PCA
    assert page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').count() >= 5
    grads = page.locator(".js-plotly-plot").filter(has_text="trained alone").filter(has_text="convolution layer")
    expect(grads.first).to_be_visible()  # the baseline is a KD teacher (same 3 convolutions), not the DML cohort
    shoot(page, screenshots, "byot-internals")

    open_page(page, server_url, "compare")
    jobs_done(page)  # agreement, test logits and calibration of the runs: background jobs
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
    """A 2-trial seed sweep of the Train page's form, launched on the Sweeps page on a local Ray, followed to the
    end."""
    pytest.importorskip("ray", reason="sweeps need Ray (pip install -r requirements-sweep.txt)")
    open_page(page, server_url, "train")
    set_number(page, "Epochs per round", 3)
    set_number(page, "Students", 1)
    page.get_by_role("link", name="Sweep this config over a grid of values").click()  # same session: keeps the form
    expect(page.locator("h1").filter(has_text=TITLES["sweeps"])).to_be_visible()
    settle(page)
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
    assert_no_exception(page, "sweeps")
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
    from sdcore.training import train

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
    jobs_done(page)  # the runs' calibration: background jobs
    assert_no_exception(page, "compare (terms grid)")
    expect(page.get_by_role("heading", name="Self-distillation terms: seed paper 003's Table 1")).to_be_visible()
    grids = page.locator('[data-testid="stDataFrame"]').filter(has_text="time per epoch (s)")
    expect(grids).to_have_count(2)  # your runs, the paper's
    expect(grids.first).to_contain_text("±")
    expect(grids.first).to_contain_text("missing")
    page.get_by_role("heading", name="Self-distillation terms: seed paper 003's Table 1").scroll_into_view_if_needed()
    shoot(page, screenshots, "compare-terms-grid")
