"""A real dashboard in a real browser: one Streamlit server per session (fresh, empty runs folder) and
Debian's Chromium driven by Playwright. Never `playwright install`: the browser is /usr/bin/chromium.

Test modules here are marked `browser` and run in file order (the tests
share this session's server and its runs). Where Chromium or the playwright package is missing they skip,
and the run ends with one line saying so, with the install command (tests/conftest.py); CI installs both.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SDLAB_CHROMIUM", "/usr/bin/chromium")  # Debian's; the variable: another build
SCREENSHOTS = ROOT / "tests" / "output" / "screenshots"
VIEWPORT = {"width": 1400, "height": 1000}
# Headless, as root, on a closed network: without the background-networking flags Chromium keeps
# retrying Google services and floods the network.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.read().decode().strip() == "ok"
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server's whole process group (Streamlit plus anything it started); kill if it lingers."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def server_runs(tmp_path_factory) -> Path:
    """The server's SDLAB_RUNS_DIR (empty at start); tests may train runs into it directly."""
    runs = tmp_path_factory.mktemp("browser") / "runs"
    runs.mkdir()
    return runs


@pytest.fixture(scope="session")
def server_url(server_runs: Path) -> str:
    """Base URL of `streamlit run app/main.py` on a free localhost port, over an empty SDLAB_RUNS_DIR."""
    runs = server_runs
    tmp = runs.parent
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
           "--server.headless", "true", "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "SDLAB_RUNS_DIR": str(runs)},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                why = (f"exited with {proc.returncode}" if proc.poll() is not None
                       else f"not healthy in {SERVER_START_S:.0f} s")
                pytest.fail(f"streamlit {why}; its log:\n{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.2)
        yield url
    finally:
        _stop(proc)


NO_PLAYWRIGHT = "browser tests skipped: the playwright package is not installed — " \
    ".venv/bin/pip install -r requirements-dev.txt"
NO_CHROMIUM = f"browser tests skipped: Chromium not found at {CHROMIUM} — apt-get install -y chromium"


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason=NO_PLAYWRIGHT)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(NO_CHROMIUM)
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)  # lets `page` see whether its test failed
    return report


@pytest.fixture
def page(browser, screenshots, request):
    """A fresh 1400x1000 page; on failure its last state is saved as screenshots/FAILED-<test>.png."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    p = context.new_page()
    yield p
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        p.screenshot(path=str(screenshots / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
