"""Background training: a FIFO queue and one worker thread per device, progress snapshots, cancel, resume.

    manager = JobManager(runs_dir)        # marks runs left "running" by dead processes as interrupted
    handle = manager.submit(cfg)          # ConfigError / DataError here: nothing queued, nothing written
    handle.progress()                     # immutable snapshot, safe from any thread (a UI polls it)
    handle.cancel()                       # stops between two batches; finished rounds stay
    manager.resume(run_id)                # continues an interrupted/cancelled/failed run from its checkpoint
    manager.submit_analysis(run_id, registry.Request("calibration"))   # any analysis kind, behind training

Two jobs on one device run one after the other (no two trainings fighting for one GPU's memory);
jobs on different devices run in parallel. A job's exception marks its run failed with the
message; the worker survives and takes the next job. Worker threads never touch a UI: they
update the handle's snapshot under a lock and call the optional ``on_event`` callback.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch

from sdcore import liveness
from sdcore.analysis import registry
from sdcore.analysis.registry import AnalysisEvent, Request
from sdcore.analysis.runner import AnalysisSpec, analyze
from sdcore.analysis.story import curvature_spec
from sdcore.config import RunConfig
from sdcore.data import steps_per_epoch
from sdcore.engine import Cancelled, Event, resolve_device
from sdcore.runs import RESUMABLE, Run, RunDamaged, RunError, RunInfo, RunLock, RunStore
from sdcore.terms import num_rounds
from sdcore.training import execute, failure_message, prepare


@dataclass(frozen=True)
class Progress:
    """What a page or the CLI shows about one job, at one instant."""
    run_id: str
    status: str  # queued | running | done | failed | cancelled
    device: str
    round: int = 0  # 0 = teacher
    rounds: int = 1
    epoch: int = 0  # epochs finished in the current round
    epochs: int = 1
    step: int = 0  # steps done in the current epoch
    steps: int = 0  # 0: not known yet (a training job knows it from the start where the split's size is known)
    fraction: float = 0.0  # of the whole job, in [0, 1]
    eta_s: float | None = None  # seconds left, from this job's own pace; None until it has one
    # training: the latest epoch record; an analysis: its running stage (AnalysisEvent.metrics: "analysis" label,
    # "stage", "stages", "stage_fraction", "fraction", and "round" for a per-round stage; runner.progress_text)
    metrics: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    error: str = ""


class JobHandle:
    """One submitted job. Read it with ``progress()``; stop it with ``cancel()``."""

    def __init__(self, run: Run, lock: RunLock | None, device: str, on_event: Callable[[Event], None] | None,
                 *, kind: str = "train", work: Callable[["JobHandle"], None] | None = None,
                 planned: Mapping[str, Any] | None = None):
        self.run = run
        self.kind = kind  # "train" or "analysis"
        self._work = work or (lambda h: execute(h.run, on_event=h._event, should_stop=h._stop.is_set))
        self._lock_file = lock
        self._on_event = on_event
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._pace: tuple[float, float] | None = None  # (time, fraction) at this job's first event
        # planned: the counts a queued or just-started job shows before its first event (``planned``)
        self._progress = Progress(run_id=run.id, status="queued", device=device, **(planned or {}))
        self.then: JobHandle | None = None  # a job queued to run after this one (a run's curvature=True analysis)
        self.request: Any = None  # an analysis job's Request or AnalysisSpec (None: training, curvature=True's)

    @property
    def run_id(self) -> str:
        return self.run.id

    def progress(self) -> Progress:
        with self._mutex:
            return self._progress

    def cancel(self) -> None:
        """Ask the job to stop: a queued job is cancelled at once, a running one before its next batch; the job
        queued to follow it (``then``) is cancelled too."""
        self._stop.set()
        if self.then is not None:
            self.then.cancel()
        with self._mutex:
            queued = self._progress.status == "queued"
            if queued:  # under the mutex, so the worker can no longer start it
                self._progress = dataclasses.replace(self._progress, status="cancelled")
        if queued:
            if self.kind == "train":
                self.run.set_status("cancelled", error="cancelled before it started")
            self._finish("cancelled", "")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (True) or ``timeout`` seconds pass (False)."""
        return self._finished.wait(timeout)

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    # ---- worker side
    def _start(self) -> bool:
        with self._mutex:
            if self._progress.status != "queued":
                return False  # cancelled while it waited
            self._progress = dataclasses.replace(self._progress, status="running")
            return True

    def _event(self, e: "Event | AnalysisEvent") -> None:
        analysis = not isinstance(e, Event)  # an AnalysisEvent: its own fraction (stages weighed by their cost)
        if analysis:
            fraction = e.fraction
        else:
            done = (e.round * e.epochs + e.epoch) * e.steps + (e.step if e.kind == "step" else 0)
            fraction = min(1.0, done / max(1, e.rounds * e.epochs * e.steps))
        now = time.perf_counter()
        with self._mutex:
            if self._pace is None:  # a resumed job starts part-way: measure the pace from here
                self._pace = (now, fraction)
            t0, f0 = self._pace
            eta = (now - t0) * (1.0 - fraction) / (fraction - f0) if fraction - f0 > 1e-3 else None
            if analysis:  # the running stage; round: the analysed one (0 for a run-level kind)
                self._progress = dataclasses.replace(self._progress, round=e.round or 0, step=e.stage - 1,
                                                     steps=e.stages, fraction=fraction, eta_s=eta,
                                                     metrics=e.metrics)
            else:  # the last epoch's record (its step events carry none)
                metrics = MappingProxyType(dict(e.metrics)) if e.kind == "epoch" else self._progress.metrics
                self._progress = dataclasses.replace(
                    self._progress, round=e.round, rounds=e.rounds, epoch=e.epoch, epochs=e.epochs,
                    step=e.step, steps=e.steps, fraction=fraction, eta_s=eta, metrics=metrics)
        if self._on_event is not None:
            self._on_event(e)

    def _finish(self, status: str, error: str) -> None:
        with self._mutex:
            done = status == "done"
            self._progress = dataclasses.replace(self._progress, status=status, error=error,
                                                 eta_s=0.0 if done else None,
                                                 fraction=1.0 if done else self._progress.fraction)
        if self._lock_file is not None:
            self._lock_file.release()
        self._finished.set()


