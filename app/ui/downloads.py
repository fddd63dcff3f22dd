"""Downloads: a figure as HTML, SVG, PDF or PNG, a table as CSV, a run or sweep as its one-file report, a run folder
as a zip that follows no link."""
from __future__ import annotations

import io
import os
import shutil
import stat
import time
import zipfile
from functools import partial
from pathlib import Path
from typing import Callable

import plotly.graph_objects as go
import streamlit as st

from app.ui.state import run_config, store
from app.ui.text import chart_text
from sdcore import figures
from sdcore.plots import figure_html
from sdcore.report import run_report, sweep_report

STATIC = (("svg", "SVG (vector)"), ("pdf", "PDF (vector)"),
          ("png", f"PNG ({figures.PNG_SCALE}× pixels: {96 * figures.PNG_SCALE} dpi)"))


def run_caption(run_id: str) -> str:
    """"run <id> · demo · kd α=0.2 τ=4 · … · 2 students · 30 epochs": the title of a run's downloaded figure."""
    return figures.run_caption(run_id, run_config(run_id))


def download_figure(fig: go.Figure, name: str, *, key: str, caption: str | None = None) -> None:
    """The figure as ``<name>.html`` (plotly.js inlined, ~4 MB), and in a popover beside it as ``<name>.svg``,
    ``.pdf`` or ``.png`` (``sdcore.figures``: white background, normal text size). ``caption`` (e.g.
    ``run_caption``) is the files' title, as text, so a saved file says which run and config it shows.

    Each file is made only when its button is clicked, in a Streamlit worker thread: the page's script never
    waits for Chromium. The popover's content is drawn only while it is open (opening it reruns the page, or the
    fragment it is in), so a closed one costs a page nothing; without kaleido or Chromium it holds one error line
    saying what to install."""
    with st.container(horizontal=True, gap="small"):
        st.download_button("Download figure (HTML)", partial(figure_html, fig, caption and chart_text(caption)),
                           file_name=f"{name}.html", mime="text/html", key=key, icon=":material/download:",
                           on_click="ignore")
        static = st.popover("SVG · PDF · PNG", icon=":material/image:", key=f"{key}-static", on_change="rerun",
                            help="The figure as a static file for a paper or slides: white background, normal text "
                                 "size, the run's caption on top. Made when you click (the first in a while takes "
                                 "a few seconds more: it starts a headless Chromium).")
    if not static.open:
        return
    with static:
        missing = figures.unavailable()
        if missing:
            st.error(missing)
            return
        for fmt, label in STATIC:
            st.download_button(label, partial(figures.export, fig, fmt, caption=caption), file_name=f"{name}.{fmt}",
                               mime=figures.FORMATS[fmt], key=f"{key}-{fmt}", icon=":material/download:",
                               on_click="ignore", width="stretch")


def download_report(target, name: str, *, key: str, sweep: bool = False) -> None:
    """A run's (or, with ``sweep``, a sweep's) one-file report (``sdcore.report``): built in a Streamlit worker
    thread when clicked (a few tenths of a second, more with many cached analyses), never on a redraw."""
    build = partial(sweep_report, store(), target) if sweep else partial(run_report, target)
    what = "the grid, every trial, and the comparison of their means" if sweep else \
        "the curves, the rounds, every cached analysis, and the paper's finding beside this run's"
    st.download_button("Download report (HTML)", build, file_name=f"{name}-report.html", mime="text/html",
                       key=key, on_click="ignore", icon=":material/description:",
                       help=f"One file that opens offline: the config, the loss, {what}. `python -m sdcore report` "
                            "writes the same.")


def download_csv(text: str | Callable[[], str], name: str, *, key: str, label: str = "Download table (CSV)") -> None:
    """``text`` may be a callable: then the CSV is built only when the button is clicked."""
    st.download_button(label, text, file_name=f"{name}.csv", mime="text/csv", key=key, icon=":material/download:",
                       on_click="ignore")


def run_files(path: Path) -> tuple[list[Path], list[str]]:
    """What the zip of a run folder holds: its regular files (not the lock, not temp files), and what it leaves
    out, as "<path>: <why>". Nothing is followed: a link, to a file or a folder, inside or outside, is left out
    (one to /etc/passwd would put that file in the zip), and so is a FIFO, socket or device (reading a FIFO
    waits for ever). A run folder that is itself a link holds nothing."""
    if path.is_symlink():
        return [], [f"{path.name}: the run folder itself is a link"]
    files, skipped = [], []
    for top, dirs, names in os.walk(path):  # followlinks=False: a linked folder is listed in dirs, never entered
        here = Path(top)
        for name in [d for d in dirs if (here / d).is_symlink()]:
            dirs.remove(name)
            skipped.append(f"{(here / name).relative_to(path)}: a link")
        for name in names:
            p = here / name
            try:
                mode = p.lstat().st_mode
            except OSError as e:
                skipped.append(f"{p.relative_to(path)}: {e.strerror or e}")
                continue
            if stat.S_ISLNK(mode):
                skipped.append(f"{p.relative_to(path)}: a link")
            elif not stat.S_ISREG(mode):
                skipped.append(f"{p.relative_to(path)}: not a regular file")
            elif name != "lock" and not name.endswith(".tmp"):
                files.append(p)
    return sorted(files), sorted(skipped)


def zip_folder(path: Path) -> bytes:
    """The run folder as a zip of ``run_files``; SKIPPED.txt, beside the folder in the zip, says what was left out."""
    files, skipped = run_files(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in files:
            if not _zip_regular(z, p, f"{path.name}/{p.relative_to(path).as_posix()}"):
                skipped.append(f"{p.relative_to(path)}: changed into a link or special file, or unreadable")
        if skipped:
            z.writestr("SKIPPED.txt", "Left out of this zip (links are never followed, nor special files read):\n"
                       + "\n".join(skipped) + "\n")
    return buf.getvalue()


def _zip_regular(z: zipfile.ZipFile, p: Path, arcname: str) -> bool:
    """Add ``p`` if it is a regular file when opened (False otherwise): the open follows no link in its last
    component and does not wait on a FIFO, so a file swapped for one after ``run_files`` looked is left out too."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(p, flags)
    except OSError:
        return False
    with open(fd, "rb") as f:
        st_ = os.fstat(fd)
        if not stat.S_ISREG(st_.st_mode):
            return False
        info = zipfile.ZipInfo(arcname, time.localtime(max(st_.st_mtime, 315532800))[:6])  # zip dates start in 1980
        info.compress_type, info.file_size = zipfile.ZIP_DEFLATED, st_.st_size  # the size picks zip64 if needed
        info.external_attr = (st_.st_mode & 0xFFFF) << 16
        with z.open(info, "w") as out:
            shutil.copyfileobj(f, out)
    return True
