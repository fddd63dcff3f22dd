"""sdlab dashboard entry point (placeholder until the dashboard issue lands: runs and presets only)."""
import streamlit as st

from sdcore.config import PRESETS
from sdcore.runs import RunStore

st.set_page_config(page_title="sdlab", layout="wide")
st.title("sdlab — self-distillation lab")
st.caption("The full dashboard (train, live curves, compare, BYOT exits) is under construction. "
           "Meanwhile train from a terminal: `python -m sdcore train --preset demo`.")

st.subheader("Runs")
store = RunStore()
rows = []
for run in store:
    summary = run.summary() or {}
    rows.append({"run": run.id, "test acc % by round": ", ".join(f"{r['test_acc']:.2f}" for r in summary.get("rounds", []))})
if rows:
    st.dataframe(rows, hide_index=True)
else:
    st.info(f"No runs yet in {store.root}.")

st.subheader("Presets")
st.dataframe([{"preset": p.name, "what it mirrors": p.description} for p in PRESETS.values()], hide_index=True)
