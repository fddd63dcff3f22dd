"""Runs: the run library — status, what each run is; open, rename, delete, resume, download."""
from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from app import ui
from sdcore.analysis.compare import config_label
from sdcore.config import ConfigError
from sdcore.provenance import describe as provenance_line
from sdcore.runs import RunError, records_csv

st.title("Run library")
st.caption(f"Runs live in {ui.code(ui.store().root.resolve())} (set `SDLAB_RUNS_DIR` to use another folder).")
infos = ui.run_infos()
if not infos:
    st.info("No runs yet. Launch the demo from **Train**.")
    st.stop()


def describe(info) -> str:
    if info.status == "unreadable":
        return f"unreadable: {info.problem}"
    try:
        return config_label(ui.store().get(info.id).config())
    except (RunError, ConfigError, OSError) as e:
        return f"unreadable: {e}"


rows = [{"run": i.id, "status": i.status, "what": describe(i), "created": i.created.replace("T", " ")[:19],
         "rounds done": i.rounds_done, "test_acc": list(i.test_acc), "error": i.error} for i in infos]
table = pd.DataFrame([{**r, "test_acc": "  ".join(f"{a:.2f}" for a in r["test_acc"])} for r in rows]).rename(
    columns={"test_acc": "test accuracy by round (%)"})
st.dataframe(table, hide_index=True, width="stretch")
# The CSV has a number per round (test_acc.0, test_acc.1, ...) where the screen joins them in one cell.
ui.download_csv(partial(records_csv, rows), "runs", key="dl-runs", label="Download this list (CSV)")

st.subheader("Act on a run")
by_id = {i.id: i for i in infos}
if "runs_next" in st.session_state:  # chosen by a rename/delete of the previous run; widgets own their key
    st.session_state["runs_selected"] = st.session_state.pop("runs_next")
if st.session_state.get("runs_selected") not in by_id:
    st.session_state.pop("runs_selected", None)
run_id = st.selectbox("Run", list(by_id), format_func=lambda i: ui.run_label(by_id[i]), key="runs_selected")
info = by_id[run_id]
run = ui.store().get(run_id)
busy = info.status in ("queued", "running")
try:  # status.json as written at the run's latest start (packages.txt beside it pins every package)
    record = run.status_record() if info.status != "unreadable" else {}
    if record.get("started"):
        st.caption("Trained with: " + ui.plain(provenance_line(record, deterministic=run.config().deterministic)))
except (RunError, OSError):  # changed on disk since the listing: the list above says so on the next rerun
    pass

c1, c2, c3 = st.columns(3)
with c1:
    if st.button("Open in Live", icon=":material/monitoring:", width="stretch"):
        st.session_state["live_run"] = run_id
        ui.go_to("live")
    ui.resume_button(info, key="runs-resume")
with c2:
    with st.form("rename", border=False):
        new_name = st.text_input("New name", placeholder="e.g. alpha 0.5 noisy labels")
        if st.form_submit_button("Rename", icon=":material/edit:", disabled=busy):
            try:
                moved = ui.store().rename(run_id, new_name)
                st.session_state["runs_next"] = moved.id
                st.rerun()
            except (RunError, ConfigError, OSError) as e:  # OSError: the folder could not be moved
                st.error(ui.plain(e))
with c3:
    confirm = st.checkbox("Confirm delete", disabled=busy, help=f"Deletes {ui.plain(run_id)} and its models for good.")
    if st.button("Delete", icon=":material/delete:", disabled=busy or not confirm, width="stretch"):
        try:
            ui.store().delete(run_id)
            st.rerun()
        except (RunError, OSError) as e:  # OSError: a file could not be removed; the page stays up
            st.error(ui.plain(e))
    if busy:
        st.caption("Cancel it in Live before renaming or deleting it.")

if info.status != "unreadable":
    d1, d2, d3 = st.columns(3)
    with d1:
        ui.download_csv(partial(records_csv, ui.metrics(run)), f"{run_id}-metrics", key="dl-metrics",
                        label="Download metrics (CSV)")
    with d2:
        st.download_button("Download the run folder (zip)", partial(ui.zip_folder, run.path),  # built on click
                           file_name=f"{run_id}.zip",
                           mime="application/zip", icon=":material/folder_zip:", key="dl-zip",
                           disabled=busy)
        skipped = ui.run_files(run.path)[1]
        if skipped:
            st.caption(f"Left out of the zip (its SKIPPED.txt lists them): {ui.plain('; '.join(skipped[:5]))}"
                       + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""))
    with d3:
        ui.download_report(run, run_id, key="dl-report")
ui.explain(
    "Every run is a folder: its config, status, per-epoch metrics, the kept model of each round and a "
    "summary. Everything the dashboard shows is rebuilt from these folders, so runs survive restarts. "
    "A run stopped by *Cancel* or by a closed laptop (*interrupted*) resumes from its last finished epoch "
    "and ends with exactly the numbers an uninterrupted run would have. Runs that differ only by their seed "
    "are pooled on **Compare**.")
