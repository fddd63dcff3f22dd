"""The entry points that run a config end to end with an honest status (the recipes are in sdcore.methods).

``prepare`` refuses bad input before anything is written; ``execute`` runs (or resumes) a run
folder and keeps status.json true whatever happens; ``train`` is both, synchronously.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Callable

import torch

from sdcore import __version__
from sdcore.config import ConfigError, RunConfig, is_external
from sdcore.data import DataError, check_available, load
from sdcore.engine import (
    Cancelled,
    Diverged,
    Event,
    RoundResult,
    Session,
    cpu_threads,
    resolve_device,
    round_summary,
    training_threads,
)
from sdcore.methods import recipe
from sdcore.models import model_for_round, pretrained
from sdcore.provenance import deterministic, packages, provenance
from sdcore.runs import Run, RunStore, RunSummary, atomic_write_bytes, timestamp


def run_threads(cfg: RunConfig, data, device: torch.device, run: Run) -> int:
    """The CPU threads this run trains with (engine.training_threads on its round-0 model and a real batch),
    recorded in status.json."""
    with torch.random.fork_rng(devices=[]):  # a throwaway model: leave the caller's RNG as it was
        model = model_for_round(cfg, 0, **data.shapes).to(device)
    _, x, _ = next(iter(data.train.batches(cfg.optim.batch_size, shuffle=False, augment=False)))
    threads = training_threads(cfg, model, x, device)
    run.set_status("running", threads=threads)
    return threads


def prepare(cfg: RunConfig, store: RunStore, *, status_fields: dict | None = None) -> Run:
    """Validate the config, the device and the data's presence; then create the run folder (queued).

    ``status_fields``: extra fields of its first status.json (a sweep tags its trials this way).

    Raises ConfigError / DataError with a one-line message before anything is written.
    """
    cfg.validate()
    resolve_device(cfg.device)
    check_available(cfg.data)
    check_model(cfg)
    return store.create(cfg, status_fields=status_fields, hold=True)  # the caller's run.lock() takes it over


def check_model(cfg: RunConfig) -> None:
    """Your own model (``model.arch`` from a file, timm or torchvision) and your own teacher's weights: build the
    model and load the weights now, on the CPU with the data's shapes, so a broken builder or a file that does
    not fit is one ConfigError before a run folder exists. sdlab's own models need no check."""
    m = cfg.model
    if not is_external(m.arch) and m.teacher_weights is None:
        return
    shapes = load(cfg.data, seed=cfg.seed, device="cpu").shapes
    with torch.random.fork_rng(devices=[]):  # a throwaway model: leave the caller's RNG as it was
        model = model_for_round(cfg, 0, **shapes)
    if m.teacher_weights is not None:
        pretrained.target(model, pretrained.read(m.teacher_weights), m.teacher_weights)


def execute(run: Run, *, on_event: Callable[[Event], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> list[RoundResult]:
    """Train every round of ``run`` not finished yet, continuing from its checkpoint if it has one.

    status.json goes running -> done | cancelled (Cancelled, KeyboardInterrupt) | failed (anything
    else, with the message); the exception is re-raised. Finished rounds and the latest epoch's
    checkpoint stay on disk in every case, so ``execute`` can be called again to resume.

    At every start, resume included, status.json's ``provenance`` (sdcore.provenance) and packages.txt are
    written anew: the environment that trains the rest of the run is the one that matters for it.
    ``cfg.deterministic`` trains under ``provenance.deterministic`` (process-wide: see there).
    """
    cfg = run.config().validate()
    device = resolve_device(cfg.device)
    run.set_status("running", started=timestamp(), finished=None, error="", device=str(device), pid=os.getpid(),
                   host=platform.node(), sdcore=__version__, torch=torch.__version__, provenance=provenance(device))
    try:
        atomic_write_bytes(run.path / "packages.txt", packages().encode())
        data = load(cfg.data, seed=cfg.seed, device=device)
        # The shapes the models are built with: Run.check_fit tests saved weights against them without the data.
        run.set_status("running", shapes=data.shapes)
        done = len(run.finished_rounds())
        ckpt = run.checkpoint()
        if ckpt is not None and ckpt["round"] != done:
            ckpt = None  # written before its round finished and was saved: nothing left to resume in it
        run.truncate_metrics(before=(done, ckpt["epoch"] + 1 if ckpt else 1))  # epochs about to be redone
        if done or ckpt:  # where each resume picked up, and on which host: a run's history stays readable
            earlier = run.status_record().get("resumes")
            run.set_status("running", resumes=[*(earlier if isinstance(earlier, list) else []), {
                "round": done, "epoch": ckpt["epoch"] if ckpt else 0, "host": platform.node(), "at": timestamp()}])
        session = Session(cfg=cfg, data=data, device=device, run=run, emit=on_event or (lambda e: None),
                          should_stop=should_stop or (lambda: False), resume=ckpt, rounds_done=done)

        def on_round(results: list[RoundResult]) -> None:
            run.write_summary(RunSummary(method=cfg.method, complete=len(results) == session.rounds,
                                         noisy_train_labels=int(data.noise_mask.sum()),
                                         rounds=tuple(round_summary(r) for r in results)))

        if done < session.rounds:
            with deterministic(cfg.deterministic), cpu_threads(run_threads(cfg, data, device, run)):
                results = recipe(cfg)(session, on_round)
        else:  # every round was saved before the process stopped: only the status was left to write
            results = session.completed_rounds()
    except (Cancelled, KeyboardInterrupt):
        run.set_status("cancelled", finished=timestamp(), error="cancelled by the user; resume continues it")
        raise
    except BaseException as e:
        run.set_status("failed", finished=timestamp(), error=failure_message(e))
        raise
    run.drop_checkpoint()
    run.set_status("done", finished=timestamp())
    return results


def failure_message(e: BaseException) -> str:
    """One line for status.json: sdlab's own errors speak for themselves; others get their type."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(e, (Diverged, DataError, ConfigError)):
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def train(cfg: RunConfig, *, runs_dir: str | Path | None = None,
          on_event: Callable[[Event], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> tuple[Run, list[RoundResult]]:
    """prepare + execute in this thread, holding the run's lock; returns the run and its rounds."""
    run = prepare(cfg, RunStore(runs_dir))
    lock = run.lock()
    try:
        return run, execute(run, on_event=on_event, should_stop=should_stop)
    finally:
        lock.release()
