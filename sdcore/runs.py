"""The run folder is the contract: everything a page or the CLI shows is rebuilt from it.

    <runs-dir>/<run-id>/
        config.json          resolved RunConfig
        status.json          queued|running|done|failed|cancelled|interrupted, times, error, device, versions
        lock                 held (flock) by the process that owns the queued/running job; holds its pid
        metrics.jsonl        one JSON object per epoch: {"round", "epoch", <metrics>}
        checkpoint.pt        the latest epoch's full training state (resume); removed when the run is done
        rounds/<k>/model.pt  state dict of round k's selected model
        summary.json         {"method", "complete", "rounds": [{"round": k, "test_acc": %, ...}], ...}

Every file is written atomically (temp file in the same folder + fsync + rename), metrics.jsonl
included (rewritten whole per epoch: a few hundred short lines), so a crash or SIGKILL never
leaves a truncated file; a truncated file found on disk is damage and the run is listed as
unreadable with the reason. A run's liveness is its lock: the owner holds an exclusive flock on
``lock`` from submission until it finishes, and the OS drops it when the process dies, so a
"running" run whose lock can be taken is known to be interrupted (no pid-reuse or clock guesswork).
"""
from __future__ import annotations

import io
import json
import os
import platform
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from sdcore.config import ConfigError, RunConfig

try:
    import fcntl
except ImportError:  # Windows: fall back to the pid in the lock file
    fcntl = None

RUNS_DIR_ENV = "SDLAB_RUNS_DIR"
STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
RESUMABLE = ("interrupted", "cancelled", "failed")  # a resume continues them from their last epoch
NAME_MAX = 40


class RunError(Exception):
    """A request about runs a person must fix (unknown id, busy run, bad name); one line."""


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV, "./runs"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def slug(name: str, max_len: int = NAME_MAX) -> str:
    """A file-name-safe version of a user's run name: [A-Za-z0-9_.-] only, no leading dot or dash.

    "../../etc/x" -> "etc-x": no separator and no ".." survive, so a name can never leave the runs dir.
    """
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
    s = re.sub(r"\.{2,}", ".", s).strip(".-")
    return s[:max_len].rstrip(".-") or "run"


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def new_folder(root: Path, name: str) -> Path:
    """Create <root>/<timestamp>-<slug(name)>[-n], unique even when two are made in the same second."""
    root.mkdir(parents=True, exist_ok=True)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(name)}"
    for n in range(1000):
        path = root / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RunError(f"could not create a folder for {name!r} under {root}")


