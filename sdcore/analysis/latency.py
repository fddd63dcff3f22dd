"""Per-exit inference latency of a BYOT network (Zhang et al. Table 5): exit i runs only sections 0..i
and its own head, so a shallow exit answers sooner at some cost in accuracy.

Timings are wall-clock medians on whatever machine runs this; compare exits of one measurement,
not numbers taken on different machines or at different times.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sdcore.analysis.registry import AnalysisKind, get_or_compute, register
from sdcore.config import ConfigError
from sdcore.data import load
from sdcore.runs import Run, RunError


def exit_latency(model: nn.Module, sample: Tensor, *, repeats: int = 20, warmup: int = 3) -> list[float]:
    """Median milliseconds of ``model.forward_exit(sample, i)`` for every exit i, shallow first.

    Eval mode under ``torch.inference_mode``; the model's training mode is restored on exit. Exits
    are timed round-robin (one call of each per repeat) so drift in machine load hits all alike.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    exits = range(getattr(model, "num_exits", 1))
    sync = (lambda: torch.cuda.synchronize(sample.device)) if sample.is_cuda else (lambda: None)
    times: list[list[float]] = [[] for _ in exits]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                for i in exits:
                    model.forward_exit(sample, i)
            for _ in range(repeats):
                for i in exits:
                    sync()  # queued GPU work must not be billed to this call
                    t0 = time.perf_counter()
                    model.forward_exit(sample, i)
                    sync()
                    times[i].append(1e3 * (time.perf_counter() - t0))
    finally:
        model.train(was_training)
    return [statistics.median(t) for t in times]


@dataclass(frozen=True)
class LatencySettings:
    batch_size: int = 64  # test examples per timed call

    def validate(self) -> "LatencySettings":
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        return self


def run_exit_latency(run: Run, *, batch_size: int = 64, device: str = "cpu") -> dict[str, Any]:
    """Exit latencies of a BYOT run's model on its first ``batch_size`` test examples, with the exits' accuracies.

    Returns {"batch_size", "device", "ms": [per exit], "test_acc_exits": [%], "test_acc_ensemble": %}
    (accuracies from summary.json). Cached in <run>/analysis/ (registry kind "exit_latency"), keyed by the
    batch size and the device; measured again only when either differs. A test split smaller than
    ``batch_size`` gives a smaller sample (the key keeps the requested size).
    """
    return get_or_compute(run, "exit_latency", LatencySettings(batch_size), device=device)


def _byot(run: Run) -> bool:
    """True for a BYOT run with a finished model; RunError for a run that can never have exit latencies."""
    cfg = run.config()
    if not cfg.model.exits:
        raise RunError(f"run {run.id} is a {cfg.method} run without exits; exit latency needs a BYOT run")
    summary = run.summary()
    if summary is None or not summary.rounds:
        raise RunError(f"run {run.id} has no finished model yet")
    return True


def _compute(run: Run, settings: LatencySettings, *, device, progress, should_stop) -> dict[str, Any]:
    cfg, final = run.config(), run.summary().rounds[0]
    data = load(cfg.data, seed=cfg.seed, device=device)
    model = run.load_model(0, **data.shapes, device=data.device)
    _, sample, _ = next(data.test.batches(settings.batch_size, shuffle=False, augment=False))
    progress(0.1, "timing every exit")
    return {"batch_size": settings.batch_size, "device": str(device), "ms": exit_latency(model, sample),
            "test_acc_exits": list(final.exit_accs), "test_acc_ensemble": final.ensemble_acc}


def _load(obj: Any) -> dict[str, Any]:
    if not (isinstance(obj, dict) and isinstance(obj.get("ms"), list) and isinstance(obj.get("batch_size"), int)):
        raise ValueError("not an exit-latency result")
    return obj


register(AnalysisKind(
    name="exit_latency", label="exit latency", settings=LatencySettings, compute=_compute, dump=dict,
    load=_load, version=2, by_device=True, applies=_byot))
