"""Run the curvature and loss-surface analyses on a run's rounds, cached in the run folder.

    results = analyze(run, AnalysisSpec(rounds=(0, 1), hessian=True, landscape="2d"))

Each (kind, round, settings) result is stored once as ``<run>/analysis/<kind>-<round>-<hash>.json``
(hash of the settings that change the numbers), so reopening a page or re-running the CLI is
instant. Every analysis uses the same fixed, seeded subset of the training split (BatchNorm in eval
mode), the round's saved weights, and never touches the run's training files.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from sdcore.analysis import flatness, hessian, landscape
from sdcore.config import ConfigError
from sdcore.data import load
from sdcore.engine import Cancelled, Event, resolve_device
from sdcore.models import model_for_round
from sdcore.runs import Run, RunError, atomic_write_json

KINDS = ("eigen", "trace", "density", "line", "surface", "interp", "flatness")
TRACE_DEFLATE = 20  # Lanczos steps taken out of the trace exactly (hessian.hessian_trace)


@dataclass(frozen=True)
class AnalysisSpec:
    rounds: tuple[int, ...]  # which rounds (0 = teacher) to analyse
    hessian: bool = True  # top-k eigenvalues and Hutchinson trace
    density: bool = True  # with hessian: the eigen-spectral density by stochastic Lanczos quadrature
    top_k: int = 20  # eigenvalues for the ECDF (Pham Fig. 5 uses the top 100)
    trace_samples: int = 100  # at most this many Rademacher vectors for the trace (after 20 deflation steps)
    trace_tol: float = 0.02  # stop once the trace's standard error is below this fraction of it
    landscape: str | None = None  # None | "1d" | "2d" (filter-normalized, Li et al.)
    steps: int | None = None  # grid points per axis; None = 51 on a GPU, 21 on the CPU
    interpolate: bool = False  # the line from the teacher (round 0) to each analysed student
    flatness: bool = False  # loss under Gaussian weight noise (BYOT Fig. 4)
    subset: int = 512  # training examples the analyses use (fixed, seeded)
    seed: int = 0  # seeds the subset, the random vectors and the directions
    device: str = "auto"

    def validate(self) -> "AnalysisSpec":
        if not self.rounds:
            raise ConfigError("rounds must name at least one round, got none")
        if self.landscape not in (None, "1d", "2d"):
            raise ConfigError(f"landscape must be 1d or 2d, got {self.landscape!r}")
        if not 1 <= self.top_k <= 200:
            raise ConfigError(f"top_k must be in [1, 200], got {self.top_k}")
        if not 2 <= self.trace_samples <= 10000:
            raise ConfigError(f"trace_samples must be in [2, 10000], got {self.trace_samples}")
        if not 0 < self.trace_tol < 1:
            raise ConfigError(f"trace_tol must be in (0, 1), got {self.trace_tol}")
        if not 16 <= self.subset <= 100000:
            raise ConfigError(f"subset must be in [16, 100000], got {self.subset}")
        if self.steps is not None and not 3 <= self.steps <= 201:
            raise ConfigError(f"steps must be in [3, 201], got {self.steps}")
        return self


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def result_path(run: Run, kind: str, round_idx: int, settings: dict[str, Any]):
    return run.path / "analysis" / f"{kind}-{round_idx}-{settings_hash(settings)}.json"


def cached(run: Run, kind: str, round_idx: int, settings: dict[str, Any]) -> dict[str, Any] | None:
    p = result_path(run, kind, round_idx, settings)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())["result"]
    except (json.JSONDecodeError, KeyError):
        return None  # damaged cache: recompute


def _store(run: Run, kind: str, round_idx: int, settings: dict[str, Any], result: dict[str, Any]) -> None:
    atomic_write_json(result_path(run, kind, round_idx, settings),
                      {"kind": kind, "round": round_idx, "settings": settings, "result": result,
                       "created": time.strftime("%Y-%m-%dT%H:%M:%S")})


def _plan(spec: AnalysisSpec, device: torch.device) -> list[tuple[str, int, dict[str, Any]]]:
    """(kind, round, settings) for every result the spec asks for; settings name what changes numbers."""
    base = {"subset": spec.subset, "seed": spec.seed}
    steps = spec.steps or (51 if device.type == "cuda" else 21)
    plan = []
    for r in spec.rounds:
        if spec.hessian:
            plan += [("eigen", r, {**base, "k": spec.top_k}), ("trace", r, {**base, "samples": spec.trace_samples,
                                                        "tol": spec.trace_tol, "deflate": TRACE_DEFLATE})]
            plan += [("density", r, base)] if spec.density else []
        if spec.landscape == "1d":
            plan.append(("line", r, {**base, "steps": 2 * steps + 1}))
        if spec.landscape == "2d":
            plan.append(("surface", r, {**base, "steps": steps}))
        if spec.interpolate and r > 0:
            plan.append(("interp", r, {**base, "steps": 2 * steps - 1}))
        if spec.flatness:
            plan.append(("flatness", r, base))
    return plan


def cached_results(run: Run, spec: AnalysisSpec) -> tuple[dict[tuple[str, int], dict[str, Any]], int]:
    """What is already computed for ``spec`` (read from analysis/, nothing computed) and how many are missing."""
    plan = _plan(spec.validate(), resolve_device(spec.device))
    found = {(kind, r): hit for kind, r, settings in plan if (hit := cached(run, kind, r, settings)) is not None}
    return found, len(plan) - len(found)


def analyze(run: Run, spec: AnalysisSpec, *, on_event: Callable[[Event], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> dict[tuple[str, int], dict[str, Any]]:
    """Compute (or read from the cache) every result the spec asks for; {(kind, round): result}."""
    spec.validate()
    cfg = run.config()
    done = [r["round"] for r in (run.summary() or {}).get("rounds", [])]
    missing = [r for r in spec.rounds if r not in done]
    if missing:
        raise RunError(f"run {run.id} has no finished round {missing[0]} (finished: {done or 'none'})")
    device = resolve_device(spec.device)
    plan = _plan(spec, device)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    todo = []
    for kind, r, settings in plan:
        hit = cached(run, kind, r, settings)
        if hit is not None:
            out[(kind, r)] = hit
        else:
            todo.append((kind, r, settings))
    if not todo:
        return out
    data = load(cfg.data, seed=cfg.seed, device=device)
    gen = lambda: torch.Generator().manual_seed(spec.seed)  # noqa: E731 - a fresh, equal stream per analysis
    # A small training split (a quick run on a subset) is used whole rather than refused.
    batches = hessian.training_batches(data.train, min(spec.subset, len(data.train)), generator=gen())

    def model(r: int) -> torch.nn.Module:
        m = model_for_round(cfg, r, num_classes=data.num_classes, in_channels=data.in_channels,
                            image_size=data.image_size)
        m.load_state_dict(run.load_state_dict(r, map_location=device))
        return m.to(device).eval()

    for i, (kind, r, settings) in enumerate(todo):
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled")
        if on_event is not None:
            on_event(Event("step", round=r, epoch=0, step=i, steps=len(todo), rounds=1, epochs=1,
                           metrics={"analysis": kind}))
        try:
            result = _compute(kind, model(r), batches, settings, gen(), teacher=model(0) if kind == "interp" else None)
        except ConfigError:
            raise
        except ValueError as e:  # a setting this model cannot take (e.g. a Lanczos basis beyond memory)
            raise ConfigError(f"{kind} of round {r}: {e}") from None
        _store(run, kind, r, settings, result)
        out[(kind, r)] = result
    if on_event is not None:
        on_event(Event("epoch", round=0, epoch=1, step=len(todo), steps=len(todo), rounds=1, epochs=1))
    return out


def _compute(kind: str, model, batches, settings: dict[str, Any], generator: torch.Generator, *,
             teacher=None) -> dict[str, Any]:
    if kind == "eigen":
        return hessian.eigenvalues(model, batches, k=settings["k"], generator=generator).to_dict()
    if kind == "trace":
        return hessian.hessian_trace(model, batches, samples=settings["samples"], tol=settings["tol"],
                                     deflate=settings["deflate"], generator=generator).to_dict()
    if kind == "density":
        return hessian.spectral_density(model, batches, generator=generator).to_dict()
    if kind == "line":
        return landscape.line(model, batches, steps=settings["steps"], generator=generator).to_dict()
    if kind == "surface":
        return landscape.surface(model, batches, steps=settings["steps"], generator=generator).to_dict()
    if kind == "interp":
        return landscape.interpolate(teacher, model, batches, steps=settings["steps"]).to_dict()
    if kind == "flatness":
        return flatness.noise_flatness(model, batches, generator=generator).to_dict()
    raise ValueError(f"unknown analysis kind {kind!r}")