class JobManager:
    """Owns the queues and worker threads of this process; one per app (st.cache_resource) or CLI call."""

    def __init__(self, runs_dir: str | Path | None = None):
        self.store = RunStore(runs_dir)
        self.recovered = self.store.recover()  # ids of runs found dead and marked interrupted
        self._mutex = threading.Lock()
        self._queues: dict[str, queue.Queue[JobHandle | None]] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._handles: dict[str, JobHandle] = {}

    def submit(self, cfg: RunConfig, *, on_event: Callable[[Event], None] | None = None) -> JobHandle:
        """Queue a new run. Bad config or missing data raise here, before anything is written."""
        run = prepare(cfg, self.store)
        return self._enqueue(run, cfg, on_event)

    def resume(self, run_id: str, *, on_event: Callable[[Event], None] | None = None,
               restart_round: bool = False) -> JobHandle:
        """Queue an interrupted, cancelled or failed run to continue from its last epoch checkpoint.

        ``restart_round``: drop the checkpoint and train the unfinished round again from its first epoch,
        after the finished rounds on disk (the way out when checkpoint.pt is damaged).
        """
        self.store.recover()
        run = self.store.get(run_id)
        info = run.readable("resume")
        if info.status not in RESUMABLE:
            owner = RunLock.owner(run.path / "lock") if run.is_live() else None
            where = f" {owner.where(liveness.clock())}" if owner is not None and owner.host != liveness.this_host() \
                else ""
            raise RunError(f"cannot resume run {run_id}: it is {info.status}{where} "
                           f"(only {', '.join(RESUMABLE)} runs can be resumed)")
        cfg = run.config().validate()
        resolve_device(cfg.device)
        return self._enqueue(run, cfg, on_event, check=lambda: _resumable_checkpoint(run, info, restart_round))

    def submit_analysis(self, run_id: str, request: "Request | AnalysisSpec", *,
                        on_event: Callable[["AnalysisEvent"], None] | None = None) -> JobHandle:
        """Queue an analysis of a run's finished rounds: any registered kind (``registry.Request``) or the
        curvature / loss-surface results of runner's ``AnalysisSpec``; results cached in the run.

        It queues behind training on the same device; the run folder is only read (and analysis/ written).
        A bad request or a run that cannot have it raises here (ConfigError / RunError), nothing queued.
        """
        run = self.store.get(run_id)
        request = _checked(run, request)
        device = _device_key(resolve_device(request.device))
        work = lambda h: _analyze(h.run, request, on_event=h._event, should_stop=h._stop.is_set)  # noqa: E731
        handle = JobHandle(run, None, device, on_event, kind="analysis", work=work)
        handle.request = request
        return self._enqueue_handle(handle)

    def jobs(self) -> list[JobHandle]:
        """Every job this manager has taken, oldest first (finished ones included)."""
        with self._mutex:
            return list(self._handles.values())

    def active(self) -> list[JobHandle]:
        return [h for h in self.jobs() if not h.done]

    def shutdown(self, *, cancel: bool = True, timeout: float | None = None) -> None:
        """Cancel (optionally) every job and stop the workers; used by tests and the CLI."""
        if cancel:
            for h in self.active():
                h.cancel()
        with self._mutex:
            for q in self._queues.values():
                q.put(None)
            workers = list(self._workers.values())
        for w in workers:
            w.join(timeout)

    # ---- internals
    def _enqueue(self, run: Run, cfg: RunConfig, on_event, check: Callable[[], None] = lambda: None) -> JobHandle:
        device = _device_key(resolve_device(cfg.device))
        lock = run.lock()
        try:
            check()  # under the run's lock: nothing else changes the folder meanwhile
        except BaseException:
            lock.release()
            raise
        handle = JobHandle(run, lock, device, on_event, planned=planned(run, cfg))
        run.set_status("queued", device=device)
        self._enqueue_handle(handle)
        if cfg.curvature:  # same device queue: it starts when the training job ends, whatever its end
            handle.then = self._enqueue_handle(JobHandle(run, None, device, None, kind="analysis",
                                                         work=_curvature_work))
        return handle

    def _enqueue_handle(self, handle: JobHandle) -> JobHandle:
        device = handle.progress().device
        with self._mutex:
            self._handles[f"{handle.kind}:{handle.run_id}:{len(self._handles)}"] = handle
            if device not in self._queues:
                self._queues[device] = queue.Queue()
                worker = threading.Thread(target=self._work, args=(self._queues[device],),
                                          name=f"sdlab-worker-{device}", daemon=True)
                self._workers[device] = worker
                worker.start()
            self._queues[device].put(handle)
        return handle

    def _work(self, jobs: queue.Queue[JobHandle | None]) -> None:
        while (handle := jobs.get()) is not None:
            if not handle._start():
                continue
            try:
                handle._work(handle)
                handle._finish("done", "")
            except Cancelled:
                handle._finish("cancelled", "")
            except Exception as e:  # the run is marked failed with the message; the worker goes on
                handle._finish("failed", _status_error(handle.run, e) if handle.kind == "train"
                               else failure_message(e))


