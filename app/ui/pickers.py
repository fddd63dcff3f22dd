"""Run pickers: a selectbox or multiselect over the run library that stops the page when it is empty."""
from __future__ import annotations

from typing import Callable

import streamlit as st

from app.ui.state import has_exits, run_infos, run_label, store
from sdcore.runs import Run, RunInfo


def run_picker(key: str, keep: Callable[[RunInfo], bool], *, empty: str,
               label: str = "Run") -> tuple[Run, RunInfo]:
    """A selectbox over the runs ``keep`` accepts (newest first); shows ``empty`` and stops if none."""
    infos = [i for i in run_infos() if keep(i)]
    if not infos:
        st.info(empty)
        st.stop()
    by_id = {i.id: i for i in infos}
    run_id = st.selectbox(label, list(by_id), format_func=lambda i: run_label(by_id[i]), key=key)
    return store().get(run_id), by_id[run_id]


def runs_picker(label: str, *, default_count: int, empty: str, key: str | None = None) -> dict[str, RunInfo]:
    """A multiselect over the runs with a finished round (the newest ``default_count`` done ones chosen);
    shows ``empty`` and stops if there are none, a warning and stops if none is picked. Returns id -> info."""
    infos = [i for i in run_infos() if i.rounds_done > 0]
    if not infos:
        st.info(empty)
        st.stop()
    by_id = {i.id: i for i in infos}
    default = [i.id for i in infos if i.status == "done"][:default_count] or [infos[0].id]
    chosen = st.multiselect(label, list(by_id), default=default, format_func=lambda i: run_label(by_id[i]), key=key)
    if not chosen:
        st.warning("Pick at least one run.")
        st.stop()
    return {i: by_id[i] for i in chosen}


def analysis_run(key: str) -> tuple[Run, str, list[int]]:
    """The run picker of the analysis pages: (run, its method, its finished rounds); stops if none."""
    run, info = run_picker(key, lambda i: i.rounds_done > 0 and i.status != "unreadable" and not has_exits(i),
                           empty="No run with a finished round yet. Launch the demo from **Train**.")
    return run, run.config().method, list(range(info.rounds_done))
