"""sdlab dashboard: `streamlit run app/main.py`. Navigation over the top-level pages/ folder."""
import os
import sys
from pathlib import Path

# Before torch loads OpenMP (app.ui imports it): idle threads sleep instead of spinning against the
# laptop's other programs (BENCHMARKS.md, "Threads on a busy laptop"); an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `app.ui` and `sdcore` import from the repository root
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import ui  # noqa: E402

st.set_page_config(page_title="sdlab — self-distillation lab", page_icon=":material/school:", layout="wide")
ui.serve_locally()  # before any page: on a network address it refuses unless SDLAB_ALLOW_REMOTE=1
nav = st.navigation(ui.navigation())
st.sidebar.markdown("### sdlab\nWhy can a student beat a teacher with the same architecture?")
ui.presentation_toggle()
ui.jobs_sidebar()
nav.run()
