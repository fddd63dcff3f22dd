"""The pages, each at its own URL path, and how one page opens another."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parents[2]
PAGE_SPECS = (  # (file stem = url path, title, icon)
    ("train", "Train", ":material/model_training:"),
    ("sweeps", "Sweeps", ":material/grid_on:"),
    ("live", "Live", ":material/monitoring:"),
    ("compare", "Compare", ":material/compare_arrows:"),
    ("students", "Teacher vs students", ":material/compare:"),
    ("byot", "BYOT exits", ":material/call_split:"),
    ("calibration", "Calibration", ":material/tune:"),
    ("robustness", "Robustness", ":material/shield:"),
    ("hessian", "Hessian", ":material/insights:"),
    ("landscape", "Loss surface", ":material/landscape:"),
    ("papers", "Paper tables", ":material/menu_book:"),
    ("runs", "Runs", ":material/folder_open:"),
)


def pages() -> dict[str, st.Page]:
    """Every page at its own URL path (/train, /live, ...): a link to any of them opens that page."""
    return {stem: st.Page(str(ROOT / "pages" / f"{stem}.py"), title=title, icon=icon, url_path=stem)
            for stem, title, icon in PAGE_SPECS}


def navigation() -> list[st.Page]:
    """What st.navigation gets: the pages, and a hidden default page that sends "/" on to /train. (Streamlit
    serves its default page at "/" only: with Train as the default, /train answered "Page not found".)"""
    return [st.Page(partial(go_to, "train"), title="Train", url_path="home", default=True, visibility="hidden"),
            *pages().values()]


def go_to(stem: str) -> None:
    st.switch_page(pages()[stem])
