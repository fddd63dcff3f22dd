"""Charts at full width, and the sidebar's presentation mode that enlarges them for a projector."""
from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

from sdcore.plots import presentation


def chart(fig: go.Figure, *, key: str, name: str | None = None, **kwargs: Any) -> None:
    """A full-width chart, enlarged for a projector when the sidebar's presentation mode is on.

    The camera button of Plotly's toolbar saves the chart as drawn (the dashboard's theme, the page's width) as
    ``<name>.svg``: ``name`` as the figure's download has it, e.g. "<run-id>-curvature" (default: ``key``).
    ``download_figure`` saves the print version (white, normal text size) as SVG, PDF or PNG."""
    config = {**kwargs.pop("config", {}), "toImageButtonOptions": {"format": "svg", "filename": name or key}}
    st.plotly_chart(presentation(fig, st.session_state.get("presentation", False)), width="stretch", key=key,
                    config=config, **kwargs)


def presentation_toggle() -> None:
    """The sidebar switch for ``chart``'s presentation mode (session state "presentation")."""
    st.sidebar.toggle("Presentation mode", key="presentation", help="Chart text of at least 22 px and thicker "
                      "lines and markers, for a projector. Downloads keep the normal size.")
