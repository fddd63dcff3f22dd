"""The run folder is the contract: everything a page or the CLI shows is rebuilt from it.

    <runs-dir>/<run-id>/
        config.json          resolved RunConfig
        status.json          queued|running|done|failed|cancelled|interrupted, times, error, device, versions,
                             provenance (commit, Python, torch, CUDA, cuDNN, GPU: sdcore.provenance)
        packages.txt         every installed distribution as name==version, rewritten at each (re)start
        lock                 the owner of the queued/running job: flocked, its host, pid and heartbeat inside
        metrics.jsonl        one JSON object per epoch: {"round", "epoch", <metrics>}
        checkpoint.pt        the latest epoch's full training state (resume); removed when the run is done
        rounds/<k>/model.pt  state dict of round k's selected model
        summary.json         {"method", "complete", "rounds": [{"round": k, "test_acc": %, ...}], ...}

Every file is written atomically (temp file in the same folder + fsync + rename), metrics.jsonl
included (rewritten whole per epoch: a few hundred short lines), so a crash or SIGKILL never
leaves a truncated file; a truncated file found on disk is damage and the run is listed as
unreadable with the reason. A run's liveness is its lock: the owner holds an exclusive flock on
``lock`` from submission until it finishes and keeps its host, pid and a heartbeat in it; the OS
drops the flock when the process dies, so on one machine a "running" run whose lock can be taken is
known to be interrupted (no pid reuse or clock guesswork). Across a cluster's nodes, where flock may
be per node or absent, the heartbeat decides (sdcore.liveness): a run another host trains is never
taken over here while its heartbeat is fresh.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import platform
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from sdcore import files, liveness
from sdcore.config import ConfigError, RunConfig, check_name, is_external
from sdcore.files import FileProblem
from sdcore.models import model_for_round
from sdcore.terms import num_rounds

RUNS_DIR_ENV = "SDLAB_RUNS_DIR"
STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
RESUMABLE = ("interrupted", "cancelled", "failed")  # a resume continues them from their last epoch
NAME_MAX = 40


class RunError(Exception):
    """A request about runs a person must fix (unknown id, busy run, bad name); one line."""


class RunDamaged(RunError):
    """A file of a run folder cannot be read or does not hold what sdlab wrote: "unreadable: <file>: <reason>"."""

    def __init__(self, file: str, reason: str):
        super().__init__(f"unreadable: {file}: {reason}")
        self.file, self.reason = file, reason

    @property
    def problem(self) -> str:
        """The run library's wording: "<file>: <reason>"."""
        return f"{self.file}: {self.reason}"


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV, "./runs"))


def _host() -> str:
    return slug(platform.node(), max_len=64).replace("~", "-")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all. The temp file's name claims it for this host and process
    (``.<name>~<host>~<pid>~<random>.tmp``), so ``RunStore.recover`` removes only those whose writer is dead.

    A failure to write (no space, a file where a folder should be, read-only) is a RunError naming the file.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}~{_host()}~{os.getpid()}~", suffix=".tmp")
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise RunError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def _orphaned_temp(tmp: Path) -> bool:
    """A temp file of ``atomic_write_bytes`` whose writer (this host, that pid) is gone. A temp file of another
    host, or of an unknown shape, is left alone: no guess from a lock or a clock."""
    parts = tmp.name[:-len(".tmp")].split("~")
    if len(parts) < 4 or parts[-3] != _host() or not parts[-2].isdigit():
        return False
    return not liveness.process_alive(int(parts[-2]))


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


_HANDOVER: dict[Path, "RunLock"] = {}  # locks taken by RunStore.create, claimed by the next Run.lock()


