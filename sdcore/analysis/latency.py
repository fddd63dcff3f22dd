"""Per-exit inference latency of a BYOT network (Zhang et al. Table 5): exit i runs only sections 0..i
and its own head, so a shallow exit answers sooner at some cost in accuracy.

Timings are wall-clock medians on whatever machine runs this; compare exits of one measurement,
not numbers taken on different machines or at different times.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sdcore import files
from sdcore.data import load
from sdcore.engine import resolve_device
from sdcore.runs import Run, RunError, atomic_write_json

_LATENCY_FILE = "latency.json"


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


def run_exit_latency(run: Run, *, batch_size: int = 64, device: str = "cpu") -> dict[str, Any]:
    """Exit latencies of a BYOT run's model on its first ``batch_size`` test examples, with the exits' accuracies.

    Returns {"batch_size", "device", "ms": [per exit], "test_acc_exits": [%], "test_acc_ensemble": %}
    (accuracies from summary.json). Cached in <run>/analysis/latency.json; measured again only when
    that file is missing or was measured with another batch size or device. A test split smaller
    than ``batch_size`` gives a smaller sample (the key keeps the requested size).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cfg = run.config()
    if not cfg.model.exits:
        raise RunError(f"run {run.id} is a {cfg.method} run without exits; exit latency needs a BYOT run")
    summary = run.summary()
    rounds = summary.rounds if summary is not None else ()
    if not rounds:
        raise RunError(f"run {run.id} has no finished model yet")
    dev = str(resolve_device(device))
    path = run.analysis_dir() / _LATENCY_FILE
    cached = _read_cached(path)
    if cached is not None and cached.get("batch_size") == batch_size and cached.get("device") == dev:
        return cached
    data = load(cfg.data, seed=cfg.seed, device=dev)
    model = run.load_model(0, **data.shapes, device=data.device)
    _, sample, _ = next(data.test.batches(batch_size, shuffle=False, augment=False))
    result = {"batch_size": batch_size, "device": dev, "ms": exit_latency(model, sample),
              "test_acc_exits": list(rounds[0].exit_accs), "test_acc_ensemble": rounds[0].ensemble_acc}
    atomic_write_json(path, result)
    return result


def _read_cached(path: Path) -> dict[str, Any] | None:
    try:
        obj = files.read_json_object(path)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("ms"), list) else None
