"""Run the curvature and loss-surface analyses on a run's rounds, cached in the run folder.

    results = analyze(run, AnalysisSpec(rounds=(0, 1), hessian=True, landscape="2d"))

Each (kind, round, settings) result is stored once as ``<run>/analysis/<kind>-<round>-<hash>.json``
(hash of the settings that change the numbers; ``registry.write_record``'s format), so reopening a page or
re-running the CLI is
instant. Every analysis uses the same fixed, seeded subset of the training split (BatchNorm in eval
mode), the round's saved weights, and never touches the run's training files.

Progress: ``analyze`` reports within every stage (each Lanczos step, trace sample, SLQ step, grid
point) through ``on_event``: ``registry.AnalysisEvent``s with the stage's label, its round, its number
and the stage count, its own fraction and the job's (stages weighed by their expected seconds,
``estimate_seconds``); a JobHandle turns them into a
Progress with an ETA, and ``progress_text`` into one line. Cancelling stops within a stage.

Cost: ``stages`` says what each result takes in Hessian-vector products or loss evaluations (exact,
or an upper bound where an algorithm stops early); ``estimate_seconds`` turns that into seconds on
this machine from the timings that earlier analyses stored beside their results (nothing is computed).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from sdcore import files
from sdcore.analysis import flatness, hessian, landscape
from sdcore.analysis.registry import AnalysisEvent, read_record, record_path, write_record
from sdcore.config import ConfigError, check_device, check_seed
from sdcore.data import load
from sdcore.engine import Cancelled, resolve_device
from sdcore.plots import round_name
from sdcore.runs import Run, RunError

KINDS = ("eigen", "trace", "density", "line", "surface", "interp", "flatness")
TRACE_DEFLATE = 20  # Lanczos steps taken out of the trace exactly (hessian.hessian_trace)
# Before anything is timed, one HVP weighs as this many loss evaluations: demo CNN, 512 examples, one
# thread, 0.07 s vs 17 ms (BENCHMARKS.md, "Hessian analyses" and "Loss landscapes").
_HVP_POINTS = 4


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
        check_seed(self.seed)
        check_device(self.device)
        return self


_VERSION = 1  # of every curvature / loss-surface record (registry.read_record: records without one are 1)


def result_path(run: Run, kind: str, round_idx: int, settings: dict[str, Any]):
    return record_path(run, kind, settings, round_idx)


# Each kind's result dataclass (its to_dict is what the cache holds, its from_dict what readers get).
RESULT_TYPES: dict[str, Any] = {"eigen": hessian.EigenResult, "trace": hessian.TraceResult,
                                "density": hessian.DensityResult, "line": landscape.Landscape1D,
                                "surface": landscape.Landscape2D, "interp": landscape.Landscape1D,
                                "flatness": flatness.NoiseResult}
Result = Any  # one of RESULT_TYPES' values


def cached(run: Run, kind: str, round_idx: int, settings: dict[str, Any]) -> Result | None:
    result = read_record(result_path(run, kind, round_idx, settings), kind=kind, version=_VERSION)
    if not _well_formed(kind, result):
        return None  # a damaged cache, recomputed
    try:
        return RESULT_TYPES[kind].from_dict(result)
    except (TypeError, ValueError):  # fields missing or unknown: written by another version, recomputed
        return None


# What readers of each kind's result index (formatters, plots); a result lacking one is a damaged cache.
_REQUIRED = {"eigen": ("values",), "trace": ("trace", "stderr"), "density": ("grid", "density"), "line": ("loss",),
             "surface": ("loss",), "interp": ("loss",), "flatness": ("loss_mean",)}
_TEXT_FIELDS = ("backend", "device", "kind")  # every other field of a result is numbers (or a flag)


def _well_formed(kind: str, result: Any) -> bool:
    """An analysis result as ``_store`` writes it: an object whose fields are numbers, flags, None or nested
    lists of numbers, but for a few text fields; anything else is a damaged cache."""
    def numeric(x: Any) -> bool:
        if isinstance(x, list):
            return all(numeric(v) for v in x)
        return x is None or isinstance(x, (int, float, bool))

    return isinstance(result, dict) and all(
        isinstance(v, str) if k in _TEXT_FIELDS else numeric(v) for k, v in result.items()) and all(
        result.get(k) not in (None, []) for k in _REQUIRED.get(kind, ()))


def _store(run: Run, kind: str, round_idx: int, settings: dict[str, Any], result: dict[str, Any],
           device: torch.device) -> None:
    # device: where result["seconds"] was measured (estimate_seconds reads only timings from the same kind of device)
    write_record(result_path(run, kind, round_idx, settings), kind=kind, version=_VERSION, settings=settings,
                 result=result, device=device.type, seconds=result.get("seconds"), round=round_idx)


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


def cached_results(run: Run, spec: AnalysisSpec) -> tuple[dict[tuple[str, int], Any], int]:
    """What is already computed for ``spec`` (read from analysis/, nothing computed) and how many are missing."""
    plan = _plan(spec.validate(), resolve_device(spec.device))
    found = {(kind, r): hit for kind, r, settings in plan if (hit := cached(run, kind, r, settings)) is not None}
    return found, len(plan) - len(found)


# ---------------------------------------------------------------- stages, cost, progress text

_LABELS = {"trace": "trace (Hutchinson)", "density": "spectral density (SLQ)", "line": "1D loss line",
           "surface": "2D loss surface", "interp": "teacher→student line", "flatness": "weight-noise flatness"}
UNITS = {"hvp": "Hessian-vector products", "point": "loss evaluations"}  # each over the training subset


def stage_label(kind: str, settings: dict[str, Any]) -> str:
    """What a person reads while a result is computed: "λ_max (Lanczos)", "2D loss surface", ..."""
    if kind == "eigen":
        return "λ_max (Lanczos)" if settings["k"] == 1 else f"λ_max and top {settings['k']} eigenvalues (Lanczos)"
    return _LABELS[kind]


@dataclass(frozen=True)
class Stage:
    """One result ``analyze`` computes and the work it takes."""
    kind: str  # one of KINDS
    round: int
    settings: dict[str, Any]  # what changes its numbers (the cache key's)
    label: str  # stage_label
    unit: str  # "hvp": a Hessian-vector product (~ a backward pass) over the subset; "point": a forward pass over it
    count: int  # units: exact for density and the landscapes; at most this many for eigen (Lanczos stops once
    #             converged) and trace (Hutchinson stops once its standard error is small); a model with fewer
    #             parameters than Lanczos steps takes fewer


def stages(spec: AnalysisSpec, device: torch.device | None = None) -> list[Stage]:
    """Every result ``spec`` asks for, in computing order, with its label and its work (``Stage``)."""
    spec.validate()
    return [_stage(kind, r, settings) for kind, r, settings in _plan(spec, device or resolve_device(spec.device))]


def _stage(kind: str, r: int, settings: dict[str, Any]) -> Stage:
    if kind == "eigen":
        unit, count = "hvp", hessian.EIGEN_MAX_ITER + 4 * settings["k"]  # eigenvalues' step limit
    elif kind == "trace":
        unit, count = "hvp", settings["deflate"] + settings["samples"]
    elif kind == "density":
        unit, count = "hvp", hessian.DENSITY_RUNS * hessian.DENSITY_STEPS
    elif kind == "line":
        unit, count = "point", landscape.grid_size(landscape.SPAN, settings["steps"], (0.0,))
    elif kind == "surface":
        unit, count = "point", landscape.grid_size(landscape.SPAN, settings["steps"], (0.0,)) ** 2
    elif kind == "interp":
        unit, count = "point", landscape.grid_size(landscape.INTERP_SPAN, settings["steps"], (0.0, 1.0))
    elif kind == "flatness":
        unit, count = "point", sum(s > 0 for s in flatness.SIGMAS) * flatness.DRAWS + 1  # + the clean model
    else:
        raise ValueError(f"unknown analysis kind {kind!r}")
    return Stage(kind, r, settings, stage_label(kind, settings), unit, count)


@dataclass(frozen=True)
class Estimate:
    """Seconds the stages should take on this machine, from timings earlier analyses stored."""
    stages: tuple[Stage, ...]
    seconds: tuple[float | None, ...]  # per stage; None where no earlier analysis timed its unit
    unit_seconds: Mapping[str, float]  # "hvp" / "point" -> median seconds of one, scaled to the subset
    subset: int  # training examples each unit runs over
    records: int  # earlier results (of this run, or of runs with the same model and data) the numbers come from
    at_most: bool  # some stage was costed at its upper bound of units (eigen or trace never timed before)

    @property
    def total(self) -> float | None:
        return None if None in self.seconds else float(sum(self.seconds))

    def text(self) -> str:
        """Per round, for a page: measured seconds, or (nothing timed yet) the work in units."""
        rounds = max(1, len({s.round for s in self.stages}))
        if self.total is not None:
            return (f"{'up to ' if self.at_most else ''}about {_duration(self.total / rounds)} per round on this "
                    f"machine, measured by {self.records} earlier result{'s' if self.records != 1 else ''}")
        work = {u: sum(s.count for s in self.stages if s.unit == u) // rounds for u in UNITS}
        parts = [f"{'up to ' if u == 'hvp' else ''}{n} {UNITS[u]}" for u, n in work.items() if n]
        return (f"{' and '.join(parts)} per round over {self.subset} training examples; nothing timed on this "
                "machine yet, so the time left shows once it runs")


def _duration(seconds: float) -> str:
    return "1 s" if seconds < 1.5 else f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


_OTHER_RUNS = 30  # estimate_seconds reads the timings of at most this many other runs (newest first)


def estimate_seconds(run: Run, spec: AnalysisSpec, *, todo: list[Stage] | None = None) -> Estimate:
    """Seconds each stage of ``spec`` (or ``todo``) should take here, from the timings stored with earlier results.

    Reads only JSON: this run's analysis/ and that of up to 30 other runs in the same folder with the
    same model and dataset (newest first), from the same kind of device. A stage with earlier results of
    its kind and settings takes their median time; otherwise its units (``Stage.count``: an upper bound
    for eigen and trace, then ``at_most``) times the median seconds per unit of all earlier results.
    Times scale with the subset size. Cheap enough for a page script.
    """
    device = resolve_device(spec.device)
    todo = stages(spec, device) if todo is None else todo
    records = _records(run, device.type)
    per_unit: dict[str, list[float]] = {u: [] for u in UNITS}
    for kind, settings, result in records:
        unit = "hvp" if kind in ("eigen", "trace", "density") else "point"
        units = result.get("hvps" if unit == "hvp" else "points")
        if units:
            per_unit[unit].append(result["seconds"] / units * spec.subset / settings["subset"])
    unit_seconds = {u: statistics.median(v) for u, v in per_unit.items() if v}

    def seconds(stage: Stage) -> tuple[float | None, bool]:  # (seconds, from an upper bound of units)
        same = [r["seconds"] * spec.subset / st["subset"] for kind, st, r in records
                if kind == stage.kind and _without_subset(st) == _without_subset(stage.settings)]
        if same:
            return statistics.median(same), False
        if stage.unit not in unit_seconds:
            return None, False
        return stage.count * unit_seconds[stage.unit], stage.kind in ("eigen", "trace")

    costs = [seconds(s) for s in todo]
    return Estimate(stages=tuple(todo), seconds=tuple(c for c, _ in costs), unit_seconds=unit_seconds,
                    subset=spec.subset, records=len(records), at_most=any(b for c, b in costs if c is not None))


def _without_subset(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in ("subset", "seed")}


def _records(run: Run, device_type: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(kind, settings, result) of every timed result of this run and of matching runs beside it."""
    def same_model(path: Path) -> bool:
        try:
            other = files.read_json_object(path / "config.json")
        except (OSError, ValueError):
            return False
        return all(other.get(k) == mine.get(k) for k in ("model", "data"))

    try:
        mine = files.read_json_object(run.path / "config.json")
    except (OSError, ValueError):
        mine = None  # no model to match: this run's own timings only
    others = sorted((p for p in run.path.parent.iterdir() if p.is_dir() and p != run.path), reverse=True)
    folders = [run.path] + [p for p in others[:_OTHER_RUNS] if mine is not None and same_model(p)]
    out = []
    for folder in folders:
        for f in sorted((folder / "analysis").glob("*.json")):
            try:
                d = files.read_json_object(f)
                kind, settings, result = d["kind"], d["settings"], d["result"]
                if not (isinstance(settings, dict) and isinstance(result, dict)):
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if (kind in KINDS and d.get("device", device_type) == device_type and result.get("seconds")
                    and settings.get("subset")):
                out.append((kind, settings, result))
    return out


