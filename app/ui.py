"""What every page shares: the JobManager, cached run reads, navigation, downloads, explanations.

Pages stay thin: widgets -> one sdcore call -> render. Nothing here trains or computes.
"""
from __future__ import annotations

import html
import io
import ipaddress
import os
import re
import shutil
import socket
import stat
import sys
import time
import zipfile
from pathlib import Path
from functools import cache, partial
from typing import Any, Callable

import plotly.graph_objects as go
import streamlit as st
import torch
from streamlit import config as st_config

from sdcore import terms
from sdcore.config import PRESETS, ConfigError, RunConfig, preset
from sdcore.data import DataError
from sdcore.jobs import JobManager
from sdcore.plots import figure_html, presentation
from sdcore.runs import RESUMABLE, Run, RunError, RunInfo, RunStore, RunSummary, default_runs_dir

ROOT = Path(__file__).resolve().parents[1]
PAGE_SPECS = (  # (file stem = url path, title, icon)
    ("train", "Train", ":material/model_training:"),
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


ALLOW_REMOTE = "SDLAB_ALLOW_REMOTE"  # =1: serve a non-loopback address on purpose (README, "Serving a class")


def serve_locally() -> None:
    """Refuse to serve the page beyond this machine unless SDLAB_ALLOW_REMOTE=1 asks for it: anyone who reaches
    the dashboard can delete runs and start trainings, and it has no login. app/.streamlit/config.toml binds
    localhost whatever the working directory (Streamlit reads the main script's .streamlit/); a flag or a
    STREAMLIT_SERVER_ADDRESS variable can still set another address, and the server has bound it before any
    page runs, so the page is what can refuse. Usage statistics stay off unless asked for."""
    if not st_config.is_manually_set("browser.gatherUsageStats"):
        st_config.set_option("browser.gatherUsageStats", False)
    address = exposed_address()
    if address is None:
        return
    line = (f"sdlab refuses to serve this page on {address}: anyone who reaches it could delete runs and start "
            f"trainings, and there is no login. Serve it on localhost (the default), or set {ALLOW_REMOTE}=1 to "
            "serve a class on a network (README, 'Serving a class').")
    _say_once(line)
    st.error(plain(line), icon=":material/lock:")
    st.stop()


def exposed_address() -> str | None:
    """The address the server listens on when it reaches beyond this machine and SDLAB_ALLOW_REMOTE is not 1;
    None when it is local. An unset or empty server.address makes Streamlit listen on every interface (AppTest
    binds nothing: unset is local there)."""
    if os.environ.get(ALLOW_REMOTE) == "1":
        return None
    address = st_config.get_option("server.address")
    if address is None and st_config.get_option("global.appTest"):
        return None
    if address and _local(address):
        return None
    return address or "every network interface (server.address is empty)"


@cache
def _local(address: str) -> bool:
    """A Unix socket, or a name or IP address that resolves to loopback addresses only."""
    if address.startswith("unix://"):
        return True
    try:
        found = {info[4][0] for info in socket.getaddrinfo(address, None)}
    except (OSError, UnicodeError):
        return False  # Streamlit cannot bind it either
    ips = [ipaddress.ip_address(ip.split("%")[0]) for ip in found]
    return bool(ips) and all((getattr(ip, "ipv4_mapped", None) or ip).is_loopback for ip in ips)


@cache
def _say_once(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# What in one line of text can turn into something else in markdown (CommonMark, GFM, Streamlit's directives),
# escaped with a backslash. Anywhere: what starts code, emphasis, strikethrough, math, HTML, autolinks and
# entities; a "]" that would close a link, an image or a reference ("](", "][", "]:", or last: the caller's
# text may go on with "("); a ":" before a letter and a "[" after a word (":red[x]", or ":red" alone, which
# Streamlit's directives swallow); a "_" not inside a word (one inside, as in sam_rho, is literal). At the
# start: what would begin a heading, a list or a directive block. So "status.json" or "in [1, 65536], got 0"
# stays as typed, and a search in the page's markdown finds it.
_INLINE = re.compile(r"[\\`*~$&<>]|\](?=[(\[:]|$)|:(?=[A-Za-z])|(?<=[\w-])\[|(?<![^\W_])_|_(?![^\W_])")
_BLOCK = re.compile(r"^(?:[#+:-]|\d+(?=[.)]))")  # "1." / "1)": the escape goes before the "." or ")"
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)", re.IGNORECASE)  # where GFM's bare links begin


def plain(text: object) -> str:
    """``text`` (a run name or id, an error, a path …) as literal text inside markdown — st.markdown, st.caption,
    st.error and the other alerts, labels, help and progress texts all render markdown: what could make a link,
    an image, HTML, math, code, emphasis or a block is backslash-escaped (``_INLINE``, ``_BLOCK``); a zero-width
    space inside "://" and after "www" and "@" keeps GFM from linking a bare URL or e-mail address (it finds
    those after reading the escapes); line breaks become spaces, so it stays on the caller's line."""
    s = _AUTOLINK.sub("\u200b", " ".join(str(text).splitlines()).strip())
    s = _INLINE.sub(r"\\\g<0>", s)
    return _BLOCK.sub(lambda m: m[0] + "\\" if m[0].isdigit() else "\\" + m[0], s, count=1)


def code(text: object) -> str:
    """``text`` as inline code inside markdown (nothing in a code span is active), whatever backticks it holds."""
    s = " ".join(str(text).splitlines())
    fence = "`" * (max(map(len, re.findall("`+", s)), default=0) + 1)
    pad = " " if s[:1] == "`" or s[-1:] == "`" else ""  # CommonMark drops one space each side
    return f"{fence}{pad}{s}{pad}{fence}"


def chart_text(text: object) -> str:
    """``text`` as literal text in a plotly title or legend, where plotly renders <a href>, <b>, <br> …"""
    return html.escape(str(text), quote=False)


@st.cache_resource(show_spinner=False)
def _manager(runs_dir: str) -> JobManager:
    return JobManager(runs_dir)


def manager() -> JobManager:
    """One JobManager per runs folder for the whole server (all sessions share its queue)."""
    return _manager(str(default_runs_dir().resolve()))


def store() -> RunStore:
    return manager().store


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


def launch(cfg: RunConfig, where=st) -> None:
    """Queue a training run of ``cfg`` and open Live on it; a config or data problem is shown at ``where``."""
    try:
        handle = manager().submit(cfg)
    except (ConfigError, DataError, RunError) as e:
        where.error(plain(e), icon=":material/error:")
        return
    st.session_state["live_run"] = handle.run_id
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
    from sdcore.jobs import CheckpointDamaged

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


@st.cache_data(show_spinner=False, max_entries=256)
def _read_metrics(path: str, stamp: tuple[int, int]) -> list[dict[str, Any]]:
    return Run(Path(path)).metrics()


def metrics(run: Run) -> list[dict[str, Any]]:
    """metrics.jsonl, re-read only when the file changed (mtime + size)."""
    p = run.path / "metrics.jsonl"
    stat = p.stat() if p.exists() else None
    return _read_metrics(str(run.path), (stat.st_mtime_ns, stat.st_size) if stat else (0, 0))


@st.cache_data(show_spinner=False, max_entries=256)
def _read_info(path: str, stamp: tuple) -> RunInfo:
    return Run(Path(path)).info()


def run_infos() -> list[RunInfo]:
    """The run library, newest first; each folder re-read only when one of its files changed."""
    try:
        runs = list(store())
    except RunError as e:  # the runs folder itself cannot be listed: say so on the page, show none
        st.error(plain(e))
        return []
    infos = []
    for run in runs:
        infos.append(_read_info(str(run.path), _stamp(run.path)))
    return sorted(infos, key=lambda i: i.id, reverse=True)


def _stamp(folder: Path) -> tuple:
    """What invalidates a run's cached info: its JSON files' and lock's names, types and mtimes (an error
    reading one, e.g. a file deleted meanwhile, gives a stamp that is never cached twice the same)."""
    try:
        return tuple((p.name, p.lstat().st_mode, p.lstat().st_mtime_ns)
                     for p in sorted([*folder.glob("*.json*"), folder / "lock", folder / "rounds"]) if p.exists())
    except OSError:
        return (time.monotonic_ns(),)


@st.cache_data(show_spinner=False, max_entries=1024)
def _read_config(path: str, stamp: int) -> RunConfig:
    return Run(Path(path)).config()


def run_config(run_id: str) -> RunConfig | None:
    """A run's config.json, re-read only when it changed; None when it cannot be read."""
    try:
        run = store().get(run_id)
        return _read_config(str(run.path), (run.path / "config.json").stat().st_mtime_ns)
    except (OSError, ConfigError, RunError):
        return None


def has_exits(info: RunInfo) -> bool:
    """The run's network has shallow exits (terms such as BYOT and DMFL train them)."""
    cfg = run_config(info.id) if info.status != "unreadable" else None
    return cfg is not None and cfg.model.exits


def multi_round(info: RunInfo) -> bool:
    """The run trains a teacher and students one after another (multi-round KD)."""
    cfg = run_config(info.id) if info.status != "unreadable" else None
    return cfg is not None and terms.is_multi_round(cfg)


def run_label(info: RunInfo) -> str:
    accs = ", ".join(f"{a:.1f}" for a in info.test_acc)
    return f"{info.id} — {info.status}" + (f" — test % {accs}" if accs else "")


def device_caption() -> str:
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        more = f" (and {n - 1} more: pick cuda:N in Device to use another)" if n > 1 else ""
        return f"GPU found: {torch.cuda.get_device_name(0)}{more} — `auto` trains on it."
    return "No GPU found — `auto` trains on the CPU (small models like the demo's train well there)."


def explain(markdown: str, *, presets: tuple[str, ...] = ()) -> None:
    """The page's explanation, folded; ``presets`` it recommends get a button each (``preset_button``)."""
    with st.expander("What am I looking at?"):
        st.markdown(markdown)
        preset_buttons(*presets)


def chart(fig: go.Figure, *, key: str, **kwargs: Any) -> None:
    """A full-width chart, enlarged for a projector when the sidebar's presentation mode is on."""
    st.plotly_chart(presentation(fig, st.session_state.get("presentation", False)), width="stretch", key=key,
                    **kwargs)


def presentation_toggle() -> None:
    """The sidebar switch for ``chart``'s presentation mode (session state "presentation")."""
    st.sidebar.toggle("Presentation mode", key="presentation", help="Chart text of at least 22 px and thicker "
                      "lines and markers, for a projector. Downloads keep the normal size.")


def run_caption(run_id: str) -> str:
    """"run <id> · demo · kd α=0.2 τ=4 · … · 2 students · 30 epochs": the title of a run's downloaded figure."""
    from sdcore.analysis.compare import config_summary

    cfg = run_config(run_id)
    return f"run {run_id}" + (f" · {config_summary(cfg)}" if cfg is not None else "")


def download_figure(fig: go.Figure, name: str, *, key: str, caption: str | None = None) -> None:
    """The HTML (with plotly.js inlined, ~4 MB) is built only when the button is clicked; ``caption`` (e.g.
    ``run_caption``) is its title, as text, so the saved file says which run and config it shows."""
    st.download_button("Download figure (HTML)", partial(figure_html, fig, caption and chart_text(caption)),
                       file_name=f"{name}.html", mime="text/html", key=key, icon=":material/download:",
                       on_click="ignore")


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


def jobs_sidebar() -> None:
    """Running and queued jobs, refreshed every second while there are any."""
    from sdcore import sweep as sw

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


def rounds_table(summary: RunSummary | None, method: str):
    """Per finished round: test accuracy of the kept model and the change against the teacher, coloured."""
    import pandas as pd

    from sdcore.plots import round_name

    rows = summary.rounds if summary is not None else ()
    if not rows:
        return None
    teacher = rows[0].test_acc
    df = pd.DataFrame([{  # numbers in the frame (its CSV); the arrows are the Styler's formatting only
        "model": round_name(r.round, method), "test accuracy (%)": r.test_acc,
        "vs teacher (points)": r.test_acc - teacher, "kept epoch": r.best_epoch} for r in rows])
    if len(rows) == 1:  # one network (or a teacher alone): nothing to compare it with
        return df.drop(columns="vs teacher (points)").style.format({"test accuracy (%)": "{:.2f}"})
    delta = ["vs teacher (points)"]
    return (df.style.format({"test accuracy (%)": "{:.2f}"}).format(arrow, subset=delta)
            .format(lambda _: "—", subset=(df.index[:1], delta))  # the teacher's own row: 0 in the CSV
            .map(delta_color, subset=delta))


def arrow(delta: float) -> str:
    """"↑ +1.95" / "↓ -0.40" / "= +0.00": the change against the teacher, readable without colour."""
    return f"{'↑' if delta > 0 else '↓' if delta < 0 else '='} {delta:+.2f}"


def delta_color(cell: str | float | None) -> str:
    """Green for a gain, red for a loss: a number's sign, or a text cell's ↑ / ↓ (from ``arrow``)."""
    if isinstance(cell, (int, float)):
        up, down = cell > 0, cell < 0  # NaN (the teacher's own row) is neither
    else:
        up, down = "↑" in (cell or ""), "↓" in (cell or "")
    if up:
        return "color: #2b8a3e; font-weight: 600"
    return "color: #c92a2a; font-weight: 600" if down else ""


def analysis_text(h) -> str:
    """An analysis job's line: stage, round, how far, time left (sdcore.analysis.runner.progress_text)."""
    from sdcore.analysis.runner import progress_text

    cfg = run_config(h.run_id)
    return progress_text(h.progress(), cfg.method if cfg is not None else "kd")


def compute_in_background(run_id: str, spec, missing: int, *, per_round: str) -> None:
    """Offer to compute missing analysis results as a background job, then follow it until it ends.

    The page calls st.stop() after this; when the job finishes, a full rerun shows the results.
    """
    def current():
        return next((h for h in reversed(manager().jobs()) if h.kind == "analysis" and h.run_id == run_id), None)

    job = current()
    running = job is not None and not job.done

    @st.fragment(run_every=1.0 if running else None)
    def follow() -> None:
        h = current()
        if h is not None and not h.done:
            st.progress(h.progress().fraction, text=analysis_text(h))
            if st.button("Cancel", icon=":material/stop_circle:", key=f"cancel-analysis-{run_id}"):
                h.cancel()
        elif h is not None and h.progress().status == "failed":
            st.error(f"The analysis failed: {plain(h.progress().error)}")
        elif running:  # it just finished: a full rerun shows the results
            st.rerun()

    st.info(f"{missing} result(s) for these settings are not computed yet. They run in the background "
            f"({per_round}) and are kept in the run folder, so this page opens instantly next time.")
    if not running and st.button("Compute", type="primary", icon=":material/calculate:", key=f"compute-{run_id}"):
        try:
            manager().submit_analysis(run_id, spec)
        except (ConfigError, RunError) as e:
            st.error(plain(e))
            return
        st.rerun()
    follow()


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


def baseline_picker(run: Run, key: str) -> list[tuple[str, Run]]:
    """Other runs whose teacher (round 0) the analysis pages draw next to this run's rounds, e.g. a
    SAM-trained model (Pham et al. compare students' flatness with SAM's): [(display name, run)]."""
    if not any((c := run_config(i.id)) is not None and c.optim.sam_rho is not None for i in run_infos()):
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        c1.caption("No SAM run yet: its teacher is the flat-minimum baseline Pham et al. compare students with.")
        with c2:
            preset_button("demo-sam")
    infos = [i for i in run_infos() if i.rounds_done > 0 and i.status != "unreadable" and not has_exits(i)
             and i.id != run.id]
    if not infos:
        return []
    by_id = {i.id: i for i in infos}

    def name(run_id: str) -> str:
        cfg = store().get(run_id).config()
        what = f"SAM ρ={cfg.optim.sam_rho:g}" if cfg.optim.sam_rho is not None else cfg.name
        return f"{what} · {run_id[:15]}"

    chosen = st.multiselect("Baselines: other runs' teacher (round 0), e.g. a SAM run (`demo-sam` preset)",
                            list(by_id), format_func=name, key=key,
                            help="Computed on the baseline run's own training split: comparable when both "
                                 "runs share data and seed.")
    return [(chart_text(name(i)), store().get(i)) for i in chosen]  # the name is a legend entry


def baseline_results(results: dict, baselines: list[tuple[str, Run]], spec, *, per_round: str) -> list:
    """Add each baseline run's teacher (round 0) to ``results`` under its display name (a str key in
    place of the round number), computed like ``analysis_results``; returns the keys in plot order."""
    import dataclasses

    for name, other in baselines:
        got = analysis_results(other, dataclasses.replace(spec, rounds=(0,), interpolate=False), per_round=per_round)
        results.update({(kind, name): v for (kind, _), v in got.items()})
    return list(spec.rounds) + [name for name, _ in baselines]


def analysis_results(run: Run, spec, *, per_round: str) -> dict:
    """The cached results for ``spec``; if some are missing, offer to compute them and stop the page."""
    from sdcore.analysis.runner import cached_results
    try:
        results, missing = cached_results(run, spec)
    except (ConfigError, RunError) as e:
        st.error(plain(e))
        st.stop()
    if missing:
        compute_in_background(run.id, spec, missing, per_round=per_round)
        st.stop()
    return results