class RunLock:
    """Ownership of a run folder (or a sweep's): ``<folder>/lock`` holds the owner's record, flocked, with a
    heartbeat, until ``release`` or the process's death (sdcore.liveness has the rule and why).

    A new lock file appears already locked and filled in (made, flocked and written under a temp name, then
    hard-linked into place), so no other process ever sees it unheld or empty while its owner is starting.
    ``wait_s``: keep trying that long while another host's owner may still be alive (a SLURM job requeued
    onto another node waits out the heartbeat of the one that died); 0 refuses at once.
    """

    def __init__(self, path: Path, *, wait_s: float = 0.0):
        self.path = path
        self.lost = False  # another owner took the lock over while this one looked dead (see sdcore.liveness)
        self._fd: int | None = None
        self._io = threading.Lock()  # the heartbeat thread and release() both write the file
        self._owner = liveness.Owner(host=liveness.this_host(), pid=os.getpid(), beat=liveness.clock(),
                                     since=timestamp(), nonce=secrets.token_hex(8))
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._fd = self._take()
                break
            except _Busy as busy:
                if not busy.foreign or time.monotonic() >= deadline:
                    raise RunError(busy.message) from None
                time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            except OSError as e:
                raise RunError(f"cannot lock run {path.parent.name}: {e.strerror or e}") from None
        liveness.HEARTBEAT.add(self)

    def _busy(self, owner: liveness.Owner | None) -> "_Busy":
        name = self.path.parent.name
        if owner is not None and owner.host != liveness.this_host():
            return _Busy(f"run {name} is in use {owner.where(liveness.clock())}; it is not resumed here while "
                         f"that host's heartbeat is younger than {liveness.STALE_S:.0f} s", foreign=True)
        return _Busy(f"run {name} is in use by another job or process")

    def _take(self) -> int:
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
            except FileNotFoundError:
                fd = self._create_locked()
                if fd is None:
                    continue  # another process made it first: lock that one
                return fd
            except IsADirectoryError:
                raise RunError(f"run {self.path.parent.name} is damaged: its lock is a folder") from None
            try:
                taken = liveness.try_flock(fd)
                owner = liveness.read_owner(fd)
                if liveness.held(owner, taken, now=liveness.clock(), host=liveness.this_host(),
                                 alive=liveness.process_alive):
                    raise self._busy(owner)
                self._write(fd)
                now_there = liveness.read_owner(fd)
                if not self._mine(now_there):  # another host took it over in the same instant
                    raise self._busy(now_there)
            except BaseException:
                os.close(fd)
                raise
            return fd
        raise self._busy(None)

    def _create_locked(self) -> int | None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".lock~{_host()}~{os.getpid()}~", suffix=".tmp")
        try:
            liveness.try_flock(fd)
            self._write(fd)
            os.link(tmp, self.path)  # atomic; fails if a lock file appeared meanwhile
        except FileExistsError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        finally:
            Path(tmp).unlink(missing_ok=True)
        return fd

    def _mine(self, owner: liveness.Owner | None) -> bool:
        return owner is not None and (owner.nonce, owner.host, owner.pid) == (self._owner.nonce, self._owner.host,
                                                                             self._owner.pid)

    def _write(self, fd: int) -> None:
        os.pwrite(fd, self._owner.record(), 0)
        os.ftruncate(fd, liveness.RECORD_BYTES)

    def beat(self) -> None:
        """Rewrite the record with a new beat (the heartbeat thread calls this); never over another owner's."""
        with self._io:
            if self._fd is None or self.lost:
                return
            there = liveness.read_owner(self._fd)
            if there is not None and not self._mine(there):
                self.lost = True  # taken over while this process looked dead: leave the new owner's record
                return
            self._owner = dataclasses.replace(self._owner, beat=liveness.clock())
            self._write(self._fd)

    def release(self) -> None:
        liveness.HEARTBEAT.discard(self)
        with self._io:
            if self._fd is None:
                return
            try:
                if self._mine(liveness.read_owner(self._fd)):
                    os.ftruncate(self._fd, 0)  # an empty record reads as free on every host, flock or not
            except OSError:
                pass  # the flock still drops below; another host then waits out the heartbeat
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @staticmethod
    def owner(path: Path) -> liveness.Owner | None:
        """The record in the lock file, whether or not its owner still lives; None if there is none."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return None
        try:
            return liveness.read_owner(fd) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        finally:
            os.close(fd)

    @staticmethod
    def held(path: Path) -> bool:
        """True if a live owner holds the lock (this process included). A lock that is not a regular
        file cannot be held (``Run.info`` reports it as damage)."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return False
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            taken = liveness.try_flock(fd)
            return liveness.held(liveness.read_owner(fd), taken, now=liveness.clock(), host=liveness.this_host(),
                                 alive=liveness.process_alive)
        finally:
            os.close(fd)  # also drops the probe lock if it was taken