class RunLock:
    """An exclusive, non-blocking flock on <run>/lock, released on ``release`` or process death."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._fd)
                self._fd = None
                raise RunError(f"run {path.parent.name} is in use by another job or process") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, json.dumps({"pid": os.getpid(), "host": platform.node(), "since": timestamp()}).encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @staticmethod
    def held(path: Path) -> bool:
        """True if some live process holds the lock (this one included)."""
        if not path.exists():
            return False
        if fcntl is None:
            return _pid_alive(path)
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops the probe lock if it was taken
        return False


def _pid_alive(path: Path) -> bool:
    try:
        info = json.loads(path.read_text() or "{}")
        os.kill(int(info["pid"]), 0)
    except (ValueError, KeyError, ProcessLookupError, OSError):
        return False
    return info.get("host") == platform.node()


@dataclass(frozen=True)
class RunInfo:
    """One row of the run library; ``problem`` is set (and the rest may be partial) for a broken folder."""
    id: str
    status: str  # one of STATUSES, or "unreadable"
    name: str = ""
    method: str = ""
    created: str = ""
    rounds_done: int = 0
    test_acc: tuple[float, ...] = ()  # per finished round, %
    error: str = ""  # the failure message of a failed run
    problem: str = ""  # why the folder is unreadable


@dataclass(frozen=True)
class Run:
    """One run folder. Cheap to construct; every accessor reads the disk."""
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    # ---- writers (the training recipes and the job manager)
    def write_config(self, cfg: RunConfig) -> None:
        atomic_write_bytes(self.path / "config.json", (cfg.to_json() + "\n").encode())

    def set_status(self, status: str, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into status.json with the new status and an updated timestamp."""
        assert status in STATUSES, status
        current = self.status_record() if (self.path / "status.json").exists() else {}
        record = {**current, **fields, "status": status, "updated": timestamp()}
        atomic_write_json(self.path / "status.json", record)
        return record

    def append_metrics(self, record: dict[str, Any]) -> None:
        self._write_metrics(self.metrics() + [record])

    def truncate_metrics(self, *, before: tuple[int, int]) -> None:
        """Keep only epochs (round, epoch) < ``before``: the ones a resumed run will not redo."""
        self._write_metrics([m for m in self.metrics() if (m["round"], m["epoch"]) < before])

    def _write_metrics(self, records: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        atomic_write_bytes(self.path / "metrics.jsonl", text.encode())

    def save_model(self, round_idx: int, state_dict: dict[str, torch.Tensor]) -> None:
        atomic_write_bytes(self.model_path(round_idx), _torch_bytes(state_dict))

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_write_bytes(self.path / "checkpoint.pt", _torch_bytes(state))

    def drop_checkpoint(self) -> None:
        (self.path / "checkpoint.pt").unlink(missing_ok=True)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / "summary.json", summary)

    def lock(self) -> RunLock:
        return RunLock(self.path / "lock")

    # ---- readers
    def model_path(self, round_idx: int) -> Path:
        return self.path / "rounds" / str(round_idx) / "model.pt"

    def config(self) -> RunConfig:
        return RunConfig.load(self.path / "config.json")

    def status_record(self) -> dict[str, Any]:
        return _read_json(self.path / "status.json")

    def status(self) -> str:
        return self.status_record()["status"]

    def is_live(self) -> bool:
        return RunLock.held(self.path / "lock")

    def metrics(self) -> list[dict[str, Any]]:
        p = self.path / "metrics.jsonl"
        if not p.exists():
            return []
        out = []
        for n, line in enumerate(p.read_text().splitlines(), 1):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise RunError(f"metrics.jsonl line {n} is truncated or not JSON") from None
        return out

    def summary(self) -> dict[str, Any] | None:
        p = self.path / "summary.json"
        return _read_json(p) if p.exists() else None

    def checkpoint(self) -> dict[str, Any] | None:
        p = self.path / "checkpoint.pt"
        return torch.load(p, map_location="cpu", weights_only=True) if p.exists() else None

    def load_state_dict(self, round_idx: int, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        return torch.load(self.model_path(round_idx), map_location=map_location, weights_only=True)

    def info(self) -> RunInfo:
        """The library row; never raises: damage becomes status "unreadable" with the reason."""
        try:
            return self._info()
        except (OSError, ValueError, KeyError, TypeError, RunError, ConfigError, zipfile.BadZipFile) as e:
            return RunInfo(id=self.id, status="unreadable", problem=_one_line(e))

    def _info(self) -> RunInfo:
        if not (self.path / "config.json").exists():
            raise RunError("config.json is missing")
        cfg = self.config()
        st = self.status_record() if (self.path / "status.json").exists() else {"status": "interrupted"}
        if st.get("status") not in STATUSES:
            raise RunError(f"status.json has an unknown status {st.get('status')!r}")
        self.metrics()  # parses every line: a damaged file makes the run unreadable
        summary = self.summary() or {}
        rounds = summary.get("rounds", [])
        for r in rounds:
            _check_torch_file(self.model_path(r["round"]))
        return RunInfo(id=self.id, status=st["status"], name=cfg.name, method=cfg.method,
                       created=st.get("created", ""), rounds_done=len(rounds),
                       test_acc=tuple(float(r["test_acc"]) for r in rounds), error=st.get("error", ""))


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path.name} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path.name} does not hold a JSON object")
    return obj


