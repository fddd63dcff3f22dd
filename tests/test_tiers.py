"""The suite's own promise: without Chromium the browser tier says so once, at the end (just above pytest's
count line), with the install command; run as the README runs it (xdist workers report their skips to the
main process, which prints the line)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_without_chromium_the_browser_skip_is_one_line_at_the_end(tmp_path):
    env = {**os.environ, "SDLAB_CHROMIUM": str(tmp_path / "no-chromium")}
    p = subprocess.run([sys.executable, "-m", "pytest", "tests/browser", "-q", "-p", "no:cacheprovider"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    assert p.returncode == 0, p.stdout[-3000:]
    message = f"browser tests skipped: Chromium not found at {tmp_path / 'no-chromium'} — apt-get install -y chromium"
    assert lines[-2] == message, lines[-5:]
    assert p.stdout.count("browser tests skipped") == 1, p.stdout  # not once per test in the short summary
    assert re.fullmatch(r"\d+ skipped in [\d.]+s( \(.*\))?", lines[-1]), lines[-1]  # every browser test, none ran