class _Busy(Exception):
    def __init__(self, message: str, *, foreign: bool = False):
        super().__init__(message)
        self.message, self.foreign = message, foreign


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
class RoundSummary:
    """One finished round in summary.json: its kept model's metrics, in percent for accuracies."""
    round: int  # 0 = teacher (or the one network of a single-round method)
    best_epoch: int  # the kept epoch, 1-based
    test: Mapping[str, Any]  # the kept model's test metrics without their "test_" prefix: "acc", "loss",
    #                          "acc_exits" (one per exit, shallow first), "acc_ensemble", "acc_peers", ...
    val: Mapping[str, Any]  # the same on the validation split ({} without one)

    @property
    def test_acc(self) -> float:
        return float(self.test["acc"])

    @property
    def exit_accs(self) -> tuple[float, ...]:
        """Test accuracy of each exit, shallow first (a model with exits; () otherwise)."""
        return tuple(self.test.get("acc_exits", ()))

    @property
    def ensemble_acc(self) -> float | None:
        """Test accuracy of the exits' (or peers') ensemble, where the method reports one."""
        return self.test.get("acc_ensemble")

    @property
    def peer_accs(self) -> tuple[float, ...]:
        """Test accuracy of each DML peer (peer 1 is the model reported; () for other methods)."""
        return tuple(self.test.get("acc_peers", ()))

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "best_epoch": self.best_epoch, **{f"test_{k}": v for k, v in self.test.items()},
                **{f"val_{k}": v for k, v in self.val.items()}}


