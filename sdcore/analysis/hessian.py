"""Curvature of a classifier's loss: top Hessian eigenvalues, trace, and spectral density (ESD).

The Hessian is that of the mean cross-entropy over *all* examples of a fixed list of batches
(each batch weighted by its size: Hv = sum_b (n_b / N) H_b v) with respect to every trainable
parameter the loss depends on (trainable parameters the forward never reaches, e.g. BYOT exit
heads under ``forward``, are left out rather than contributing exact zeros). Pham et al. (Sec. 5,
Fig. 4/7/16) read these through PyHessian; sdlab computes them itself and keeps PyHessian as a
cross-check backend (``backend="pyhessian"``).

Analyses follow sdlab's rule 5: they take a model and batches and return a dataclass; the device
and dtype come from the model (floating inputs are cast to the parameters' dtype); randomness comes
from a CPU ``torch.Generator`` (``None``: a fresh one seeded with 0, so repeated calls agree); the
model runs in eval mode (BatchNorm uses its running statistics, which are never updated) and every
submodule's train/eval flag, the weights and any existing ``.grad`` are as before on exit.

Hessian-vector products (HVPs) are double backprop. The gradient graph of every batch is built
once and kept (``retain_graph``), so one HVP is one backward pass through that graph: faster than
rebuilding it per product (forward + grad + grad: PyHessian's way) and than ``torch.func``'s
forward-over-reverse ``jvp(grad(f))``, and batching several products per backward (``is_grads_batched``,
vmap) gained nothing (BENCHMARKS.md, "Hessian analyses": benchmarks/bench_hessian.py). The kept graph costs
memory (what the first batch's graph saves, measured, scaled to all the examples); when that exceeds
``GRAPH_CACHE_BYTES`` (or half the free GPU memory) the graph is rebuilt per product instead.

Algorithms and cost (d parameters, one HVP ~ one backward pass over all batches):

* ``eigenvalues``: Lanczos with full reorthogonalization (classical Gram-Schmidt against the whole
  basis, repeated when the DGKS test asks), growing the Krylov space one HVP at a time until every
  wanted Ritz value theta moved less than tol * |theta| in the last step *and* has a residual
  ||H y - theta y|| <= tol * |theta| (ARPACK's rule: an eigenvalue then lies within tol * |theta|,
  and the error is usually far smaller). Breakdown (an invariant subspace) restarts from a random
  vector orthogonal to the basis, so repeated eigenvalues and k >= d (the whole spectrum) come out
  right. Memory: the basis, steps x d values (demo CNN, 94k params, top-100 in ~380 steps: ~145 MB
  float32; ResNet-18's 11M params: ~45 MB per step, ~17 GB for a top-100). Time: one HVP per step
  plus 4-8 m d flops of reorthogonalization at step m.
* ``hessian_trace``: Hutchinson's mean of v^T H v over Rademacher v (one HVP per sample), deflated
  by default ("Krylov-aware" Hutchinson, Chen & Hallman 2023; the idea of Hutch++, Meyer et al.
  2021): ``deflate`` Lanczos steps give an orthonormal Q with Q^T H Q = T, so
  tr(H) = tr(T) + tr(P H P), P = I - Q Q^T. tr(T) = sum of alpha is exact; Hutchinson estimates only
  the rest with vectors P v. A network's Hessian has a few large outlier eigenvalues that dominate
  ||H||_F^2, the Hutchinson variance (2 (||H||_F^2 - sum H_ii^2) for Rademacher v), and a Krylov
  space finds them first: on the trained demo teacher 20 steps cut the std of a sample from 126 to
  32, i.e. 15x fewer samples for the same standard error.
* ``spectral_density``: stochastic Lanczos quadrature (Ghorbani et al. 2019; PyHessian's
  ``density``): ``runs`` x ``steps`` HVPs, then Gaussian broadening of the Ritz values on a grid.
* ``top_eigenvalue_warm``: a fixed number of Lanczos steps from a given start vector, returning the
  top Ritz value and vector; started from the previous epoch's vector it tracks lambda_max during
  training for a few HVPs per epoch (``RunConfig.track_sharpness``).

The sdcore backend's analyses take ``progress``: called with the HVPs done so far after every
product (a UI's progress bar; raising from it, e.g. ``Cancelled``, stops the analysis, and the
model is restored as on any exit).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pyhessian import hessian as PyHessian
from scipy.linalg import eigh_tridiagonal
from torch import Tensor, nn

from sdcore.analysis.common import Batches, grad_state, model_tensor, prepare_batches

BACKENDS = ("sdcore", "pyhessian")
# Keep every batch's gradient graph when its estimated size is at most this (CPU); on a GPU the
# limit is also at most half of the currently free memory.
GRAPH_CACHE_BYTES = 2 * 2**30
# Lanczos keeps its basis (steps x d values): at most this many bytes of it, and on a GPU at most
# half of the free memory. Steps beyond that are not taken (eigenvalues then warns, unconverged);
# asking for more eigenvalues or SLQ steps than fit is an error up front.
BASIS_BYTES = 4 * 2**30
_MIN_TRACE_SAMPLES = 10  # Hutchinson's early stop trusts the sample std only from this many samples
_DENSITY_MARGIN = 5.0  # the density grid extends this many sigmas beyond the extreme Ritz values
_DENSITY_SIGMA = 0.01  # default Gaussian width, as a fraction of the Ritz values' range
EIGEN_MAX_ITER = 100  # eigenvalues: Lanczos takes at most this + 4k steps (HVPs)
DENSITY_RUNS, DENSITY_STEPS = 4, 60  # spectral_density: SLQ runs x Lanczos steps per run (HVPs)
ProgressFn = Callable[[int], None]  # called with the HVPs done so far, after each product


# ---------------------------------------------------------------- results

class _Result:
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (floats, ints, lists, str, None)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return cls(**d)


@dataclass
class EigenResult(_Result):
    values: list[float]  # the min(k, d) largest (algebraic) eigenvalues, descending
    hvps: int  # Hessian-vector products, each over all batches
    seconds: float  # wall time of the analysis
    k: int  # eigenvalues asked for
    tol: float  # relative accuracy asked for
    iterations: int  # Lanczos steps (sdcore) or power-iteration steps (pyhessian)
    converged: bool | None = None  # every value met tol within the step limit; None: not reported (pyhessian)
    backend: str = "sdcore"


@dataclass
class TraceResult(_Result):
    trace: float  # exact part + mean of the Hutchinson samples (P v)^T H (P v)
    stderr: float  # sample std / sqrt(samples); 0 for a single sample (the exact part has no error)
    samples: int  # samples drawn (fewer than asked when tol stopped early; 0 when deflation spans all of H)
    hvps: int  # deflation steps + samples
    seconds: float
    backend: str = "sdcore"
    deflation: int = 0  # Lanczos steps whose subspace was taken out exactly (0: plain Hutchinson)
    exact_part: float = 0.0  # tr(Q^T H Q) over that subspace, included in trace


@dataclass
class DensityResult(_Result):
    grid: list[float]  # eigenvalue axis, increasing, evenly spaced
    density: list[float]  # estimated spectral density on grid; integrates to 1 (trapezoid)
    nodes: list[list[float]]  # per run: the Ritz values (quadrature nodes), ascending
    weights: list[list[float]]  # per run: squared first components of the Ritz vectors; each run sums to 1
    runs: int
    steps: int  # Lanczos steps per run, capped at d; a run ends early (exactly) at an invariant subspace
    sigma: float  # Gaussian broadening width (standard deviation), in eigenvalue units
    hvps: int
    seconds: float
    backend: str = "sdcore"


@dataclass
class SharpnessEstimate:
    value: float  # the top Ritz value: <= lambda_max (the top eigenvalue), equal to it once converged
    vector: Tensor  # its unit Ritz vector [dim] (model device and dtype): the next call's start vector
    residual: float  # ||H y - value y|| for that vector: some eigenvalue lies within this of value
    steps: int  # Lanczos steps taken = HVPs
    seconds: float


def _used_params(model: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> list[nn.Parameter]:
    """Trainable parameters the loss depends on (its gradient graph reaches them)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters (requires_grad is False everywhere)")
    x, y = batches[0]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), trainable, allow_unused=True)
    return [p for p, g in zip(trainable, grads) if g is not None]


