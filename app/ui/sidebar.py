"""The sidebar every page shares: running and queued jobs and sweeps."""
from __future__ import annotations

import streamlit as st

from app.ui.analyses import analysis_text
from app.ui.state import manager, store
from app.ui.text import code
from sdcore import sweep as sw


def jobs_sidebar() -> None:
    """Running and queued jobs, refreshed every second while there are any."""
    def live_sweeps() -> list:
        return [s for s in sw.list_sweeps(store()) if s.is_live()]

    active = bool(manager().active()) or bool(live_sweeps())

    @st.fragment(run_every=1.0 if active else None)
    def render() -> None:
        jobs, sweeps = manager().active(), live_sweeps()
        st.markdown("**Jobs**")
        if not jobs and not sweeps:
            st.caption("No job running.")
        for sweep in sweeps:  # its trials run in the sweep's own processes (Ray), not in this app's queue
            states = sw.trial_states(store(), sweep)
            done = sum(t.state == "done" for t in states)
            st.progress(sw.overall(states), text=f"sweep {code(sweep.id)}: {done}/{len(states)} trials done")
        for h in jobs:
            p = h.progress()
            eta = f", {p.eta_s:.0f} s left" if p.eta_s is not None else ""
            if p.status != "running":
                where = p.status
            elif h.kind == "analysis":  # the line says the time left itself
                where, eta = analysis_text(h), ""
            else:
                where = (f"round {p.round}/{p.rounds - 1} · " if p.rounds > 1 else "") + f"epoch {p.epoch}/{p.epochs}"
            st.progress(p.fraction, text=f"{code(h.run_id)} {where}{eta}")

    with st.sidebar:
        render()
