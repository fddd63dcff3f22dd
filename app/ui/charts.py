"""Charts at full width, and the sidebar's presentation mode that enlarges them for a projector."""
from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

from sdcore.plots import presentation


def chart(fig: go.Figure, *, key: str, **kwargs: Any) -> None:
    """A full-width chart, enlarged for a projector when the sidebar's presentation mode is on."""
    st.plotly_chart(presentation(fig, st.session_state.get("presentation", False)), width="stretch", key=key,
                    **kwargs)


def presentation_toggle() -> None:
    """The sidebar switch for ``chart``'s presentation mode (session state "presentation")."""
    st.sidebar.toggle("Presentation mode", key="presentation", help="Chart text of at least 22 px and thicker "
                      "lines and markers, for a projector. Downloads keep the normal size.")
