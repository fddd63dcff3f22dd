"""What every page shares, one module per concern; ``from app import ui`` then ``ui.<name>`` reaches all of it.

    serving     the loopback guard (serve_locally): no login, so no network address unless asked for
    text        plain, code, chart_text: run names, errors and paths as literal text in markdown and plotly
    errors      USER_ERRORS and shown_errors: a ConfigError, DataError or RunError shown with st.error
    state       the JobManager (manager, store) and run folders read through Streamlit's caches
    navigation  PAGE_SPECS, pages, navigation, go_to
    buttons     launch, preset_button(s), resume_button, explain
    pickers     run_picker, runs_picker, analysis_run
    charts      chart and the sidebar's presentation mode
    downloads   a figure as HTML / SVG / PDF / PNG, a table as CSV, a run's or sweep's report, a run folder as a zip
    sidebar     jobs_sidebar: running jobs and sweeps
    tables      rounds_table, arrow, delta_color
    analyses    what the analysis pages share: background computing, cached results, baselines

Pages stay thin: widgets -> one sdcore call -> render. Nothing here trains or computes.
"""
from app.ui.analyses import (
    analysis_results,
    analysis_text,
    baseline_picker,
    baseline_results,
    compute_in_background,
    follow_jobs,
    run_result,
    run_results,
)
from app.ui.buttons import explain, launch, preset_button, preset_buttons, resume_button
from app.ui.charts import chart, presentation_toggle
from app.ui.downloads import (
    download_csv,
    download_figure,
    download_report,
    run_caption,
    run_files,
    zip_folder,
)
from app.ui.errors import USER_ERRORS, shown_errors
from app.ui.navigation import PAGE_SPECS, ROOT, go_to, navigation, pages
from app.ui.pickers import analysis_run, run_picker, runs_picker
from app.ui.serving import ALLOW_REMOTE, exposed_address, serve_locally
from app.ui.sidebar import jobs_sidebar
from app.ui.state import (
    device_caption,
    has_exits,
    manager,
    metrics,
    multi_round,
    run_config,
    run_estimate,
    run_infos,
    run_label,
    store,
)
from app.ui.tables import arrow, delta_color, rounds_table
from app.ui.text import chart_text, code, plain

__all__ = [
    "ALLOW_REMOTE", "PAGE_SPECS", "ROOT", "USER_ERRORS", "analysis_results", "analysis_run", "analysis_text",
    "arrow", "baseline_picker", "baseline_results", "chart", "chart_text", "code", "compute_in_background",
    "delta_color", "device_caption", "download_csv", "download_figure", "download_report", "explain",
    "exposed_address", "follow_jobs",
    "go_to", "has_exits", "jobs_sidebar", "launch", "manager", "metrics", "multi_round", "navigation", "pages",
    "plain", "presentation_toggle", "preset_button", "preset_buttons", "resume_button", "rounds_table",
    "run_caption", "run_config",
    "run_estimate", "run_files", "run_infos", "run_label", "run_picker", "run_result", "run_results",
    "runs_picker", "serve_locally", "shown_errors", "store", "zip_folder",
]
