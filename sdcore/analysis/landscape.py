"""Loss landscapes around trained weights (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets").

    d = random_direction(model, generator=g)              # filter-normalized, same shapes as the parameters
    line(model, batches, direction=d)                    # L(θ + α d),          α on a grid over span
    surface(model, batches, generator=g)                 # L(θ + α d1 + β d2),  a steps × steps grid
    interpolate(teacher, student, batches)               # L((1 − t) θ_a + t θ_b), t over span

Pham et al. ("Revisiting self-distillation", Fig. 8, 14, 15) draw these surfaces for a teacher and
its round-1/2 students (ResNet20 without skips) to show the students sit in flatter minima.

How a grid is evaluated: every grid point is a full parameter set. On a GPU a chunk of ``chunk``
points is stacked on a new leading dim ([chunk, *shape] per parameter) and run through the model in
one call with ``torch.func.vmap`` over ``torch.func.functional_call`` (the batches of examples are
looped): one small forward per point would leave the device mostly idle. On the CPU a forward over
a few hundred examples is arithmetic rather than overhead (a point's fixed cost is a small part of
it on the demo CNN), so batching cannot gain much, and vmap's batching rules (grouped convolutions,
BatchNorm's separate scale-and-shift pass) made a demo-CNN surface slower than a per-point loop
(BENCHMARKS.md, "Loss landscapes": ``benchmarks/bench_landscape.py``): there the default chunk is 1, a
plain ``functional_call`` per point. Either way the model is never loaded point by point.

The model itself is never written to: its weights, buffers and grads stay bit-identical, and only
the training flags change (eval mode while evaluating, each module's previous flag restored after).

Conventions shared by all three functions:

* Loss is the mean cross-entropy over all examples of all batches (batch-size weighted), accuracy
  the % of examples whose argmax logit is the target, both for the model's ``forward`` logits.
* Evaluation runs in eval mode: BatchNorm normalizes with its running statistics (which do not
  move along a direction), so examples do not interact and vmap applies.
* ``batches``: an iterable of ``(inputs, targets)``; a ``Source``'s ``(idx, x, y)`` triples work
  too (the last two entries are used). They are moved to the model's device once.
* The grid is ``steps`` evenly spaced values over ``span``; 0 (and 1 for ``interpolate``) are put
  on it exactly when they lie inside the span, inserted if the even spacing misses them, so the
  model itself (α = β = 0, or t = 0 and t = 1) is always a grid point. With an odd ``steps`` and a
  symmetric span nothing is inserted.
* ``steps=None`` means 51 on a GPU and 21 on the CPU (a 51 × 51 surface is 2,601 forward passes
  over the batches, 21 × 21 is 441: BENCHMARKS.md, "Loss landscapes", times them on the demo CNN).
* ``progress``: called with the grid points evaluated so far after every chunk (a UI's progress bar;
  raising from it, e.g. ``Cancelled``, stops the call, the model's flags restored).
* ``chunk`` (grid points per call), default ``default_chunk``: 1 on the CPU; on a GPU as many
  points as keep the stacked parameters plus the activations of the largest batch under a memory
  budget (a quarter of the free memory, at most 4 GiB), at most 256. An explicit chunk > 1 uses vmap
  on any device (on the CPU keep it small: larger chunks get slower once the stacked activations
  leave the cache).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from sdcore.analysis.common import Batches, eval_mode, model_device, prepare_batches

_MAX_CHUNK = 256
# Bytes for one vmap call's stacked parameters and activations on a GPU, and on other devices (e.g.
# mps; the CPU uses chunk 1). Small off CUDA: on the CPU bigger chunks ran slower once the stacked
# activations left the cache (demo CNN, 256 digits per batch, one thread: 20 ms per point at chunk
# 4, 30 at chunk 21, 48 at chunk 81).
_CPU_BUDGET = 48 * 2**20
_GPU_BUDGET = 4 * 2**30
SPAN = (-1.0, 1.0)  # line and surface: default coordinates along each direction
INTERP_SPAN = (-0.25, 1.25)  # interpolate: default t range (0 = model_a, 1 = model_b)


# ---------------------------------------------------------------- results

def json_safe(value: Any) -> Any:
    """Tuples -> lists, non-finite floats (a diverged point) -> None, recursively."""
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonResult:
    """A result dataclass to and from the JSON its cache holds (landscapes here, flatness.NoiseResult)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: lists only; a non-finite value (a loss diverged far from the minimum) becomes None."""
        return {k: json_safe(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """The inverse of ``to_dict`` (a cached result); TypeError for missing or unknown fields."""
        return cls(**{k: tuple(v) if k == "span" else v for k, v in d.items()})


@dataclass(frozen=True)
class Landscape1D(JsonResult):
    alphas: list[float]  # grid coordinates: α along the direction (line) or t from model_a to model_b (interpolate)
    loss: list[float]  # mean cross-entropy over all examples at each grid point
    acc: list[float]  # accuracy, %, at each grid point
    kind: str  # "line" or "interpolate"
    span: tuple[float, float]  # first and last grid coordinate
    steps: int  # evenly spaced grid values requested (resolved when None was passed)
    chunk: int  # grid points per vmap call
    examples: int  # examples the loss is averaged over
    points: int  # grid points evaluated (steps, plus 0 / 1 where they were inserted)
    seconds: float  # wall time of the whole call
    device: str  # where it ran, e.g. "cpu", "cuda:0"


@dataclass(frozen=True)
class Landscape2D(JsonResult):
    alphas: list[float]  # coordinates along the first direction d1 (x axis, columns)
    betas: list[float]  # coordinates along the second direction d2 (y axis, rows)
    loss: list[list[float]]  # [len(betas)][len(alphas)]: loss[j][i] = L(θ + alphas[i] d1 + betas[j] d2)
    acc: list[list[float]]  # accuracy, %, same layout (plotly's z for x=alphas, y=betas)
    span: tuple[float, float]  # first and last coordinate, the same for both axes
    steps: int  # evenly spaced values requested per axis (resolved when None was passed)
    chunk: int  # grid points per vmap call
    examples: int  # examples the loss is averaged over
    points: int  # grid points evaluated: len(alphas) * len(betas)
    seconds: float  # wall time of the whole call
    device: str  # where it ran, e.g. "cpu", "cuda:0"


# ---------------------------------------------------------------- shared machinery (also used by flatness.py)

@torch.no_grad()
def evaluate_model(model: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> tuple[float, float]:
    """(mean CE, accuracy %) of the model as it is, one plain forward per batch (call inside eval_mode)."""
    loss, correct, n = 0.0, 0, 0
    for x, y in batches:
        z = model(x)
        loss += F.cross_entropy(z, y, reduction="sum").item()
        correct += (z.argmax(1) == y).sum().item()
        n += len(y)
    return loss / n, 100.0 * correct / n


@torch.no_grad()
def evaluate_points(model: nn.Module, batches: list[tuple[Tensor, Tensor]], moving: dict[str, Tensor],
                    fixed: dict[str, Tensor], points: int) -> tuple[Tensor, Tensor]:
    """Loss [points] (mean CE, float64) and accuracy [points] (%) at ``points`` parameter sets.

    ``moving``: name -> [points, *shape], the tensors that differ between the sets (vmapped, dim 0);
    ``fixed``: name -> [*shape], shared by all (in_dims None). Names absent from both keep the
    model's own tensors. Call inside ``eval_mode``.
    """
    def logits(params: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, (params, fixed), (x,))

    batched = vmap(logits, in_dims=(0, None))
    device = batches[0][0].device
    loss = torch.zeros(points, dtype=torch.float64, device=device)
    correct = torch.zeros(points, dtype=torch.int64, device=device)
    n = 0
    for x, y in batches:
        if not moving:  # nothing moves (e.g. an all-zero direction): one forward stands for every point
            z = logits({}, x).expand(points, *y.shape, -1)  # [points, B, K]
        elif points == 1:  # one point: a plain forward, no vmap (the CPU default, see default_chunk)
            z = logits({k: v[0] for k, v in moving.items()}, x)[None]
        else:
            z = batched(moving, x)
        ce = F.cross_entropy(z.flatten(0, 1), y.repeat(points), reduction="none").view(points, -1)
        loss += ce.sum(1, dtype=torch.float64)
        correct += (z.argmax(-1) == y).sum(1)
        n += len(y)
    return loss / n, 100.0 * correct.double() / n


def default_chunk(model: nn.Module, batches: list[tuple[Tensor, Tensor]], moving_numel: int) -> int:
    """Grid points per call. On the CPU 1: a plain forward per point, no vmap, which is the fastest
    there (module doc). On a GPU: per point, the stacked parameters (``moving_numel`` floats) plus
    the activations of the largest batch (every leaf module's output, summed, measured on one
    example — an upper bound on what is alive at once) must fit the memory budget; 1 <= chunk <= 256."""
    device = batches[0][0].device
    if device.type == "cpu":
        return 1
    per_example = _activation_numel(model, batches[0][0][:1])
    biggest = max(len(y) for _, y in batches)
    per_point = 4 * (moving_numel + biggest * per_example)  # float32 bytes
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(_GPU_BUDGET, free // 4)
    else:
        budget = _CPU_BUDGET
    return int(max(1, min(_MAX_CHUNK, budget // max(per_point, 1))))


@torch.no_grad()
def _activation_numel(model: nn.Module, x: Tensor) -> int:
    total = 0

    def count(_m: nn.Module, _inp: Any, out: Any) -> None:
        nonlocal total
        if isinstance(out, Tensor):
            total += out.numel()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with eval_mode(model):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return total


def _run_grid(model: nn.Module, batches: list[tuple[Tensor, Tensor]], points: int,
              stack: Callable[[slice], dict[str, Tensor]], fixed: dict[str, Tensor], chunk: int,
              progress: Callable[[int], None] | None = None) -> tuple[list[float], list[float]]:
    """Loss and accuracy at grid points 0..points-1, ``chunk`` at a time; ``stack(sl)`` builds the moving tensors."""
    loss, acc = [], []
    for start in range(0, points, chunk):
        sl = slice(start, min(points, start + chunk))
        l, a = evaluate_points(model, batches, stack(sl), fixed, sl.stop - sl.start)
        loss += l.tolist()
        acc += a.tolist()
        if progress is not None:
            progress(sl.stop)
    return loss, acc


def _check_chunk(chunk: int | None) -> None:
    if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be a positive int (grid points per vmap call) or None, got {chunk!r}")


def _resolve_steps(steps: int | None, device: torch.device) -> int:
    if steps is None:
        return 21 if device.type == "cpu" else 51
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2 or None, got {steps!r}")
    return steps


def grid_size(span: tuple[float, float], steps: int, anchors: tuple[float, ...]) -> int:
    """How many values ``_grid`` gives: ``steps``, plus each anchor it has to insert."""
    return len(_grid(span, steps, anchors))


def _axis(model: nn.Module, span: tuple[float, float], steps: int | None, chunk: int | None,
          anchors: tuple[float, ...]) -> tuple[torch.device, int, list[float]]:
    """What line, surface and interpolate check and derive first: (the model's device, the steps per axis
    (the device's default for None), the axis' values); ValueError for a bad chunk, steps or span."""
    device = model_device(model)
    steps = _resolve_steps(steps, device)
    _check_chunk(chunk)
    return device, steps, _grid(span, steps, anchors)


def _grid(span: tuple[float, float], steps: int, anchors: tuple[float, ...]) -> list[float]:
    """``steps`` evenly spaced values from span[0] to span[1], each anchor inside the span on it exactly."""
    lo, hi = float(span[0]), float(span[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"span must be two finite numbers (low, high) with low < high, got {span!r}")
    # Exact rational arithmetic, then one rounding: every value is the float nearest the true grid
    # value, so 0, 1 or any other float the grid passes through is hit exactly (float steps drift).
    lo_q, width = Fraction(lo), Fraction(hi) - Fraction(lo)
    values = [float(lo_q + width * Fraction(i, steps - 1)) for i in range(steps)]
    tol = 1e-9 * (hi - lo)
    for a in anchors:
        if lo <= a <= hi:
            near = [i for i, v in enumerate(values) if abs(v - a) <= tol]
            if near:
                values[near[0]] = a
            else:
                values = sorted(values + [a])
    return values


# ---------------------------------------------------------------- directions

def random_direction(model: nn.Module, *, generator: torch.Generator,
                     include_bias_bn: bool = False) -> dict[str, Tensor]:
    """A Gaussian direction {parameter name: tensor of its shape}, filter-normalized (Li et al. Sec. 4).

    Every parameter of 2+ dims (conv [out, in, k, k], linear [out, in]) is a stack of filters
    along dim 0; filter i of the direction is rescaled to the Frobenius norm of filter i of the
    parameter: d_i <- d_i / (||d_i|| + 1e-10) * ||θ_i||. 1-D parameters (biases, BatchNorm scale and
    shift) are zero by default, as in Li et al.; with ``include_bias_bn`` each is one filter, its
    norm matched to the parameter's. Buffers (BN running statistics) are never part of a direction.

    The normals are drawn on the CPU from ``generator`` in ``named_parameters`` order (1-D ones too,
    even when zeroed, so the weight part does not depend on ``include_bias_bn``) and moved to each
    parameter's device and dtype.
    """
    direction = {}
    for name, p in model.named_parameters():
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(device=p.device, dtype=p.dtype)
        theta = p.detach()
        if p.dim() <= 1 and not include_bias_bn:
            d.zero_()
        elif p.dim() <= 1:
            d.mul_(theta.norm() / (d.norm() + 1e-10))
        else:
            scale = theta.flatten(1).norm(dim=1) / (d.flatten(1).norm(dim=1) + 1e-10)  # [out]
            d.mul_(scale.view(-1, *[1] * (p.dim() - 1)))
        direction[name] = d
    return direction


def _directions_by_param(model: nn.Module, directions: Sequence[dict[str, Tensor]]
                         ) -> tuple[dict[str, tuple[Tensor, Tensor]], dict[str, Tensor]]:
    """(moving, fixed): moving name -> (θ flat [numel], stacked directions [k, numel]) for every parameter
    some direction moves; fixed holds the other parameters and all buffers (unbatched in vmap)."""
    params = dict(model.named_parameters())
    for d in directions:
        unknown = sorted(set(d) - set(params))
        if unknown:
            raise ValueError(f"direction has entries that are not parameters of the model: {', '.join(unknown[:5])}")
        for name, t in d.items():
            if tuple(t.shape) != tuple(params[name].shape):
                raise ValueError(f"direction[{name!r}] has shape {tuple(t.shape)}, "
                                 f"the parameter has {tuple(params[name].shape)}")
    moving, fixed = {}, {}
    for name, p in params.items():
        parts = [d[name].detach().to(device=p.device, dtype=p.dtype).flatten() if name in d
                 else torch.zeros(p.numel(), device=p.device, dtype=p.dtype) for d in directions]
        stacked = torch.stack(parts)  # [k, numel]
        if bool(stacked.any()):
            moving[name] = (p.detach().flatten(), stacked)
        else:
            fixed[name] = p.detach()
    fixed.update((name, b) for name, b in model.named_buffers())
    return moving, fixed


def _evaluate_directions(model: nn.Module, batches: Batches, directions: Sequence[dict[str, Tensor]],
                         coeffs: Tensor, chunk: int | None, progress: Callable[[int], None] | None = None
                         ) -> tuple[list[float], list[float], int, int]:
    """Loss, accuracy, chunk and example count at θ + coeffs[n] @ directions for every row n of coeffs [N, k]."""
    device = model_device(model)
    data = prepare_batches(batches, device)
    moving, fixed = _directions_by_param(model, directions)
    shapes = dict((name, p.shape) for name, p in model.named_parameters())
    coeffs = coeffs.to(device=device, dtype=torch.float32)
    if chunk is None:
        chunk = default_chunk(model, data, sum(theta.numel() for theta, _ in moving.values()))

    def stack(sl: slice) -> dict[str, Tensor]:
        c = coeffs[sl]  # [chunk, k]; a zero row gives θ + 0 = θ exactly, so the centre is the model itself
        return {name: (theta + c.to(theta.dtype) @ dirs).view(-1, *shapes[name])
                for name, (theta, dirs) in moving.items()}

    with eval_mode(model):
        loss, acc = _run_grid(model, data, len(coeffs), stack, fixed, chunk, progress)
    return loss, acc, chunk, sum(len(y) for _, y in data)


# ---------------------------------------------------------------- the three views

def line(model: nn.Module, batches: Batches, *, direction: dict[str, Tensor] | None = None,
         span: tuple[float, float] = SPAN, steps: int | None = None,
         generator: torch.Generator | None = None, chunk: int | None = None,
         progress: Callable[[int], None] | None = None) -> Landscape1D:
    """Loss and accuracy along θ + α d for α on the grid (module doc). Without ``direction`` one is drawn
    by ``random_direction(model, generator=...)``; ``generator=None`` then means a generator seeded 0."""
    t0 = time.perf_counter()
    device, steps, alphas = _axis(model, span, steps, chunk, anchors=(0.0,))
    if direction is None:
        direction = random_direction(model, generator=generator or torch.Generator().manual_seed(0))
    loss, acc, chunk, n = _evaluate_directions(model, batches, [direction], torch.tensor(alphas)[:, None], chunk,
                                               progress)
    return Landscape1D(alphas=alphas, loss=loss, acc=acc, kind="line", span=(alphas[0], alphas[-1]), steps=steps,
                       chunk=chunk, examples=n, points=len(alphas), seconds=time.perf_counter() - t0,
                       device=str(device))


def surface(model: nn.Module, batches: Batches, *,
            directions: tuple[dict[str, Tensor], dict[str, Tensor]] | None = None,
            span: tuple[float, float] = SPAN, steps: int | None = None,
            generator: torch.Generator | None = None, chunk: int | None = None,
            progress: Callable[[int], None] | None = None) -> Landscape2D:
    """Loss and accuracy over θ + α d1 + β d2 for (α, β) on the grid × grid (module doc). Without
    ``directions`` two are drawn one after the other by ``random_direction`` from ``generator``
    (None: seeded 0); in high dimension such directions are nearly orthogonal (Li et al. Sec. 5)."""
    t0 = time.perf_counter()
    device, steps, axis = _axis(model, span, steps, chunk, anchors=(0.0,))
    if directions is None:
        g = generator or torch.Generator().manual_seed(0)
        directions = (random_direction(model, generator=g), random_direction(model, generator=g))
    if len(directions) != 2:
        raise ValueError(f"surface needs exactly two directions, got {len(directions)}")
    a = torch.tensor(axis)
    # Row-major over (β, α): point j * len(axis) + i is (alphas[i], betas[j]).
    coeffs = torch.stack([a.repeat(len(axis)), a.repeat_interleave(len(axis))], dim=1)  # [N, 2]
    loss, acc, chunk, n = _evaluate_directions(model, batches, list(directions), coeffs, chunk, progress)
    k = len(axis)
    return Landscape2D(alphas=axis, betas=list(axis), loss=[loss[j * k:(j + 1) * k] for j in range(k)],
                       acc=[acc[j * k:(j + 1) * k] for j in range(k)], span=(axis[0], axis[-1]), steps=steps,
                       chunk=chunk, examples=n, points=k * k, seconds=time.perf_counter() - t0, device=str(device))


def interpolate(model_a: nn.Module, model_b: nn.Module, batches: Batches, *, steps: int = 41,
                span: tuple[float, float] = INTERP_SPAN, chunk: int | None = None,
                progress: Callable[[int], None] | None = None) -> Landscape1D:
    """Loss and accuracy along (1 − t) θ_a + t θ_b (e.g. teacher -> student), t on the grid, 0 and 1 always on it.

    The two models must have the same parameter and buffer names and shapes. BatchNorm running
    statistics are each endpoint's own, interpolated the same way: mean and var at t are
    (1 − t) stats_a + t stats_b, so each endpoint is evaluated exactly as it is (beyond [0, 1] the
    extrapolated var can turn negative: those points come out NaN). Integer buffers
    (num_batches_tracked, unused in eval mode) are model_a's. Evaluation runs on model_a's modules
    in eval mode, on model_a's device; model_b is only read.
    """
    t0 = time.perf_counter()
    device, steps, ts = _axis(model_a, span, steps, chunk, anchors=(0.0, 1.0))
    a_state = dict(model_a.named_parameters()) | dict(model_a.named_buffers())
    b_state = dict(model_b.named_parameters()) | dict(model_b.named_buffers())
    if a_state.keys() != b_state.keys():
        diff = sorted(a_state.keys() ^ b_state.keys())
        raise ValueError(f"interpolate needs two models of one architecture; names differ: {', '.join(diff[:5])}")
    moving, fixed = {}, {}
    for name, a in a_state.items():
        b = b_state[name]
        if a.shape != b.shape:
            raise ValueError(f"interpolate needs two models of one architecture; {name!r} has shapes "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        if a.is_floating_point():
            moving[name] = (a.detach(), b.detach().to(device=device, dtype=a.dtype))
        else:
            fixed[name] = a.detach()
    data = prepare_batches(batches, device)
    if chunk is None:
        chunk = default_chunk(model_a, data, sum(a.numel() for a, _ in moving.values()))
    t_all = torch.tensor(ts, dtype=torch.float32, device=device)

    def stack(sl: slice) -> dict[str, Tensor]:
        t = t_all[sl]
        # (1 - t) a + t b, not a + t (b - a): exact at both ends (t = 0 gives a, t = 1 gives b).
        return {name: (1 - t.view(-1, *[1] * a.dim())).to(a.dtype) * a + t.view(-1, *[1] * a.dim()).to(a.dtype) * b
                for name, (a, b) in moving.items()}

    with eval_mode(model_a):
        loss, acc = _run_grid(model_a, data, len(ts), stack, fixed, chunk, progress)
    return Landscape1D(alphas=ts, loss=loss, acc=acc, kind="interpolate", span=(ts[0], ts[-1]), steps=steps,
                       chunk=chunk, examples=sum(len(y) for _, y in data), points=len(ts),
                       seconds=time.perf_counter() - t0, device=str(device))