@dataclass(frozen=True)
class RunSummary:
    """summary.json: what a run's finished rounds scored (written after each round; ``complete`` at the end)."""
    method: str
    complete: bool  # every round the config trains is finished
    noisy_train_labels: int  # training labels the label noise changed
    rounds: tuple[RoundSummary, ...]  # finished rounds, in order

    def finished_rounds(self) -> list[int]:
        return [r.round for r in self.rounds]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "complete": self.complete, "noisy_train_labels": self.noisy_train_labels,
                "rounds": [r.to_dict() for r in self.rounds]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSummary":
        """Checked: each round an object with its integer round (in order), a finite test accuracy and an
        integer kept epoch; RunDamaged("summary.json", why) otherwise."""
        rounds = d.get("rounds")
        if not isinstance(rounds, list):
            raise RunDamaged("summary.json", "has no list of rounds")
        out = []
        for i, r in enumerate(rounds):
            if not isinstance(r, dict) or r.get("round") != i or not _is_int(r.get("round")):
                raise RunDamaged("summary.json", f"round entry {i} is not round {i}")
            for key, value in r.items():
                if key.startswith("test_acc") and not _finite_numbers(value):
                    raise RunDamaged("summary.json", f"round {i} has a {key} that is not a number")
            if "test_acc" not in r or not _is_int(r.get("best_epoch", 0)):
                raise RunDamaged("summary.json", f"round {i} lacks its test accuracy or has a bad best epoch")
            out.append(RoundSummary(round=i, best_epoch=int(r.get("best_epoch", 0)),
                                    test={k[5:]: v for k, v in r.items() if k.startswith("test_")},
                                    val={k[4:]: v for k, v in r.items() if k.startswith("val_")}))
        return cls(method=str(d.get("method", "")), complete=bool(d.get("complete", False)),
                   noisy_train_labels=int(d["noisy_train_labels"]) if _is_int(d.get("noisy_train_labels")) else 0,
                   rounds=tuple(out))


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
        """Merge ``fields`` into status.json with the new status and an updated timestamp (a damaged
        status.json is replaced: its writer is the one who knows the status now)."""
        assert status in STATUSES, status
        try:
            current = self.status_record()
        except RunDamaged:
            current = {}
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

    def write_summary(self, summary: "RunSummary | dict[str, Any]") -> None:
        """A ``RunSummary`` (training), or summary.json's raw object (tests writing a folder as it may be on disk)."""
        atomic_write_json(self.path / "summary.json", summary.to_dict() if isinstance(summary, RunSummary) else summary)

    def lock(self) -> RunLock:
        """The run's lock: the one ``RunStore.create`` took for this process if unclaimed, else a new one."""
        return _HANDOVER.pop(self.path / "lock", None) or RunLock(self.path / "lock")

    # ---- readers
    def model_path(self, round_idx: int) -> Path:
        return self.path / "rounds" / str(round_idx) / "model.pt"

    def config(self) -> RunConfig:
        obj = self._json("config.json")
        try:
            return RunConfig.from_dict(obj).validate()  # a hand-edited config that sdlab would refuse is damage
        except ConfigError as e:
            raise RunDamaged("config.json", str(e)) from None
        except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as e:
            raise RunDamaged("config.json", f"does not hold a run config ({files.first_line(e)})") from None

    def status_record(self) -> dict[str, Any]:
        rec = self._json("status.json")
        if rec.get("status") not in STATUSES:
            raise RunDamaged("status.json", f"has an unknown status {_short(rec.get('status'))}")
        for key in ("error", "created"):
            if not isinstance(rec.get(key, ""), str):
                raise RunDamaged("status.json", f"has a {key} that is not text")
        return rec

    def status(self) -> str:
        return self.status_record()["status"]

    def is_live(self) -> bool:
        return RunLock.held(self.path / "lock")

    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl's records (none before the first epoch); each is an object with integer round and epoch."""
        try:
            text = files.read_text(self.path / "metrics.jsonl")
        except FileProblem as e:
            if not _present(self.path / "metrics.jsonl"):
                return []
            raise RunDamaged("metrics.jsonl", str(e)) from None
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            try:
                rec = files.parse_json(line)
            except FileProblem:
                raise RunDamaged("metrics.jsonl", f"line {n} is truncated or not JSON") from None
            if not isinstance(rec, dict) or not (_is_int(rec.get("round")) and _is_int(rec.get("epoch"))):
                raise RunDamaged("metrics.jsonl", f"line {n} is not an epoch record (an object with round and epoch)")
            out.append(rec)
        return out

    def summary(self) -> "RunSummary | None":
        """summary.json as a ``RunSummary`` (None before the first round finishes); RunDamaged if it is not one."""
        if not _present(self.path / "summary.json"):
            return None
        return RunSummary.from_dict(self._json("summary.json"))

    def finished_rounds(self) -> list[int]:
        """The rounds whose model is saved, in order (0 = teacher); [] before the first round finishes."""
        summary = self.summary()
        return [] if summary is None else summary.finished_rounds()

    def load_model(self, round_idx: int, *, num_classes: int, in_channels: int, image_size: int,
                   height: int | None = None, width: int | None = None,
                   device: str | torch.device = "cpu") -> torch.nn.Module:
        """Round ``round_idx``'s saved model, built from config.json for data of these shapes (a ``DataBundle``'s),
        in eval mode on ``device``. The caller's RNG is left as it was (the init is overwritten anyway)."""
        with torch.random.fork_rng(devices=[]):
            model = model_for_round(self.config(), round_idx, num_classes=num_classes, in_channels=in_channels,
                                    image_size=image_size, height=height, width=width)
        return self.load_weights(model.to(device), round_idx).eval()

    def checkpoint(self) -> dict[str, Any] | None:
        if not _present(self.path / "checkpoint.pt"):
            return None
        ckpt = self._torch("checkpoint.pt")
        keys = ("model", "optimizer", "scheduler", "generator", "rng", "state", "best")
        if not (isinstance(ckpt, dict) and _is_int(ckpt.get("round")) and _is_int(ckpt.get("epoch"))
                and all(k in ckpt for k in keys)):
            raise RunDamaged("checkpoint.pt", "does not hold a training state")
        return ckpt

    def load_state_dict(self, round_idx: int, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        sd = self._torch(f"rounds/{round_idx}/model.pt", map_location=map_location)
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise RunDamaged(f"rounds/{round_idx}/model.pt", "does not hold a model's weights")
        return sd

    def load_weights(self, model: torch.nn.Module, round_idx: int) -> torch.nn.Module:
        """Round ``round_idx``'s saved weights in ``model`` (built from this run's config); weights of another
        architecture or width are damage, named, not a crash later."""
        sd = self.load_state_dict(round_idx, map_location=next(model.parameters()).device)
        try:
            model.load_state_dict(sd)
        except RuntimeError as e:
            detail = " ".join(str(e).split())
            raise RunDamaged(f"rounds/{round_idx}/model.pt", "its weights do not fit the run's config.json "
                             f"({detail[detail.find(':') + 1:].strip()[:160]})") from None
        return model

    def check_fit(self, cfg: RunConfig, round_idx: int, status: dict[str, Any],
                  state_dict: dict[str, torch.Tensor] | None = None, file: str | None = None) -> None:
        """Raise RunDamaged if round ``round_idx``'s saved weights (or ``state_dict``, from ``file``) lack a
        tensor of the model the config builds, have one it lacks, or one of another shape. Cheap: the model is
        built on the meta device and the file read without its tensors' data. Needs the data's shapes, which
        ``execute`` records in status.json; a run from before that record is checked when its weights load."""
        if is_external(cfg.model.arch):  # building it would run the person's code on every listing: its weights
            return                       # are checked when they load (load_weights)
        shapes = status.get("shapes")
        if not isinstance(shapes, dict) or set(shapes) - {"height", "width"} != {"num_classes", "in_channels",
                                                                                 "image_size"} \
                or not all(_is_int(v) for v in shapes.values()):
            return
        file = file or f"rounds/{round_idx}/model.pt"
        if state_dict is not None:
            saved = _tensor_shapes(state_dict, file)
        else:  # a page lists every run on each render: read each file's shapes once per version of it
            try:
                st = (self.path / file).stat()
            except OSError:  # gone: the reader names the problem
                st = None
            saved = (self._saved_shapes(file, (st.st_ino, st.st_size, st.st_mtime_ns)) if st is not None
                     else _tensor_shapes(self._torch(file, map_location="meta"), file))
        expected = _model_shapes(cfg.to_json(), round_idx, tuple(sorted(shapes.items())))
        problem = misfit(dict(expected), dict(saved))
        if problem:
            raise RunDamaged(file, f"its weights do not fit the run's config.json ({problem})")

    def _saved_shapes(self, file: str, stamp: tuple[int, int, int]) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return _file_shapes(self.path / file, file, stamp)

    def _json(self, name: str) -> dict[str, Any]:
        try:
            return files.read_json_object(self.path / name)
        except FileProblem as e:
            raise RunDamaged(name, str(e)) from None

    def _torch(self, name: str, map_location: Any = "cpu") -> Any:
        try:
            return files.load_torch(self.path / name, map_location=map_location)
        except FileProblem as e:
            raise RunDamaged(name, str(e)) from None

    def info(self) -> RunInfo:
        """The library row; never raises: damage becomes status "unreadable" with the reason."""
        try:
            return self._info()
        except RunDamaged as e:
            return RunInfo(id=self.id, status="unreadable", problem=e.problem)
        except Exception as e:  # noqa: BLE001 - one damaged folder must never hide the others
            return RunInfo(id=self.id, status="unreadable", problem=files.first_line(e))

    def analysis_dir(self) -> Path:
        """<run>/analysis, where analyses cache their results; RunDamaged if something else stands there (checked
        before an analysis starts, so its work is not lost to a failed write at the end)."""
        path = self.path / "analysis"
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise RunDamaged("analysis", "is not a folder, so results cannot be cached: move it away")
        return path

    def readable(self, verb: str) -> RunInfo:
        """``info()`` of a run about to be used, raising "cannot <verb> run <id>: <file>: <reason>" if it is damaged."""
        info = self.info()
        if info.status == "unreadable":
            raise RunError(f"cannot {verb} run {self.id}: {info.problem}")
        return info

    def _info(self) -> RunInfo:
        lock = self.path / "lock"
        if lock.is_symlink() or (lock.exists() and not lock.is_file()):
            raise RunDamaged("lock", "is not a regular file")
        cfg = self.config()
        st = self.status_record() if _present(self.path / "status.json") else {"status": "interrupted"}
        self.metrics()  # parses every line: a damaged file makes the run unreadable
        summary = self.summary()
        rounds = summary.rounds if summary is not None else ()
        if len(rounds) > num_rounds(cfg):
            raise RunDamaged("summary.json", f"lists {len(rounds)} rounds; its config trains {num_rounds(cfg)}")
        for r in rounds:
            _check_torch_file(self.path, f"rounds/{r.round}/model.pt")
            self.check_fit(cfg, r.round, st)
        return RunInfo(id=self.id, status=st["status"], name=cfg.name, method=cfg.method,
                       created=st.get("created", ""), rounds_done=len(rounds),
                       test_acc=tuple(r.test_acc for r in rounds), error=st.get("error", ""))


@functools.lru_cache(maxsize=256)
def _model_shapes(cfg_json: str, round_idx: int, shapes: tuple[tuple[str, int], ...]
                  ) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The state dict's tensor shapes of the model a config builds in a round (built on the meta device)."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        sd = model_for_round(RunConfig.from_dict(json.loads(cfg_json)), round_idx, **dict(shapes)).state_dict()
    return tuple((k, tuple(v.shape)) for k, v in sd.items())


@functools.lru_cache(maxsize=1024)
def _file_shapes(path: Path, file: str, stamp: tuple[int, int, int]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The tensor shapes a saved state dict holds (read without its tensors' data); ``stamp`` (inode, size,
    mtime) keys the cache, so a rewritten file is read again. RunDamaged if it is not a state dict."""
    try:
        sd = files.load_torch(path, map_location="meta")
    except FileProblem as e:
        raise RunDamaged(file, str(e)) from None
    return _tensor_shapes(sd, file)


def _tensor_shapes(sd: Any, file: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    if not isinstance(sd, dict):
        raise RunDamaged(file, "does not hold a model's weights")
    return tuple((k, tuple(getattr(v, "shape", ()))) for k, v in sd.items())


def misfit(expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]]) -> str:
    """What keeps weights of shapes ``got`` from loading into a model of shapes ``expected`` ("" if nothing)."""
    missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
    if wrong:
        return f"{wrong[0]} is {list(got[wrong[0]])}, the config's model has {list(expected[wrong[0]])}"
    if missing:
        return f"{len(missing)} tensors missing, e.g. {missing[0]}"
    if extra:
        return f"{len(extra)} unexpected tensors, e.g. {extra[0]}"
    return ""


def _present(path: Path) -> bool:
    """Something is at ``path`` (a dangling symbolic link too: that is damage, not absence)."""
    return path.exists() or path.is_symlink()


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**31


def _finite_numbers(x: Any) -> bool:
    if isinstance(x, list):
        return all(_finite_numbers(v) for v in x)
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 40 else text[:39] + "…"


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of sdlab's (an analysis cache, sweep.json); any damage is a RunDamaged naming it."""
    try:
        return files.read_json_object(path)
    except FileProblem as e:
        raise RunDamaged(path.name, str(e)) from None


def _check_torch_file(run_path: Path, rel: str) -> None:
    """Cheap integrity check of a torch.save file: a regular file that is a zip whose central directory reads."""
    try:
        with files.open_regular(run_path / rel) as f:
            ok = zipfile.is_zipfile(f)
    except FileProblem as e:
        raise RunDamaged(rel, str(e)) from None
    if not ok:
        raise RunDamaged(rel, "is not a PyTorch file (damaged or truncated)")


class RunStore:
    """A folder of runs: create, get, list (tolerant of damage), rename, delete, recover."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_runs_dir()

    def create(self, cfg: RunConfig, *, status: str = "queued", status_fields: dict[str, Any] | None = None,
               hold: bool = False) -> Run:
        """A new run folder holding ``cfg``; ``status_fields`` go into its first status.json (a sweep's tag).

        ``hold``: take the run's lock before its first status is written and keep it for this process's next
        ``run.lock()``, so no ``recover()`` elsewhere ever sees a queued run without its owner. A folder that
        cannot be written whole (no space left) is removed again: a run exists with its config or not at all.
        """
        run = Run(self._new_folder(cfg.name))
        lock = None
        try:
            if hold:
                lock = _HANDOVER[run.path / "lock"] = RunLock(run.path / "lock")
            run.write_config(cfg)
            run.set_status(status, created=timestamp(), **(status_fields or {}))
        except BaseException:
            if lock is not None:
                _HANDOVER.pop(run.path / "lock", None)
                lock.release()
            shutil.rmtree(run.path, ignore_errors=True)
            raise
        return run

    def _new_folder(self, name: str) -> Path:
        try:
            return new_folder(self.root, name)
        except OSError as e:
            raise RunError(f"cannot create a run folder in {self.root}: {e.strerror or e}") from None

    def get(self, run_id: str) -> Run:
        path = self.root / run_id
        if slug(run_id, max_len=200) != run_id or not path.is_dir():
            raise RunError(f"no run {_short(run_id)} in {self.root.resolve()}")
        return Run(path)

    def __iter__(self) -> Iterator[Run]:
        try:
            entries = sorted(self.root.iterdir()) if self.root.is_dir() else []
        except OSError as e:
            raise RunError(f"cannot list the runs in {self.root}: {e.strerror or e}") from None
        return iter(Run(p) for p in entries if p.is_dir() and not p.name.startswith("."))

    def list(self) -> list[RunInfo]:
        return [run.info() for run in self]

    def recover(self) -> list[str]:
        """Mark queued/running runs whose owner process is gone as interrupted; return their ids.

        Also removes temp files an interrupted atomic write left behind (never a real file).
        """
        marked = []
        for run in self:
            try:
                if self._recover(run):
                    marked.append(run.id)
            except Exception:  # noqa: BLE001 - a damaged run is shown as such by list(); it never stops the others
                continue
        return marked

    @staticmethod
    def _recover(run: Run) -> bool:
        for tmp in run.path.glob(".*.tmp"):
            if _orphaned_temp(tmp):
                tmp.unlink(missing_ok=True)
        if run.is_live() or run.status() not in ACTIVE:
            return False
        # The status is read again under the run's lock: its owner may have finished (or started) meanwhile.
        try:
            # not run.lock(): never a lock this process's create() holds for its caller
            lock = RunLock(run.path / "lock")
        except RunError:
            return False
        try:
            if run.status() not in ACTIVE:
                return False
            run.set_status("interrupted", finished=timestamp(),
                           error="the process running it stopped (killed, crashed or closed)")
            return True
        finally:
            lock.release()

    def _require_idle(self, run: Run, verb: str) -> None:
        if run.is_live():
            raise RunError(f"cannot {verb} run {run.id}: it is queued or running (cancel it first)")

    def delete(self, run_id: str) -> None:
        """Remove a run folder (a run that is a symbolic link: the link only, never what it points to)."""
        run = self.get(run_id)
        self._require_idle(run, "delete")
        try:
            if run.path.is_symlink():
                run.path.unlink()
            else:
                shutil.rmtree(run.path)
        except OSError as e:
            raise RunError(f"cannot delete run {run.id}: {e.strerror or e}") from None

    def rename(self, run_id: str, new_name: str) -> Run:
        """Give a run a new name: the id keeps its timestamp, the name part becomes slug(new_name)."""
        run = self.get(run_id)
        self._require_idle(run, "rename")
        try:
            check_name(new_name.strip())
        except ConfigError as e:
            raise RunError(str(e).replace("name must be", "a run name must be", 1)) from None
        stamp = re.match(r"^\d{8}-\d{6}-", run.id)
        target = self.root / f"{stamp.group(0) if stamp else ''}{slug(new_name)}"
        if target.exists():
            raise RunError(f"a run named {target.name} already exists")
        cfg = run.config()
        try:
            run.path.rename(target)
        except OSError as e:
            raise RunError(f"cannot rename run {run.id}: {e.strerror or e}") from None
        moved = Run(target)
        moved.write_config(cfg.replace(name=new_name.strip()))
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
    rows = [flat_record(r) for r in records]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
