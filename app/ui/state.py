"""The server's shared state: one JobManager per runs folder, and run folders read through Streamlit's caches
(each re-read only when its files changed)."""
from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import streamlit as st
import torch

from app.ui.text import plain
from sdcore import terms
from sdcore.config import ConfigError, RunConfig
from sdcore.data import DataError, load
from sdcore.engine import RunEstimate, estimate_run
from sdcore.jobs import JobManager
from sdcore.runs import Run, RunError, RunInfo, RunStore, default_runs_dir


@st.cache_resource(show_spinner=False)
def _manager(runs_dir: str) -> JobManager:
    return JobManager(runs_dir)


def manager() -> JobManager:
    """One JobManager per runs folder for the whole server (all sessions share its queue)."""
    return _manager(str(default_runs_dir().resolve()))


def store() -> RunStore:
    return manager().store


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


# A training step is timed here, never in a page's script thread (it takes a while on a busy laptop).
_ESTIMATOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdlab-estimate")


def _estimate(cfg_json: str) -> RunEstimate | None:
    try:
        cfg = RunConfig.from_dict(json.loads(cfg_json)).validate()
        return estimate_run(cfg, load(cfg.data, seed=cfg.seed))
    except (ConfigError, DataError, OSError):
        return None  # no estimate for a config whose data is missing: the form says why


@st.cache_resource(show_spinner=False, ttl=60)
def _estimate_future(cfg_json: str) -> Future:
    return _ESTIMATOR.submit(_estimate, cfg_json)


def run_estimate(cfg: RunConfig) -> tuple[bool, RunEstimate | None]:
    """(measured yet, ``engine.estimate_run``'s estimate for ``cfg``): a training step timed in a background
    thread, again after a minute (the machine's load changes); (False, None) while it is being measured."""
    future = _estimate_future(cfg.to_json())
    return (True, future.result()) if future.done() else (False, None)