# ---------------------------------------------------------------- the operator

class HessianOperator:
    """H of the mean cross-entropy over ``batches`` as a product on flat vectors of length ``dim``.

    Use as a context manager (it sets eval mode and restores the model on exit)::

        with HessianOperator(model, batches) as H:
            hv = H.matvec(v)  # v, hv: [H.dim] on the model's device, in its dtype

    Parameters are flattened in ``model.parameters()`` order (unused ones skipped). ``cache_graph``:
    keep every batch's gradient graph between products (None: when it fits, see the module doc).
    ``on_product``: called with ``hvps`` after every product (progress; it may raise to stop).
    """

    def __init__(self, model: nn.Module, batches: Batches, *, cache_graph: bool | None = None,
                 on_product: ProgressFn | None = None):
        self.model = model
        p = model_tensor(model)
        self.device, self.dtype = p.device, p.dtype
        self.batches = prepare_batches(batches, p.device, p.dtype)
        self.cache_graph = cache_graph
        self.on_product = on_product
        self.hvps = 0  # products computed so far
        self._stack = contextlib.ExitStack()
        self._grads: list[Tensor] | None = None  # sum_b (n_b/N) grad_b, with graph, when cached

    def __enter__(self) -> "HessianOperator":
        self._stack.enter_context(grad_state(self.model))
        try:
            self.params = _used_params(self.model, self.batches)
            self.shapes = [p.shape for p in self.params]
            self.sizes = [p.numel() for p in self.params]
            self.dim = sum(self.sizes)
            total = sum(len(y) for _, y in self.batches)
            self._weights = [len(y) / total for _, y in self.batches]
            grads = {}  # batch -> its weighted gradient with graph, while deciding and when cached
            if self.cache_graph is None:  # decide from the size of batch 0's graph, then keep it
                grads[0] = self._batch_grads(0, measure=True)
                self.cache_graph = self._graph_bytes / len(self.batches[0][1]) * total <= self._cache_limit()
            if self.cache_graph:
                per_batch = [grads.get(b) or self._batch_grads(b) for b in range(len(self.batches))]
                self._grads = [sum(gs) for gs in zip(*per_batch)]
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._grads = None  # frees the kept graphs
        self._stack.close()

    def _batch_grads(self, b: int, *, measure: bool = False) -> tuple[Tensor, ...]:
        """(n_b/N) * gradient of batch b's mean CE, with its graph (create_graph)."""
        x, y = self.batches[b]
        stored: dict[int, int] = {}
        held = {t.untyped_storage().data_ptr() for t in [*self.model.parameters(), *self.model.buffers()]}

        def pack(t: Tensor) -> Tensor:  # sizes what the graph keeps alive beyond the model's own tensors
            ptr = t.untyped_storage().data_ptr()
            if ptr not in held:
                stored[ptr] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if measure else contextlib.nullcontext():
            loss = F.cross_entropy(self.model(x), y) * self._weights[b]
            grads = torch.autograd.grad(loss, self.params, create_graph=True)
        self._graph_bytes = sum(stored.values())
        return grads

    def _cache_limit(self) -> float:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return min(GRAPH_CACHE_BYTES, free / 2)
        return GRAPH_CACHE_BYTES

    def matvec(self, v: Tensor) -> Tensor:
        """H @ v for v [dim] (model device and dtype); returns [dim]."""
        vs = [t.view(s) for t, s in zip(torch.split(v, self.sizes), self.shapes)]
        if self._grads is not None:
            hv = torch.autograd.grad(self._grads, self.params, grad_outputs=vs, retain_graph=True)
        else:
            hv = [torch.zeros_like(p) for p in self.params]
            for b in range(len(self.batches)):
                for acc, h in zip(hv, torch.autograd.grad(self._batch_grads(b), self.params, grad_outputs=vs)):
                    acc.add_(h)
        self.hvps += 1
        if self.on_product is not None:
            self.on_product(self.hvps)
        return torch.cat([h.reshape(-1) for h in hv])

    def random(self, generator: torch.Generator, kind: str = "gaussian") -> Tensor:
        """A [dim] vector drawn on the CPU from generator, moved to the model's device."""
        if kind == "rademacher":
            v = torch.randint(0, 2, (self.dim,), generator=generator, dtype=self.dtype) * 2 - 1
        else:
            v = torch.randn(self.dim, generator=generator, dtype=self.dtype)
        return v.to(self.device)


