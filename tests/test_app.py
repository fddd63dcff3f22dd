"""The dashboard entry point renders without exceptions (placeholder until the dashboard issue)."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from sdcore.config import PRESETS

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"


def test_main_page_lists_presets_and_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(tmp_path))
    at = AppTest.from_file(str(APP)).run(timeout=60)
    assert not at.exception
    assert "sdlab" in at.title[0].value
    assert at.info[0].value.startswith("No runs yet")
    presets = at.dataframe[0].value
    assert list(presets["preset"]) == list(PRESETS)