def _checked(run: Run, request: Request | AnalysisSpec) -> Request | AnalysisSpec:
    """``request`` validated against ``run`` before it is queued: ConfigError / RunError here, nothing queued."""
    request = request.validate()
    run.readable("analyze")
    if isinstance(request, AnalysisSpec):
        done = run.finished_rounds()
        missing = [r for r in request.rounds if r not in done]
        if missing:
            raise RunError(f"run {run.id} has no finished round {missing[0]} (finished: {done or 'none'})")
    else:
        registry.get(request.kind).applies(run)  # raises where the run can never have it
    return request


def _analyze(run: Run, request: Request | AnalysisSpec, *, on_event: Callable[[AnalysisEvent], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> None:
    """What an analysis job does in its worker thread: compute and cache whatever the request misses."""
    if isinstance(request, AnalysisSpec):
        analyze(run, request, on_event=on_event, should_stop=should_stop)
    else:
        registry.get_or_compute(run, request.kind, request.settings, device=request.device, on_event=on_event,
                                should_stop=should_stop)


def _curvature_work(h: JobHandle) -> None:
    """λ_max and trace of every round the training job finished (none: nothing to do)."""
    rounds = h.run.finished_rounds()
    if rounds:
        analyze(h.run, curvature_spec(rounds), on_event=h._event, should_stop=h._stop.is_set)


class CheckpointDamaged(RunError):
    """A resume refused because checkpoint.pt cannot be read; ``resume(..., restart_round=True)`` is the way on."""


def _resumable_checkpoint(run: Run, info: RunInfo, restart_round: bool) -> None:
    """Refuse a resume from a damaged checkpoint.pt with the way out; with ``restart_round``, drop it."""
    if restart_round:
        run.drop_checkpoint()
        return
    try:
        ckpt = run.checkpoint()
        if ckpt is not None and ckpt["round"] == info.rounds_done:
            run.check_fit(run.config(), ckpt["round"], run.status_record(), ckpt["model"], "checkpoint.pt")
    except RunDamaged as e:
        finished = f"{info.rounds_done} finished round{'s' if info.rounds_done != 1 else ''}"
        raise CheckpointDamaged(f"cannot resume run {run.id}: {e.problem}. "
                                f"Restart its unfinished round {info.rounds_done} "
                       f"after the {finished} on disk: python -m sdcore resume {run.id} --restart-round") from None


def planned(run: Run, cfg: RunConfig) -> dict[str, Any]:
    """A training job's Progress counts before its first event: rounds and epochs from the config, steps per
    epoch where the training split's size is known without loading it (else 0), and for a resumed run the
    round it continues in (its finished rounds from summary.json)."""
    rounds = num_rounds(cfg)
    done = min(len(run.finished_rounds()), rounds - 1)
    return dict(round=done, rounds=rounds, epochs=cfg.epochs, steps=steps_per_epoch(cfg) or 0,
                fraction=done / rounds)


def _device_key(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def _status_error(run: Run, e: Exception) -> str:
    try:
        return run.status_record().get("error") or str(e)
    except (OSError, RunError):
        return str(e)