def progress_text(p: Any, method: str = "kd") -> str:
    """One line for an analysis job's ``Progress`` ``p``: "λ_max (Lanczos) of student 1 (round 1) · stage 2/9 ·
    40% · about 12 s left", or for a run-level kind "robustness (corrupted test sets) · round 1 · gaussian
    noise · 40% · about 12 s left"; "starting" until its first stage reports."""
    if p.status == "queued":
        return "queued: it starts once this device's earlier jobs have ended"
    m = p.metrics
    if "analysis" not in m:
        return "starting"
    left = f"about {_duration(p.eta_s)} left" if p.eta_s is not None else "estimating the time left"
    if "round" not in m:  # a registry kind: one stage over the whole run
        return f"{m['analysis']} · {m['fraction']:.0%} · {left}"
    name = round_name(m["round"], method)
    where = name if "round" in name else f"{name} (round {m['round']})"
    return f"{m['analysis']} of {where} · stage {m['stage']}/{m['stages']} · {m['stage_fraction']:.0%} · {left}"


# ---------------------------------------------------------------- computing


def analyze(run: Run, spec: AnalysisSpec, *, on_event: Callable[[AnalysisEvent], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> dict[tuple[str, int], Any]:
    """Compute (or read from the cache) every result the spec asks for; {(kind, round): result}."""
    spec.validate()
    run.readable("analyze")
    run.analysis_dir()
    cfg = run.config()
    done = run.finished_rounds()
    missing = [r for r in spec.rounds if r not in done]
    if missing:
        raise RunError(f"run {run.id} has no finished round {missing[0]} (finished: {done or 'none'})")
    device = resolve_device(spec.device)
    plan = _plan(spec, device)
    out: dict[tuple[str, int], Result] = {}
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
        return run.load_model(r, **data.shapes, device=device)

    report = _Reporter(estimate_seconds(run, spec, todo=[_stage(*t) for t in todo]), on_event, should_stop)
    for i, (kind, r, settings) in enumerate(todo):
        report(i, 0)
        try:
            result = _compute(kind, model(r), batches, settings, gen(), teacher=model(0) if kind == "interp" else None,
                              progress=lambda done, i=i: report(i, done))
        except ConfigError:
            raise
        except ValueError as e:  # a setting this model cannot take (e.g. a Lanczos basis beyond memory)
            raise ConfigError(f"{kind} of round {r}: {e}") from None
        _store(run, kind, r, settings, result, device)
        out[(kind, r)] = RESULT_TYPES[kind].from_dict(result)  # as a later read of the cache gives it
    report.finished()
    return out


class _Reporter:
    """Turns (stage, units done) into progress events and checks for a stop; stages weigh by expected seconds.

    Where no timing exists for a unit yet, an HVP counts as ``_HVP_POINTS`` loss evaluations; the
    JobHandle's pace turns the fraction into seconds."""

    def __init__(self, estimate: Estimate, on_event: Callable[[AnalysisEvent], None] | None,
                 should_stop: Callable[[], bool] | None):
        self.stages, self.on_event, self.should_stop = estimate.stages, on_event, should_stop
        unit = dict(estimate.unit_seconds)
        if "hvp" in unit:
            unit.setdefault("point", unit["hvp"] / _HVP_POINTS)
        unit.setdefault("point", 1.0)  # nothing timed: weights in loss evaluations
        unit.setdefault("hvp", unit["point"] * _HVP_POINTS)
        self.weights = [sec if sec is not None else s.count * unit[s.unit]
                        for s, sec in zip(self.stages, estimate.seconds)]
        self.expected = [max(1, s.count) for s in self.stages]
        self.before = [sum(self.weights[:i]) for i in range(len(self.weights))]  # weight done at each stage's start
        self.total = sum(self.weights) or 1.0

    def __call__(self, i: int, done: int) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("cancelled")  # within a stage: the analyses restore the model on the way out
        if self.on_event is not None:
            self.on_event(self._event("step", i, min(1.0, done / self.expected[i])))

    def finished(self) -> None:
        if self.on_event is not None and self.stages:
            self.on_event(self._event("done", len(self.stages) - 1, 1.0))

    def _event(self, kind: str, i: int, stage_fraction: float) -> AnalysisEvent:
        s = self.stages[i]
        # (before + w) / total is bit-equal to the next stage's before / total: the fraction never steps back
        done = self.before[i] + self.weights[i] * stage_fraction
        fraction = 1.0 if kind == "done" else min(1.0, done / self.total)
        return AnalysisEvent(kind, s.label, fraction, stage=i + 1, stages=len(self.stages),
                             stage_fraction=stage_fraction, round=s.round)


def _compute(kind: str, model, batches, settings: dict[str, Any], generator: torch.Generator, *,
             teacher=None, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The result of one stage; ``progress`` is called with its units done so far (``Stage.unit``)."""
    if kind == "eigen":
        return hessian.eigenvalues(model, batches, k=settings["k"], generator=generator, progress=progress).to_dict()
    if kind == "trace":
        return hessian.hessian_trace(model, batches, samples=settings["samples"], tol=settings["tol"],
                                     deflate=settings["deflate"], generator=generator, progress=progress).to_dict()
    if kind == "density":
        return hessian.spectral_density(model, batches, generator=generator, progress=progress).to_dict()
    if kind == "line":
        return landscape.line(model, batches, steps=settings["steps"], generator=generator, progress=progress).to_dict()
    if kind == "surface":
        return landscape.surface(model, batches, steps=settings["steps"], generator=generator,
                                 progress=progress).to_dict()
    if kind == "interp":
        return landscape.interpolate(teacher, model, batches, steps=settings["steps"], progress=progress).to_dict()
    if kind == "flatness":
        return flatness.noise_flatness(model, batches, generator=generator, progress=progress).to_dict()
    raise ValueError(f"unknown analysis kind {kind!r}")

