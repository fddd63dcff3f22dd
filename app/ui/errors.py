"""The errors a page shows to people (ConfigError, DataError, RunError) and the one place that shows them."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import streamlit as st

from app.ui.text import plain
from sdcore.config import ConfigError
from sdcore.data import DataError
from sdcore.runs import RunError

USER_ERRORS = (ConfigError, DataError, RunError)  # messages written for people (STYLE.md rule 11): st.error


@contextmanager
def shown_errors(where=st, *, stop: bool = True) -> Iterator[None]:
    """``with ui.shown_errors(): ...``: a ``USER_ERRORS`` raised in the block is shown with st.error at ``where``
    (st, or a container) and stops the page; with ``stop=False`` the page goes on after the block instead."""
    try:
        yield
    except USER_ERRORS as e:
        where.error(plain(e), icon=":material/error:")
        if stop:
            st.stop()