def _check_torch_file(path: Path) -> None:
    """Cheap integrity check of a torch.save file: it is a zip whose central directory reads."""
    rel = "/".join(path.parts[-3:])
    if not path.exists():
        raise RunError(f"{rel} is missing")
    if not zipfile.is_zipfile(path):
        raise RunError(f"{rel} is not a PyTorch checkpoint (damaged or truncated)")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class RunStore:
    """A folder of runs: create, get, list (tolerant of damage), rename, delete, recover."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_runs_dir()

    def create(self, cfg: RunConfig, *, status: str = "queued", status_fields: dict[str, Any] | None = None) -> Run:
        """A new run folder holding ``cfg``; ``status_fields`` go into its first status.json (a sweep's tag)."""
        run = Run(new_folder(self.root, cfg.name))
        run.write_config(cfg)
        run.set_status(status, created=timestamp(), **(status_fields or {}))
        return run

    def get(self, run_id: str) -> Run:
        path = self.root / run_id
        if slug(run_id, max_len=200) != run_id or not path.is_dir():
            raise RunError(f"no run {run_id!r} in {self.root.resolve()}")
        return Run(path)

    def __iter__(self) -> Iterator[Run]:
        if not self.root.is_dir():
            return iter(())
        return iter(Run(p) for p in sorted(self.root.iterdir()) if p.is_dir() and not p.name.startswith("."))

    def list(self) -> list[RunInfo]:
        return [run.info() for run in self]

    def recover(self) -> list[str]:
        """Mark queued/running runs whose owner process is gone as interrupted; return their ids.

        Also removes temp files an interrupted atomic write left behind (never a real file).
        """
        marked = []
        for run in self:
            if run.is_live():
                continue
            for tmp in run.path.rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)
            try:
                status = run.status()
            except (OSError, RunError, KeyError):
                continue  # unreadable runs are shown as such by list(); nothing to recover
            if status in ACTIVE:
                run.set_status("interrupted", finished=timestamp(),
                               error="the process running it stopped (killed, crashed or closed)")
                marked.append(run.id)
        return marked

    def _require_idle(self, run: Run, verb: str) -> None:
        if run.is_live():
            raise RunError(f"cannot {verb} run {run.id}: it is queued or running (cancel it first)")

    def delete(self, run_id: str) -> None:
        run = self.get(run_id)
        self._require_idle(run, "delete")
        shutil.rmtree(run.path)

    def rename(self, run_id: str, new_name: str) -> Run:
        """Give a run a new name: the id keeps its timestamp, the name part becomes slug(new_name)."""
        run = self.get(run_id)
        self._require_idle(run, "rename")
        if not new_name.strip():
            raise RunError("a run name must not be empty")
        stamp = re.match(r"^\d{8}-\d{6}-", run.id)
        target = self.root / f"{stamp.group(0) if stamp else ''}{slug(new_name)}"
        if target.exists():
            raise RunError(f"a run named {target.name} already exists")
        cfg = run.config()
        run.path.rename(target)
        moved = Run(target)
        moved.write_config(cfg.replace(name=new_name.strip()[:64]))
        return moved


def flat_record(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """One metrics.jsonl record as flat columns: nested dicts and lists become one column per entry,
    named by its path — ``grad_abs.<layer>``, ``train_parts.<term>``, ``test_acc_exits.0`` (list items
    by index, as in the file) — so a CSV holds numbers, never a Python repr of a dict."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_record(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out.update(flat_record({str(i): v for i, v in enumerate(value)}, f"{name}."))
        else:
            out[name] = value
    return out


def records_csv(records: list[dict[str, Any]]) -> str:
    """Records (e.g. metrics.jsonl's) as CSV, one row each, columns from ``flat_record`` in first-seen order
    (a record without a column leaves its cell empty: rounds and terms log different keys)."""
    import csv

    rows = [flat_record(r) for r in records]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
