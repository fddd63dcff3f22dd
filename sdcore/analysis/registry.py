"""Every analysis of a run's finished models, one registry entry each (timm's ``register``), one cache, one job path.

    kinds()                                           # the registered names, e.g. "calibration", "robustness"
    result = get_or_compute(run, "calibration")       # cached in <run>/analysis/, computed here if missing
    found, result = peek(run, "robustness")           # the cache only: a page reads it, a job computes
    manager.submit_analysis(run.id, Request("robustness"))   # the same in the device's worker queue

An entry (``AnalysisKind``) holds everything about its kind: name, the label a progress line shows, its
settings dataclass (frozen, defaults, ``validate()``), the compute function, how its result goes to and
comes from JSON, a version, and what it needs of a run (``applies``). Each analysis module registers
its own entries at its end; ``kinds()`` imports every module of sdcore.analysis, so a new kind is its entry
(in a module of its own or beside related kinds), its compute function and its tests.

One cache format, ``<run>/analysis/<kind>-<settings hash>.json`` (per-round kinds:
``<kind>-<round>-<hash>.json``), holding {"kind", "version", "settings", "finished_rounds" (run-level
kinds: the result is stale once another round finishes), "result", "device", "seconds", "created"}. A
result of tensors (test logits) sits in ``<same stem>.pt`` beside it. An absent, damaged or stale record
is recomputed. The curvature and loss-surface kinds stay ``runner.py``'s (its ``AnalysisSpec`` plans many
per-round results with cost estimates) but use these records, this event type and the same job path.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import io
import json
import pkgutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch

import sdcore.analysis as analysis_package
from sdcore import files
from sdcore.config import ConfigError, check_device
from sdcore.engine import Cancelled, resolve_device
from sdcore.runs import Run, atomic_write_bytes, atomic_write_json

Progress = Callable[[float, str], None]  # (fraction of the kind's work done in [0, 1], what runs now)


@dataclass(frozen=True)
class AnalysisKind:
    name: str  # registry key and file stem, e.g. "calibration"
    label: str  # what a person reads in a progress line, e.g. "calibration"
    settings: type  # frozen dataclass: every field defaulted, ``validate() -> self`` raising ConfigError
    compute: Callable[..., Any]  # (run, settings, *, device, progress, should_stop) -> result; calls progress
    #                              between models / corruptions / batches, which raises Cancelled on a stop
    dump: Callable[[Any], Any]  # result -> JSON value (sidecar: a dict of tensors for torch.save)
    load: Callable[[Any], Any]  # the inverse; TypeError / KeyError / ValueError means a damaged record
    version: int  # bump when the result's format or meaning changes: older records recompute
    sidecar: bool = False  # the result is tensors, stored in <stem>.pt beside the record
    by_device: bool = False  # the result depends on the device (timings): the device is part of the key
    applies: Callable[[Run], bool] = lambda run: True  # False: nothing to compute, ``empty`` is the answer
    #                                                  (raises RunError where the run can never have it)
    empty: Any = None  # the answer where the kind does not apply (e.g. [] for a one-round run's agreement)


_KINDS: dict[str, AnalysisKind] = {}


def register(kind: AnalysisKind) -> AnalysisKind:
    if kind.name in _KINDS and _KINDS[kind.name] is not kind:
        raise ValueError(f"analysis kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind
    return kind


@functools.cache
def _load() -> None:
    """Import every module of sdcore.analysis once: each registers its kinds as it is imported. (Pages look
    kinds up on every render: the package folder is listed only the first time.)"""
    for module in pkgutil.iter_modules(analysis_package.__path__):
        importlib.import_module(f"{analysis_package.__name__}.{module.name}")


def kinds() -> list[str]:
    _load()
    return sorted(_KINDS)


def get(name: str) -> AnalysisKind:
    _load()
    if name not in _KINDS:
        raise ConfigError(f"analysis kind must be one of {', '.join(sorted(_KINDS))}, got {name!r}")
    return _KINDS[name]


@dataclass(frozen=True)
class Request:
    """One registered kind of one run, as a job computes it (``JobManager.submit_analysis``)."""
    kind: str  # a name of kinds()
    settings: Any = None  # the kind's settings dataclass; None = its defaults
    device: str = "auto"  # where the job computes, and whose worker queue it waits in

    def validate(self) -> "Request":
        entry = get(self.kind)
        settings = entry.settings() if self.settings is None else self.settings
        if not isinstance(settings, entry.settings):
            raise ConfigError(f"{self.kind} takes {entry.settings.__name__}, got {type(settings).__name__}")
        check_device(self.device)
        return dataclasses.replace(self, settings=settings.validate())


# ---------------------------------------------------------------- progress events

@dataclass(frozen=True)
class AnalysisEvent:
    """What an analysis job reports (a training job reports ``engine.Event``); ``JobHandle`` reads either."""
    kind: str  # "step" while it computes, "done" once
    analysis: str  # what runs now, e.g. "calibration · student 1" or "λ_max (Lanczos)"
    fraction: float  # of the whole job, in [0, 1]; never steps back
    stage: int = 1  # 1-based stage of ``stages`` (runner: one per (kind, round) result)
    stages: int = 1
    stage_fraction: float = 0.0  # of the running stage
    round: int | None = None  # the analysed round, for per-round stages

    @property
    def metrics(self) -> Mapping[str, Any]:
        """The running stage as ``Progress.metrics`` shows it (``runner.progress_text`` reads it)."""
        m = {"analysis": self.analysis, "stage": self.stage, "stages": self.stages,
             "stage_fraction": self.stage_fraction, "fraction": self.fraction}
        return MappingProxyType(m if self.round is None else {**m, "round": self.round})


def _reporter(label: str, on_event: Callable[[AnalysisEvent], None] | None,
              should_stop: Callable[[], bool] | None) -> Progress:
    def progress(fraction: float, what: str) -> None:
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled")
        if on_event is not None:
            f = min(1.0, max(0.0, fraction))
            on_event(AnalysisEvent("step", f"{label} · {what}" if what else label, f, stage_fraction=f))
    return progress


# ---------------------------------------------------------------- the records

def settings_hash(settings: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def record_path(run: Run, kind: str, settings: Mapping[str, Any], round_idx: int | None = None) -> Path:
    stem = kind if round_idx is None else f"{kind}-{round_idx}"
    return run.path / "analysis" / f"{stem}-{settings_hash(settings)}.json"


def write_record(path: Path, *, kind: str, version: int, settings: Mapping[str, Any], result: Any,
                 device: str, seconds: float, finished: list[int] | None = None, **extra: Any) -> None:
    record = {"kind": kind, "version": version, **extra, "settings": dict(settings)}
    if finished is not None:
        record["finished_rounds"] = list(finished)
    record |= {"result": result, "device": device, "seconds": seconds, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(path, record)


def read_record(path: Path, *, kind: str, version: int, finished: list[int] | None = None) -> Any:
    """The "result" of a record ``write_record`` wrote for this kind, version (a record without one is
    version 1: the curvature caches from before versions) and finished rounds; None when absent, damaged
    or stale."""
    try:
        obj = files.read_json_object(path)
        if obj["kind"] != kind or obj.get("version", 1) != version:
            return None
        if finished is not None and obj["finished_rounds"] != finished:
            return None
        return obj["result"]
    except (ValueError, KeyError, TypeError):  # FileProblem is a ValueError
        return None


def _key(entry: AnalysisKind, settings: Any, device: torch.device) -> dict[str, Any]:
    key = dataclasses.asdict(settings)
    return {**key, "device": str(device)} if entry.by_device else key


_MISSING = object()


def _read(run: Run, entry: AnalysisKind, settings: Any, device: torch.device, finished: list[int]) -> Any:
    path = record_path(run, entry.name, _key(entry, settings, device))
    raw = read_record(path, kind=entry.name, version=entry.version, finished=finished)
    if raw is None:
        return _MISSING
    try:
        if entry.sidecar:
            if raw != {"sidecar": path.with_suffix(".pt").name}:
                return _MISSING
            tensors = files.load_torch(path.with_suffix(".pt"))
            if tensors.get("finished_rounds") != finished:
                return _MISSING  # a sidecar left by another record: recompute both
            return entry.load(tensors)
        return entry.load(raw)
    except (ValueError, KeyError, TypeError, AttributeError):  # FileProblem is a ValueError
        return _MISSING


def _write(run: Run, entry: AnalysisKind, settings: Any, device: torch.device, finished: list[int], result: Any,
           seconds: float) -> None:
    path = record_path(run, entry.name, _key(entry, settings, device))
    run.analysis_dir()
    dumped = entry.dump(result)
    if entry.sidecar:  # tensors first: a record never points at a sidecar not yet written
        buf = io.BytesIO()
        torch.save({**dumped, "finished_rounds": finished}, buf)
        atomic_write_bytes(path.with_suffix(".pt"), buf.getvalue())
        dumped = {"sidecar": path.with_suffix(".pt").name}
    write_record(path, kind=entry.name, version=entry.version, settings=_key(entry, settings, device), result=dumped,
                 device=device.type, seconds=seconds, finished=finished)


def _settings(entry: AnalysisKind, settings: Any) -> Any:
    return Request(entry.name, settings).validate().settings


def peek(run: Run, kind: str, settings: Any = None, *, device: str = "auto") -> tuple[bool, Any]:
    """(True, result) when the cache holds it (or the kind does not apply to the run: its ``empty``),
    else (False, None); nothing is computed. Raises RunError / ConfigError for an unreadable run."""
    entry = get(kind)
    settings = _settings(entry, settings)
    if not entry.applies(run):
        return True, entry.empty
    hit = _read(run, entry, settings, resolve_device(device), run.finished_rounds())
    return (False, None) if hit is _MISSING else (True, hit)


def get_or_compute(run: Run, kind: str, settings: Any = None, *, device: str = "cpu",
                   progress: Progress | None = None, on_event: Callable[[AnalysisEvent], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Any:
    """The kind's result for ``run`` from the cache, else computed here (the CLI, tests and jobs) and cached.

    ``on_event`` receives ``AnalysisEvent``s; ``should_stop`` is checked whenever the computation reports
    progress (between models, corruptions, batches) and stops it with ``engine.Cancelled``."""
    entry = get(kind)
    settings = _settings(entry, settings)
    if not entry.applies(run):
        return entry.empty
    dev = resolve_device(device)
    finished = run.finished_rounds()
    hit = _read(run, entry, settings, dev, finished)
    if hit is not _MISSING:
        return hit
    report = progress or _reporter(entry.label, on_event, should_stop)
    report(0.0, "")
    t0 = time.perf_counter()
    result = entry.compute(run, settings, device=dev, progress=report, should_stop=should_stop or (lambda: False))
    _write(run, entry, settings, dev, finished, result, time.perf_counter() - t0)
    if on_event is not None:
        on_event(AnalysisEvent("done", entry.label, 1.0, stage_fraction=1.0))
    return result


def dump_list(items: list) -> list[dict[str, Any]]:
    """A list of (nested) result dataclasses as JSON."""
    return [dataclasses.asdict(x) for x in items]
