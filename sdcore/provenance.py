"""Reproducibility and provenance: what a run was trained with, and a switch for deterministic training.

``provenance(device)`` is status.json's ``"provenance"`` object (the sdlab commit, Python, torch, torchvision, CUDA,
cuDNN, the GPU); ``packages()`` is the run folder's packages.txt (every installed distribution, pinned);
``deterministic(on)`` is ``RunConfig.deterministic`` around the training. ``describe`` is the one line the Runs
page shows of them.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import platform
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the folder holding the sdcore package (a checkout's root)
GIT_TIMEOUT_S = 5.0  # a git on a slow network filesystem must not hold up a run's start for long
CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC = ":4096:8"  # one of the two values torch accepts for deterministic cuBLAS (CUDA >= 10.2)


# ---------------------------------------------------------------- deterministic training

_lock = threading.Lock()
_users = 0  # deterministic(True) blocks active in this process
_saved: dict[str, Any] = {}  # the state before the first of them, restored when the last one ends


@contextlib.contextmanager
def deterministic(on: bool) -> Iterator[None]:
    """With ``on``: torch's deterministic algorithms (an op without a deterministic implementation raises
    RuntimeError instead of running), cuDNN's deterministic kernels, no cuDNN autotuning (``benchmark``), and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless the environment sets it already. ``on=False`` changes nothing.

    These are process-wide, not per thread: the dashboard trains its jobs as threads of one process
    (sdcore.jobs), so any other run or analysis working in this process while a deterministic run trains
    runs deterministically too (and may fail where it uses an op without a deterministic implementation).
    The blocks are counted: the settings go on with the first active block and the state from before it is
    restored, exactly, when the last one ends (an exception included), so overlapping runs never switch
    each other off.

    cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it initialises, at the process's first matrix product on a
    GPU: where one ran before this block (an earlier run in the same dashboard), setting it here is too late
    for cuBLAS itself (torch then no longer refuses, but cuBLAS keeps its first setting). For deterministic
    GPU runs in a long-lived process, set ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the environment before
    starting it.
    """
    if not on:
        yield
        return
    _acquire()
    try:
        yield
    finally:
        _release()


def _acquire() -> None:
    global _users
    with _lock:
        if _users == 0:
            _saved.update(algorithms=torch.are_deterministic_algorithms_enabled(),
                          warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
                          benchmark=torch.backends.cudnn.benchmark,
                          cudnn_deterministic=torch.backends.cudnn.deterministic,
                          set_env=CUBLAS_ENV not in os.environ)
            if _saved["set_env"]:
                os.environ[CUBLAS_ENV] = CUBLAS_DETERMINISTIC
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        _users += 1


def _release() -> None:
    global _users
    with _lock:
        _users -= 1
        if _users > 0:
            return
        torch.use_deterministic_algorithms(_saved["algorithms"], warn_only=_saved["warn_only"])
        torch.backends.cudnn.benchmark = _saved["benchmark"]
        torch.backends.cudnn.deterministic = _saved["cudnn_deterministic"]
        if _saved["set_env"]:
            os.environ.pop(CUBLAS_ENV, None)
        _saved.clear()


# ---------------------------------------------------------------- provenance

def git_commit(folder: Path) -> str | None:
    """The commit checked out in ``folder`` (with "-dirty" when a tracked file differs from it), or None when
    ``folder`` is not the root of a git checkout (an installed sdlab inside someone else's repository is not
    that repository's commit), git is missing, or it fails or takes longer than GIT_TIMEOUT_S. Never raises."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # status must not take index.lock from a git the user runs

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=folder, env=env, capture_output=True, text=True,
                                  timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
        return done.stdout if done.returncode == 0 else None

    head = git("rev-parse", "--show-toplevel", "HEAD")
    lines = head.split("\n") if head else []
    if len(lines) < 2 or os.path.realpath(lines[0]) != os.path.realpath(folder):
        return None
    changes = git("status", "--porcelain", "--untracked-files=no")
    if changes is None:
        return None
    return lines[1].strip() + ("-dirty" if changes.strip() else "")


@functools.lru_cache(maxsize=1)
def source_commit() -> str | None:
    """sdlab's own commit (``git_commit(SOURCE_ROOT)``), asked once per process: the code a process runs is
    the code it imported when it started."""
    return git_commit(SOURCE_ROOT)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(device: torch.device) -> dict[str, Any]:
    """status.json's ``"provenance"``: {"commit" (source_commit), "python", "torch" (torch.__version__), "torchvision"
    (its installed distribution's version: importing torchvision to ask it takes seconds), "cuda"
    (torch.version.cuda, None on a CPU build), "cudnn" (torch.backends.cudnn.version(), None where there is
    none), "gpu" (the device's name on cuda, else None)}."""
    return {"commit": source_commit(), "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": _version("torchvision"), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def packages() -> str:
    """packages.txt: every installed distribution as "name==version", one a line, sorted without regard to
    case (importlib.metadata, as ``pip freeze`` lists them, without running pip). A distribution found twice
    on the path is listed once, as the first found: the one an import gets."""
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    return "".join(line + "\n" for _, line in sorted(seen.items()))


def describe(status: Mapping[str, Any], *, deterministic: bool) -> str:
    """A run's provenance in one line, from its status.json record and its config's ``deterministic``:
    "cuda:0 (NVIDIA H100) · commit 1a2b3c4d5e6f-dirty · torch 2.5.1 · CUDA 12.4 · cuDNN 90100 · deterministic".
    A run recorded before provenance was says what it has and that the rest is unknown."""
    p = status.get("provenance")
    p = p if isinstance(p, Mapping) else {}
    device = status.get("device")
    parts = [f"{device} ({p['gpu']})" if device and p.get("gpu") else device]
    if not p:
        parts += [f"torch {status['torch']}" if status.get("torch") else None, "no provenance recorded"]
    else:
        commit = str(p.get("commit") or "")
        sha, dirty = commit.removesuffix("-dirty"), commit.endswith("-dirty")
        parts += [f"commit {sha[:12]}{'-dirty' * dirty}" if sha else "commit unknown", f"torch {p.get('torch')}",
                  f"CUDA {p['cuda']}" if p.get("cuda") else "no CUDA",
                  f"cuDNN {p['cudnn']}" if p.get("cudnn") else "no cuDNN"]
    parts.append("deterministic" if deterministic else "not deterministic")
    return " · ".join(str(x) for x in parts if x)
