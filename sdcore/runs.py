"""The run folder is the contract: everything a page or the CLI shows is rebuilt from it.

    <runs-dir>/<run-id>/
        config.json          resolved RunConfig
        metrics.jsonl        one JSON object per epoch: {"round", "epoch", <metrics>}
        rounds/<k>/model.pt  state dict of round k's selected model
        summary.json         {"method", "rounds": [{"round": k, "test_acc": %, ...}], ...}

Whole files are written atomically (temp file in the same folder + fsync + rename), so a reader
never sees half a config, model or summary. metrics.jsonl is appended one line per write call and
fsynced; readers skip a torn last line (a crash mid-append) instead of failing.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from sdcore.config import RunConfig

RUNS_DIR_ENV = "SDLAB_RUNS_DIR"


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


def slug(name: str, max_len: int = 40) -> str:
    """A file-name-safe version of a user's run name: no separators, no dots at the start."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".-")
    return s[:max_len] or "run"


@dataclass(frozen=True)
class Run:
    """One run folder. Cheap to construct; every accessor reads the disk."""
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    # ---- writers (used by the training recipes)
    def write_config(self, cfg: RunConfig) -> None:
        atomic_write_bytes(self.path / "config.json", (cfg.to_json() + "\n").encode())

    def append_metrics(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def save_model(self, round_idx: int, state_dict: dict[str, torch.Tensor]) -> None:
        import io
        buf = io.BytesIO()
        torch.save(state_dict, buf)
        atomic_write_bytes(self.model_path(round_idx), buf.getvalue())

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / "summary.json", summary)

    # ---- readers
    def model_path(self, round_idx: int) -> Path:
        return self.path / "rounds" / str(round_idx) / "model.pt"

    def config(self) -> RunConfig:
        return RunConfig.load(self.path / "config.json")

    def metrics(self) -> list[dict[str, Any]]:
        p = self.path / "metrics.jsonl"
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line from a crash mid-append
        return out

    def summary(self) -> dict[str, Any] | None:
        p = self.path / "summary.json"
        return json.loads(p.read_text()) if p.exists() else None

    def load_state_dict(self, round_idx: int, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        return torch.load(self.model_path(round_idx), map_location=map_location, weights_only=True)


class RunStore:
    """A folder of runs. ``create`` makes a fresh, uniquely named run folder."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_runs_dir()

    def create(self, cfg: RunConfig) -> Run:
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{slug(cfg.name)}"
        for n in range(1000):
            path = self.root / (base if n == 0 else f"{base}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            run = Run(path)
            run.write_config(cfg)
            return run
        raise RuntimeError(f"could not create a run folder under {self.root}")

    def get(self, run_id: str) -> Run:
        path = self.root / slug(run_id, max_len=200)
        if slug(run_id, max_len=200) != run_id or not (path / "config.json").exists():
            raise FileNotFoundError(f"no run {run_id!r} in {self.root.resolve()}")
        return Run(path)

    def __iter__(self) -> Iterator[Run]:
        if not self.root.exists():
            return iter(())
        return iter(Run(p) for p in sorted(self.root.iterdir()) if p.is_dir() and not p.name.startswith("."))
