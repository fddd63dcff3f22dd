"""Buttons that start work and open Live on it: launch a config, train a preset, resume a run."""
from __future__ import annotations

import streamlit as st

from app.ui.errors import shown_errors
from app.ui.navigation import go_to
from app.ui.state import manager
from app.ui.text import plain
from sdcore.config import PRESETS, ConfigError, RunConfig, preset
from sdcore.jobs import CheckpointDamaged
from sdcore.runs import RESUMABLE, RunError, RunInfo


def launch(cfg: RunConfig, where=st) -> None:
    """Queue a training run of ``cfg`` and open Live on it; a config or data problem is shown at ``where``."""
    with shown_errors(where, stop=False):
        st.session_state["live_run"] = manager().submit(cfg).run_id
        go_to("live")


def preset_button(name: str, *, key: str | None = None) -> None:
    """Where a page recommends a preset: one click trains it as it is and opens Live."""
    box = st.container()
    if st.button(f"Train {name}", icon=":material/play_arrow:", key=key or f"preset-{name}",
                 help=PRESETS[name].description):
        launch(preset(name), box)


def preset_buttons(*names: str) -> None:
    """``preset_button`` for each of ``names``, side by side."""
    if not names:
        return
    for col, name in zip(st.columns(max(len(names), 3)), names):
        with col:
            preset_button(name)


def resume_button(info: RunInfo, *, key: str) -> None:
    """Resume for a cancelled, interrupted or failed run (nothing otherwise): it continues from its last
    finished epoch, and Live follows it."""
    if info.status not in RESUMABLE:
        return
    restart = f"{key}-restart:{info.id}"  # set when the checkpoint turned out damaged: offer the way on
    if st.button("Resume", type="primary", icon=":material/play_arrow:", width="stretch", key=key,
                 help="Continue from the last finished epoch; the result equals an uninterrupted run."):
        _resume(info.id, restart)
    if restart in st.session_state:
        st.error(plain(st.session_state[restart]))
        if st.button(f"Restart round {info.rounds_done}", key=f"{key}-restart", icon=":material/restart_alt:",
                     help="Drop the damaged checkpoint and train the unfinished round again from its first epoch, "
                     "after the finished rounds on disk."):
            _resume(info.id, restart, restart_round=True)


def _resume(run_id: str, restart: str, *, restart_round: bool = False) -> None:
    try:
        run_id = manager().resume(run_id, restart_round=restart_round).run_id
    except CheckpointDamaged as e:
        st.session_state[restart] = str(e).split(". Restart")[0]
        return
    except (RunError, ConfigError) as e:
        st.error(plain(e))
        return
    st.session_state.pop(restart, None)
    if st.session_state.get("live_run") != run_id:  # Live's own selectbox owns the key while it is drawn
        st.session_state["live_run"] = run_id
    go_to("live")


def explain(markdown: str, *, presets: tuple[str, ...] = ()) -> None:
    """The page's explanation, folded; ``presets`` it recommends get a button each (``preset_button``)."""
    with st.expander("What am I looking at?"):
        st.markdown(markdown)
        preset_buttons(*presets)