# ---------------------------------------------------------------- Lanczos

def basis_limit(op: HessianOperator) -> int:
    """How many Lanczos vectors of op.dim values fit in BASIS_BYTES (and half the free GPU memory)."""
    limit = BASIS_BYTES
    if op.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(op.device)
        limit = min(limit, free // 2)
    return int(limit // (op.dim * torch.finfo(op.dtype).bits // 8))


def _check_basis(op: HessianOperator, vectors: int, what: str) -> None:
    """A one-line error when ``vectors`` Lanczos vectors (the least the analysis needs) do not fit."""
    fits = basis_limit(op)
    if vectors > fits:
        gib = vectors * op.dim * (torch.finfo(op.dtype).bits // 8) / 2**30
        raise ValueError(f"{what} needs at least {vectors} Lanczos vectors of {op.dim:,} values ({gib:.1f} GiB), "
                         f"but only {fits} fit in memory (sdcore.analysis.hessian.BASIS_BYTES); ask for fewer")


class _Lanczos:
    """Symmetric Lanczos with full reorthogonalization; T = tridiag(beta, alpha, beta) = Q^T H Q.

    ``restart``: on breakdown (the Krylov space is invariant) continue from a random vector
    orthogonal to the basis, with a zero coupling in T; otherwise stop there (SLQ, where the
    invariant subspace already gives the exact quadrature for the start vector).
    """

    def __init__(self, op: HessianOperator, q0: Tensor, capacity: int, *, generator: torch.Generator,
                 restart: bool):
        self.op, self.generator, self.restart = op, generator, restart
        self.capacity = min(capacity, op.dim, basis_limit(op))
        self.capped = self.capacity < min(capacity, op.dim)  # memory, not max_iter, set the limit
        self.Q = torch.empty(min(self.capacity, 64), op.dim, dtype=op.dtype, device=op.device)  # rows: basis
        self.Q[0] = q0 / torch.linalg.vector_norm(q0)
        self.alpha: list[float] = []  # diagonal of T
        self.beta: list[float] = []  # beta[j] couples q_j and q_{j+1}; beta[m-1] is the residual norm
        self.done = False  # no further step possible: full dimension, or breakdown without restart
        self._scale = 0.0  # running estimate of ||H|| for the breakdown test
        self._eps = torch.finfo(op.dtype).eps

    @property
    def m(self) -> int:
        return len(self.alpha)

    def step(self) -> None:
        j = self.m
        q = self.Q[j]
        w = self.op.matvec(q)
        a = torch.dot(q, w)
        w = w - a * q
        if j > 0:
            w = w - self.beta[j - 1] * self.Q[j - 1]
        w = self._orthogonalize(w, j + 1)
        b = float(torch.linalg.vector_norm(w))
        self.alpha.append(float(a))
        self._scale = max(self._scale, abs(float(a)) + b + (self.beta[-1] if self.beta else 0.0))
        if self.m >= self.capacity:
            self.beta.append(b)
            self.done = True
            return
        if b <= 100 * self._eps * self._scale:  # breakdown: span(Q) is invariant under H
            self.beta.append(0.0)
            if not self.restart:
                self.done = True
                return
            w = self._orthogonalize(self.op.random(self.generator), j + 1)
            b = float(torch.linalg.vector_norm(w))
        else:
            self.beta.append(b)
        self._grow()
        self.Q[j + 1] = w / b

    def _orthogonalize(self, w: Tensor, n: int) -> Tensor:
        """w minus its projection on the first n basis vectors: classical Gram-Schmidt, repeated when
        the first pass cancelled more than 1 - 1/sqrt(2) of w's norm (the DGKS test), which keeps the
        basis orthogonal to rounding at ~half the cost of always orthogonalizing twice."""
        Qn = self.Q[:n]
        for _ in range(2):
            before = torch.linalg.vector_norm(w)
            w = w - Qn.T @ (Qn @ w)
            if torch.linalg.vector_norm(w) > before / math.sqrt(2):
                break
        return w

    def _grow(self) -> None:
        if self.m < self.Q.shape[0]:
            return
        bigger = torch.empty(min(2 * self.Q.shape[0], self.capacity), self.op.dim, dtype=self.Q.dtype,
                             device=self.Q.device)
        bigger[: self.Q.shape[0]] = self.Q
        self.Q = bigger

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and eigenvectors (columns) of T, float64; 2.4 ms at m=250."""
        if self.m == 1:
            return np.asarray(self.alpha), np.ones((1, 1))
        return eigh_tridiagonal(np.asarray(self.alpha), np.asarray(self.beta[: self.m - 1]))


def _converged(theta: np.ndarray, last: np.ndarray, beta: float, previous: np.ndarray | None, tol: float,
               floor: float) -> bool:
    """Every wanted Ritz value (theta, descending; last: bottom components of its Ritz vectors) moved
    less than tol * max(|theta|, floor) since the previous step, and its residual norm
    ||H y - theta y|| = beta * |last| is below that too (ARPACK's rule), so an eigenvalue lies that
    close. (The sharper r^2/gap bound, with the gap read off the Ritz values, stopped Lanczos on
    lambda_2 before lambda_1 had appeared, in tests; the residual does not.)"""
    if previous is None or len(previous) != len(theta):
        return False
    scale = tol * np.maximum(np.abs(theta), floor)
    return bool(np.all(np.abs(theta - previous) <= scale) and np.all(beta * np.abs(last) <= scale))


def _eigenvalues_sdcore(model: nn.Module, batches: Batches, k: int, tol: float, max_iter: int,
                        generator: torch.Generator, progress: ProgressFn | None = None) -> EigenResult:
    start = time.perf_counter()
    with HessianOperator(model, batches, on_product=progress) as op:
        want = min(k, op.dim)
        steps = min(op.dim, max_iter + 4 * k)
        _check_basis(op, want + 1 if want < op.dim else want, f"the top {want} eigenvalues")
        lz = _Lanczos(op, op.random(generator), steps, generator=generator, restart=True)
        floor = math.sqrt(torch.finfo(op.dtype).eps)  # times |lambda_max|: below it HVP rounding rules
        previous, converged = None, False
        while not lz.done and not converged:
            lz.step()
            if lz.m >= want:
                theta_all, vecs = lz.ritz()  # ascending
                theta, last = theta_all[::-1][:want], vecs[-1, ::-1][:want]
                converged = _converged(theta, last, lz.beta[-1], previous, tol,
                                       floor * float(np.max(np.abs(theta_all))))
                previous = theta
        theta = lz.ritz()[0][::-1][:want]
        converged = converged or lz.m == op.dim
        hvps = op.hvps
    if not converged:
        why = "as many basis vectors as fit in memory" if lz.capped else f"max_iter={max_iter}; raise it"
        warnings.warn(f"Lanczos stopped at {lz.m} steps ({why}) before the top {want} eigenvalues "
                      f"reached tol={tol}", RuntimeWarning, stacklevel=3)
    return EigenResult(values=[float(t) for t in theta], hvps=hvps, seconds=time.perf_counter() - start,
                       k=k, tol=tol, iterations=lz.m, converged=converged)


# ---------------------------------------------------------------- trace and density

def _trace_sdcore(model: nn.Module, batches: Batches, samples: int, tol: float | None, deflate: int,
                  generator: torch.Generator, progress: ProgressFn | None = None) -> TraceResult:
    start = time.perf_counter()
    values: list[float] = []
    with HessianOperator(model, batches, on_product=progress) as op:
        exact, Q, steps = 0.0, None, min(deflate, op.dim, basis_limit(op))  # memory caps it silently
        if steps:
            lz = _Lanczos(op, op.random(generator), steps, generator=generator, restart=True)
            while not lz.done:
                lz.step()
            exact, Q = float(np.sum(lz.alpha)), lz.Q[:lz.m]  # tr(Q^T H Q) = tr(T)
        for _ in range(samples if steps < op.dim else 0):  # deflation spanning R^d: the trace is exact
            v = op.random(generator, "rademacher")
            if Q is not None:
                v = v - Q.T @ (Q @ v)
            values.append(float(torch.dot(v, op.matvec(v))))
            if tol is not None and len(values) >= _MIN_TRACE_SAMPLES:
                mean, err = _mean_stderr(values)
                if err < tol * abs(exact + mean):
                    break
        hvps = op.hvps
    mean, err = _mean_stderr(values) if values else (0.0, 0.0)
    return TraceResult(trace=exact + mean, stderr=err, samples=len(values), hvps=hvps,
                       seconds=time.perf_counter() - start, deflation=steps, exact_part=exact)


def _mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else 0.0


def _slq_sdcore(model: nn.Module, batches: Batches, runs: int, steps: int, generator: torch.Generator,
                progress: ProgressFn | None = None) -> tuple[list[list[float]], list[list[float]], int, int]:
    """(nodes, weights, steps done per run, hvps) of stochastic Lanczos quadrature."""
    nodes, weights = [], []
    with HessianOperator(model, batches, on_product=progress) as op:
        steps = min(steps, op.dim)
        _check_basis(op, steps, f"stochastic Lanczos quadrature with {steps} steps")
        for _ in range(runs):
            lz = _Lanczos(op, op.random(generator, "rademacher"), steps, generator=generator, restart=False)
            while not lz.done:
                lz.step()
            theta, vecs = lz.ritz()
            nodes.append([float(t) for t in theta])
            weights.append([float(w) for w in vecs[0] ** 2])
        hvps = op.hvps
    return nodes, weights, steps, hvps


def broaden(nodes: list[list[float]], weights: list[list[float]], *, grid: int = 400,
            sigma: float | None = None) -> tuple[list[float], list[float], float]:
    """(grid, density, sigma): the mean over runs of sum_i w_i N(x; theta_i, sigma^2), normalized to
    integrate to 1 (trapezoid) on ``grid`` points spanning the nodes +- 5 sigma.

    sigma None: 1% of the nodes' range (of their magnitude, or 1, when all nodes coincide).
    """
    flat = np.concatenate([np.asarray(n, dtype=np.float64) for n in nodes])
    lo, hi = float(flat.min()), float(flat.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    sigma = _DENSITY_SIGMA * span if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    x = np.linspace(lo - _DENSITY_MARGIN * sigma, hi + _DENSITY_MARGIN * sigma, grid)
    density = np.zeros(grid)
    for n, w in zip(nodes, weights):
        z = (x[:, None] - np.asarray(n)[None, :]) / sigma  # [grid, nodes]
        density += np.exp(-0.5 * z**2) @ np.asarray(w) / (sigma * math.sqrt(2 * math.pi))
    density /= np.trapezoid(density, x)
    return x.tolist(), density.tolist(), sigma


# ---------------------------------------------------------------- PyHessian backend

_PYHESSIAN_LOCK = threading.Lock()  # PyHessian's global RNG, default dtype and torch.eig are process-wide

@contextlib.contextmanager
def _pyhessian(model: nn.Module, batches: Batches, generator: torch.Generator) -> Iterator[Any]:
    """A ``pyhessian.hessian`` over the prepared batches, with an HVP counter (``.hvps``).

    PyHessian draws from torch's global RNG and in the default dtype, writes ``.grad`` (backward
    with create_graph) and calls ``model.eval()``: here the global RNG is forked and seeded from
    ``generator``, the default dtype follows the model's (changed only when it differs), unused
    parameters are frozen (PyHessian fails on them), and ``grad_state`` restores the rest.
    The RNG, the default dtype and ``torch.eig`` (``pyhessian_density``) are process-wide, so PyHessian
    calls are serialized by a lock and each is saved and restored inside it (read outside, it could be
    another call's temporary value, then "restored" for good). Only the generators PyHessian draws from
    are seeded and forked: the CPU one (its ``randn``) and the model's GPU (its ``randint_like``);
    ``torch.manual_seed`` would seed every GPU and leave them changed.
    Code that draws from torch's global RNG in another thread meanwhile may see another stream;
    sdcore's training does so only to initialise a model (batches and augmentation have their own
    generators), and the app's analysis jobs use the sdcore backend, queued behind training.
    """
    p = model_tensor(model)
    cuda = p.device.type == "cuda"
    data = prepare_batches(batches, p.device, p.dtype)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with _PYHESSIAN_LOCK:  # read the default dtype under the lock: another call may have changed it
        dtype = torch.get_default_dtype()
        devices = [p.device] if cuda else []
        with grad_state(model), torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            # its backward(create_graph=True) warns of a .grad cycle; grad_state resets .grad
            warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")
            used = {id(q) for q in _used_params(model, data)}
            for q in model.parameters():
                q.requires_grad_(q.requires_grad and id(q) in used)
            torch.random.default_generator.manual_seed(seed)
            for d in devices:
                with torch.cuda.device(d):
                    torch.cuda.manual_seed(seed)
            if dtype != p.dtype:
                torch.set_default_dtype(p.dtype)
            try:
                h = PyHessian(model, nn.CrossEntropyLoss(), dataloader=data, cuda=cuda)
                h.hvps = 0
                product = h.dataloader_hv_product

                def counted(v: list[Tensor]) -> tuple[float, list[Tensor]]:
                    h.hvps += 1
                    return product(v)

                h.dataloader_hv_product = counted
                yield h
            finally:
                if torch.get_default_dtype() != dtype:
                    torch.set_default_dtype(dtype)


def _eig_shim(a: Tensor, eigenvectors: bool = False) -> tuple[Tensor, Tensor]:
    """The removed ``torch.eig`` for the symmetric matrices PyHessian passes it: (values [n, 2] as
    (real, imaginary) columns, vectors [n, n] as columns, or an empty tensor)."""
    values, vectors = torch.linalg.eigh(a)
    return torch.stack([values, torch.zeros_like(values)], dim=1), vectors if eigenvectors else a.new_empty(0)


def pyhessian_eigenvalues(model: nn.Module, batches: Batches, k: int = 1, *, tol: float = 1e-3,
                          max_iter: int = 100, generator: torch.Generator | None = None) -> EigenResult:
    """PyHessian's power iteration with deflation: up to ``max_iter`` steps per eigenvalue, each
    stopped when the estimate changes less than tol (relative). It finds the largest *magnitude*
    eigenvalues; they are returned sorted descending."""
    _check_positive(k=k, max_iter=max_iter)
    start = time.perf_counter()
    with _pyhessian(model, batches, _generator(generator)) as h:
        values, _ = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=k)
        hvps = h.hvps
    return EigenResult(values=sorted((float(v) for v in values), reverse=True), hvps=hvps,
                       seconds=time.perf_counter() - start, k=k, tol=tol, iterations=hvps, backend="pyhessian")


def pyhessian_top_eigenvalues(model: nn.Module, batches: Batches, k: int = 1, tol: float = 1e-3, *,
                              max_iter: int = 100, generator: torch.Generator | None = None) -> list[float]:
    return pyhessian_eigenvalues(model, batches, k, tol=tol, max_iter=max_iter, generator=generator).values


def pyhessian_trace(model: nn.Module, batches: Batches, *, samples: int = 100, tol: float | None = None,
                    generator: torch.Generator | None = None) -> TraceResult:
    """PyHessian's Hutchinson; with tol it stops when the running mean changes less than tol
    (relative) between samples, its own rule (not sdcore's standard-error rule)."""
    _check_positive(samples=samples)
    start = time.perf_counter()
    with _pyhessian(model, batches, _generator(generator)) as h:
        values = h.trace(maxIter=samples, tol=-math.inf if tol is None else tol)  # -inf: never stop
        hvps = h.hvps
    mean, err = _mean_stderr(values)
    return TraceResult(trace=mean, stderr=err, samples=len(values), hvps=hvps,
                       seconds=time.perf_counter() - start, backend="pyhessian")


def pyhessian_density(model: nn.Module, batches: Batches, *, runs: int = 4, steps: int = 60, grid: int = 400,
                      sigma: float | None = None, generator: torch.Generator | None = None) -> DensityResult:
    """PyHessian's SLQ (``hessian.density``) broadened like sdcore's. Its call to the removed
    ``torch.eig`` is served by ``_eig_shim`` for the duration of the call (process-wide)."""
    _check_positive(runs=runs, steps=steps, grid=grid)
    start = time.perf_counter()
    with _pyhessian(model, batches, _generator(generator)) as h:
        steps = min(steps, sum(q.numel() for q in h.params))
        original = torch.eig  # under _pyhessian's lock: outside it, another call's shim could be read as the original
        torch.eig = _eig_shim
        try:
            nodes, weights = h.density(iter=steps, n_v=runs)
        finally:
            torch.eig = original
        hvps = h.hvps
    order = [np.argsort(n) for n in nodes]
    nodes = [[float(n[i]) for i in o] for n, o in zip(nodes, order)]
    weights = [[float(w[i]) for i in o] for w, o in zip(weights, order)]
    x, density, sigma = broaden(nodes, weights, grid=grid, sigma=sigma)
    return DensityResult(grid=x, density=density, nodes=nodes, weights=weights, runs=runs, steps=steps,
                         sigma=sigma, hvps=hvps, seconds=time.perf_counter() - start, backend="pyhessian")


# ---------------------------------------------------------------- public API

def _generator(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(0)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def eigenvalues(model: nn.Module, batches: Batches, k: int = 1, *, tol: float = 1e-3,
                max_iter: int = EIGEN_MAX_ITER, generator: torch.Generator | None = None, backend: str = "sdcore",
                progress: ProgressFn | None = None) -> EigenResult:
    """The k largest (algebraic) Hessian eigenvalues, descending; all d of them when k >= d.

    sdcore: Lanczos (module doc) with at most max_iter + 4k steps, i.e. HVPs (and basis vectors
    kept); a RuntimeWarning and ``converged=False`` when that is not enough for tol. The trained
    demo teacher (94k parameters, 512 examples) needs ~10 steps for k=1, ~105 for k=20 and ~380
    for k=100 at tol=1e-3: interior eigenvalues converge last (after 250 steps the 100th was
    still 26% off). pyhessian: see ``pyhessian_eigenvalues``.
    """
    _check_backend(backend)
    _check_positive(k=k, max_iter=max_iter)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if backend == "pyhessian":
        return pyhessian_eigenvalues(model, batches, k, tol=tol, max_iter=max_iter, generator=generator)
    return _eigenvalues_sdcore(model, batches, k, tol, max_iter, _generator(generator), progress)


def top_eigenvalues(model: nn.Module, batches: Batches, k: int = 1, *, tol: float = 1e-3, max_iter: int = 100,
                    generator: torch.Generator | None = None, backend: str = "sdcore") -> list[float]:
    """``eigenvalues(...).values``."""
    return eigenvalues(model, batches, k, tol=tol, max_iter=max_iter, generator=generator, backend=backend).values


def hessian_trace(model: nn.Module, batches: Batches, *, samples: int = 100, tol: float | None = None,
                  deflate: int = 20, generator: torch.Generator | None = None,
                  backend: str = "sdcore", progress: ProgressFn | None = None) -> TraceResult:
    """tr(H): ``deflate`` Lanczos steps taken out exactly, then Hutchinson's estimate of the rest from
    up to ``samples`` Rademacher vectors (one HVP each; module doc). ``deflate=0``: plain Hutchinson.

    tol: stop early, from 10 samples on, once stderr < tol * |trace|. The pyhessian backend is plain
    Hutchinson (``deflate`` ignored) with its own tol rule (``pyhessian_trace``).
    """
    _check_backend(backend)
    _check_positive(samples=samples)
    if deflate < 0:
        raise ValueError(f"deflate must be >= 0, got {deflate}")
    if backend == "pyhessian":
        return pyhessian_trace(model, batches, samples=samples, tol=tol, generator=generator)
    return _trace_sdcore(model, batches, samples, tol, deflate, _generator(generator), progress)


def spectral_density(model: nn.Module, batches: Batches, *, runs: int = DENSITY_RUNS, steps: int = DENSITY_STEPS,
                     grid: int = 400, sigma: float | None = None, generator: torch.Generator | None = None,
                     backend: str = "sdcore", progress: ProgressFn | None = None) -> DensityResult:
    """Eigenvalue density by stochastic Lanczos quadrature: ``runs`` normalized Rademacher starts,
    ``steps`` Lanczos steps each (runs x steps HVPs), Gaussian broadening (``broaden``)."""
    _check_backend(backend)
    _check_positive(runs=runs, steps=steps, grid=grid)
    if backend == "pyhessian":
        return pyhessian_density(model, batches, runs=runs, steps=steps, grid=grid, sigma=sigma,
                                 generator=generator)
    start = time.perf_counter()
    nodes, weights, steps, hvps = _slq_sdcore(model, batches, runs, steps, _generator(generator), progress)
    x, density, sigma = broaden(nodes, weights, grid=grid, sigma=sigma)
    return DensityResult(grid=x, density=density, nodes=nodes, weights=weights, runs=runs, steps=steps,
                         sigma=sigma, hvps=hvps, seconds=time.perf_counter() - start)


def top_eigenvalue_warm(model: nn.Module, batches: Batches, v0: Tensor | None, steps: int,
                        generator: torch.Generator | None = None) -> SharpnessEstimate:
    """lambda_max from ``steps`` Lanczos steps (HVPs) started at ``v0`` [dim] (any scale; None, or a zero or
    non-finite vector: a Gaussian draw from ``generator``): the top Ritz value and its Ritz vector.

    Lanczos, not power iteration: its top Ritz value is the best estimate over the whole Krylov space of
    v0, so from a start close to the top eigenvector (the previous epoch's vector, while training moves
    the weights a little) a few steps suffice; from v0 = the exact eigenvector one step gives lambda_max
    to rounding. The value never exceeds lambda_max (a Rayleigh quotient); ``residual`` says how far an
    eigenvalue can be. Breakdown (v0 spans an invariant subspace) continues from a random vector
    orthogonal to the basis, drawn from ``generator`` (None: seeded 0), as ``eigenvalues`` does.
    """
    _check_positive(steps=steps)
    start = time.perf_counter()
    generator = _generator(generator)
    with HessianOperator(model, batches) as op:
        if v0 is not None and tuple(v0.shape) != (op.dim,):
            raise ValueError(f"v0 must have the {op.dim} entries of the model's Hessian, got shape {tuple(v0.shape)}")
        q0 = None if v0 is None else v0.detach().to(op.device, op.dtype)
        if q0 is None or not bool(torch.isfinite(q0).all()) or not float(torch.linalg.vector_norm(q0)) > 0:
            q0 = op.random(generator)
        lz = _Lanczos(op, q0, steps, generator=generator, restart=True)
        while not lz.done:
            lz.step()
        theta, vecs = lz.ritz()  # ascending: the last is the top
        y = torch.as_tensor(vecs[:, -1].copy(), dtype=op.dtype, device=op.device)  # [m]
        vector = lz.Q[:lz.m].T @ y
        vector = vector / torch.linalg.vector_norm(vector)
        residual = lz.beta[-1] * abs(float(vecs[-1, -1]))
    return SharpnessEstimate(value=float(theta[-1]), vector=vector, residual=residual, steps=lz.m,
                             seconds=time.perf_counter() - start)


def training_batches(data_source: Any, n: int, *, batch_size: int = 256,
                     generator: torch.Generator | None = None) -> list[tuple[Tensor, Tensor]]:
    """A fixed, seeded subset of n examples of an sdcore ``Source`` as [(x, y)] batches of batch_size.

    The n positions are drawn with ``generator`` (None: seeded 0) and gathered, in increasing
    position order, from one unshuffled, unaugmented pass over the source (so the cost is one pass
    over the whole split, not over n examples). Tensors stay on the source's device.
    """
    total = len(data_source)
    if not 1 <= n <= total:
        raise ValueError(f"n must be in [1, {total}] (the size of the split), got {n}")
    _check_positive(batch_size=batch_size)
    chosen = torch.randperm(total, generator=_generator(generator))[:n]
    keep = torch.zeros(total, dtype=torch.bool)
    keep[chosen] = True
    keep = keep.to(data_source.y.device)
    xs, ys = [], []
    for idx, x, y in data_source.batches(batch_size, shuffle=False, augment=False):
        mask = keep[idx]
        xs.append(x[mask])
        ys.append(y[mask])
    x, y = torch.cat(xs), torch.cat(ys)
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]
