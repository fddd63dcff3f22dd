"""Hessian analyses against their exact twin: the full Hessian of a tiny net from
``torch.autograd.functional.hessian`` over the flat parameter vector (float64), and ``eigvalsh``."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sdcore.analysis import hessian as hs
from sdcore.analysis.hessian import (
    DensityResult,
    EigenResult,
    HessianOperator,
    TraceResult,
    eigenvalues,
    hessian_trace,
    spectral_density,
    top_eigenvalues,
    training_batches,
)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.Tanh(), nn.Linear(8, 3))  # 323 parameters


def cnn() -> nn.Module:
    """Conv-BN-ReLU-pool-conv-BN-ReLU-GAP-linear, 303 parameters; BN running stats are random so that
    eval-mode BN (what the analysis must use) differs from batch statistics."""
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net


NETS = {"mlp": mlp, "cnn": cnn}


def make(name: str, seed: int = 0) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A float64 net in train mode and two batches of unequal size (24 and 16) of 1x6x6 inputs."""
    torch.manual_seed(seed)
    model = NETS[name]().double().train()
    g = torch.Generator().manual_seed(100 + seed)
    batches = [(torch.randn(n, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))
               for n in (24, 16)]
    return model, batches


def exact_hessian(model: nn.Module, batches) -> torch.Tensor:
    """[d, d] Hessian of the size-weighted mean CE, parameters flattened in model.parameters() order."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    buffers = dict(model.named_buffers())
    total = sum(len(y) for _, y in batches)

    def loss(flat: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(flat, [math.prod(s) for s in shapes])
        params = {n: t.view(s) for n, t, s in zip(names, pieces, shapes)}
        return sum(F.cross_entropy(functional_call(model, {**params, **buffers}, (x,)), y) * len(y) / total
                   for x, y in batches)

    training = model.training
    model.eval()
    try:
        return torch.autograd.functional.hessian(loss, theta, vectorize=True)
    finally:
        model.train(training)


@pytest.fixture(scope="module", params=list(NETS))
def case(request):
    model, batches = make(request.param)
    H = exact_hessian(model, batches)
    return model, batches, H, torch.linalg.eigvalsh(H)


# ---------------------------------------------------------------- exact twins

@pytest.mark.parametrize("cache_graph", [True, False, None])
def test_hvp_equals_exact_product(case, cache_graph):
    model, batches, H, _ = case
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with HessianOperator(model, batches, cache_graph=cache_graph) as op:
        assert op.dim == H.shape[0]
        hv = op.matvec(v)
        hv2 = op.matvec(2 * v)  # a second product through the kept graph
        assert op.hvps == 2
    torch.testing.assert_close(hv, H @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hv2, 2 * (H @ v), rtol=1e-10, atol=1e-12)


def test_top_eigenvalues_match_exact(case):
    model, batches, _, exact = case
    result = eigenvalues(model, batches, k=5)
    top = exact.flip(0)[:5].numpy()
    assert isinstance(result, EigenResult) and result.converged and len(result.values) == 5
    assert np.all(np.diff(result.values) <= 0)
    np.testing.assert_allclose(result.values, top, rtol=1e-3)
    assert result.hvps == result.iterations < top.size * 40  # Lanczos, not power iteration with deflation
    assert top_eigenvalues(model, batches, k=5) == result.values


def test_whole_spectrum_when_k_reaches_the_dimension():
    """k >= d: the Krylov space must cover everything, repeated eigenvalues included (the CE Hessian's
    bias null direction and dead units give exact repeats, so Lanczos breaks down and must restart)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 2), nn.ReLU(), nn.Linear(2, 3)).double()  # 83 params
    batches = [(torch.randn(20, 1, 6, 6, dtype=torch.float64), torch.randint(0, 3, (20,)))]
    exact = torch.linalg.eigvalsh(exact_hessian(model, batches)).flip(0).numpy()
    result = eigenvalues(model, batches, k=exact.size + 5)
    assert len(result.values) == exact.size and result.converged and result.iterations == exact.size
    np.testing.assert_allclose(result.values, exact, atol=1e-9 * abs(exact[0]))
    # SLQ stops at the invariant subspace of its start vector: an exact quadrature, extremes included.
    density = spectral_density(model, batches, runs=2, steps=500)
    assert density.steps == exact.size and all(len(n) < exact.size for n in density.nodes)
    for nodes, weights in zip(density.nodes, density.weights):
        assert max(nodes) == pytest.approx(exact[0], rel=1e-9) and sum(weights) == pytest.approx(1.0, abs=1e-12)


def test_trace_matches_exact_within_its_standard_error(case):
    model, batches, H, _ = case
    exact = float(H.trace())
    # Hutchinson with Rademacher v: Var(v^T H v) = 2 * sum of squared off-diagonal entries.
    sample_std = math.sqrt(2 * float((H**2).sum() - (H.diagonal() ** 2).sum()))
    result = hessian_trace(model, batches, samples=400, deflate=0)
    assert isinstance(result, TraceResult) and result.samples == result.hvps == 400
    assert result.deflation == 0 and result.exact_part == 0
    assert abs(result.trace - exact) <= 3 * result.stderr
    assert result.stderr == pytest.approx(sample_std / 20, rel=0.25)

    def mean_error(samples: int) -> float:
        return float(np.mean([abs(hessian_trace(model, batches, samples=samples, deflate=0,
                                                generator=torch.Generator().manual_seed(s)).trace - exact)
                              for s in range(6)]))

    assert mean_error(200) < mean_error(8) / 2  # ~1/sqrt(samples): 5x expected


def test_deflated_trace_is_unbiased_and_has_the_predicted_variance(case):
    """tr(H) = tr(T) + tr(P H P): the exact part is the Krylov space's, Hutchinson samples P v only.
    Given Q, Var((Pv)^T H (Pv)) = 2 * sum of squared off-diagonal entries of A = P H P."""
    model, batches, H, _ = case
    exact = float(H.trace())
    result = hessian_trace(model, batches, samples=400, deflate=10)
    assert result.deflation == 10 and result.samples == 400 and result.hvps == 410
    assert abs(result.trace - exact) <= 3 * result.stderr
    # Rebuild Q exactly as the trace did (same generator stream: its first draw starts Lanczos).
    with HessianOperator(model, batches) as op:
        lz = hs._Lanczos(op, op.random(torch.Generator().manual_seed(0)), 10,
                         generator=torch.Generator(), restart=True)
        while not lz.done:
            lz.step()
        Q = lz.Q[:10]
    assert result.exact_part == pytest.approx(float(torch.trace(Q @ H @ Q.T)), rel=1e-9)
    P = torch.eye(H.shape[0], dtype=H.dtype) - Q.T @ Q
    A = P @ H @ P
    deflated_std = math.sqrt(2 * float((A**2).sum() - (A.diagonal() ** 2).sum()))
    assert result.stderr == pytest.approx(deflated_std / 20, rel=0.25)
    plain_std = math.sqrt(2 * float((H**2).sum() - (H.diagonal() ** 2).sum()))
    assert deflated_std < plain_std  # (15x less variance on the trained demo CNN: BENCHMARKS.md)


def test_deflation_over_the_whole_space_is_exact():
    model, batches = make("mlp")
    H = exact_hessian(model, batches)
    result = hessian_trace(model, batches, samples=50, deflate=10_000)
    assert result.deflation == H.shape[0] and result.samples == 0 and result.stderr == 0
    assert result.trace == pytest.approx(float(H.trace()), rel=1e-9)


def test_trace_stops_early_at_tol(case):
    model, batches, _, _ = case
    for deflate in (0, 10):
        result = hessian_trace(model, batches, samples=1000, tol=0.1, deflate=deflate)
        assert 10 <= result.samples < 1000 and result.hvps == result.samples + deflate
        assert result.stderr < 0.1 * abs(result.trace)


def test_lanczos_basis_is_capped_by_memory(monkeypatch, case):
    model, batches, H, _ = case
    d = H.shape[0]
    monkeypatch.setattr(hs, "BASIS_BYTES", 6 * d * 8)  # six float64 vectors
    with pytest.raises(ValueError, match=r"the top 8 eigenvalues needs at least 9 Lanczos vectors.*only 6 fit"):
        eigenvalues(model, batches, k=8)
    with pytest.raises(ValueError, match="stochastic Lanczos quadrature with 20 steps needs"):
        spectral_density(model, batches, steps=20)
    with pytest.warns(RuntimeWarning, match="as many basis vectors as fit in memory"):
        capped = eigenvalues(model, batches, k=3, tol=1e-12)
    assert capped.iterations == 6 and not capped.converged
    trace = hessian_trace(model, batches, samples=20, deflate=20)  # deflation is an optimization: capped quietly
    assert trace.deflation == 6 and trace.hvps == 26


def test_density_moments_match_exact_spectrum(case):
    model, batches, H, exact = case
    d, runs = H.shape[0], 24
    result = spectral_density(model, batches, runs=runs, steps=30, grid=800)
    assert isinstance(result, DensityResult) and result.hvps == runs * 30
    x, p = np.asarray(result.grid), np.asarray(result.density)
    assert np.trapezoid(p, x) == pytest.approx(1.0, abs=1e-12)
    assert x[0] < min(map(min, result.nodes)) and x[-1] > max(map(max, result.nodes))
    for nodes, weights in zip(result.nodes, result.weights):
        assert sum(weights) == pytest.approx(1.0, abs=1e-10)
        assert exact[0] - 1e-8 <= min(nodes) and max(nodes) <= exact[-1] + 1e-8  # Ritz values interlace
    # Quadrature moments: per run v^T H^p v / d for normalized Rademacher v, unbiased for tr(H^p)/d with
    # Var = 2 sum_{i != j} (H^p)_ij^2 / d^2 per run.
    nodes, weights = np.asarray(result.nodes), np.asarray(result.weights)
    for power in (1, 2):
        A = torch.linalg.matrix_power(H, power)
        std = math.sqrt(2 * float((A**2).sum() - (A.diagonal() ** 2).sum()) / runs) / d
        quad = float(np.mean(np.sum(weights * nodes**power, axis=1)))
        assert abs(quad - float(A.trace()) / d) <= 4 * std
        # The broadened density keeps the mean and adds sigma^2 to the second moment.
        broadened = quad + (result.sigma**2 if power == 2 else 0.0)
        moment = np.trapezoid(p * x**power, x)
        assert moment == pytest.approx(broadened, rel=1e-6, abs=1e-9 * float(exact[-1]) ** power)
    assert float(np.mean(nodes.max(axis=1))) == pytest.approx(float(exact[-1]), rel=1e-3)  # extremes first


# ---------------------------------------------------------------- state, seeds, batches

def test_model_state_restored():
    model, batches = make("cnn")
    model[5].eval()  # a mixed state must come back as it was
    for i, p in enumerate(model.parameters()):
        if i % 2:
            p.grad = torch.randn_like(p)
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [(p.grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()]
    for backend in hs.BACKENDS:
        eigenvalues(model, batches, k=2, backend=backend)
        hessian_trace(model, batches, samples=3, backend=backend)
        spectral_density(model, batches, runs=1, steps=5, backend=backend)
        assert [m.training for m in model.modules()] == modes, backend
        for k, v in model.state_dict().items():  # weights and BN running stats, bit for bit
            assert torch.equal(v, state[k]), (backend, k)
        for p, (grad, value) in zip(model.parameters(), grads):
            assert p.grad is grad, backend
            assert value is None or torch.equal(p.grad, value)
        assert all(p.requires_grad for p in model.parameters())


def test_same_seed_same_results():
    model, batches = make("mlp")

    def run(seed: int):
        g = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
        return (eigenvalues(model, batches, k=3, generator=g()).values,
                hessian_trace(model, batches, samples=20, generator=g()).trace,
                spectral_density(model, batches, runs=2, steps=10, generator=g()).density)

    first = run(3)
    assert run(3) == first
    assert run(4)[1] != first[1]
    assert hessian_trace(model, batches, samples=20).trace == hessian_trace(model, batches, samples=20).trace


def test_batches_weighted_by_size():
    model, batches = make("cnn")
    one = [tuple(torch.cat(t) for t in zip(*batches))]
    v = torch.randn(303, dtype=torch.float64)
    with HessianOperator(model, batches) as a, HessianOperator(model, one) as b:
        torch.testing.assert_close(a.matvec(v), b.matvec(v), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(top_eigenvalues(model, batches, k=3), top_eigenvalues(model, one, k=3), rtol=1e-9)
    assert hessian_trace(model, batches, samples=10).trace == pytest.approx(
        hessian_trace(model, one, samples=10).trace, rel=1e-10)


def test_unused_parameters_are_left_out():
    from sdcore.models import create

    torch.manual_seed(0)
    model = create("cnn", num_classes=3, in_channels=1, image_size=6, width=0.125, exits=True)
    batches = [(torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,)))]
    used = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("exit_heads"))
    with HessianOperator(model, batches) as op:
        assert op.dim == used < sum(p.numel() for p in model.parameters())
    assert len(top_eigenvalues(model, batches, k=2, backend="pyhessian")) == 2  # PyHessian alone would fail


def test_training_batches_is_a_seeded_subset():
    from sdcore.config import DataConfig
    from sdcore.data import load

    source = load(DataConfig(), seed=0).train
    all_x = torch.cat([x for _, x, _ in source.batches(512, shuffle=False, augment=False)])
    picked = training_batches(source, 100, batch_size=32, generator=torch.Generator().manual_seed(5))
    assert [len(y) for _, y in picked] == [32, 32, 32, 4]
    x, y = (torch.cat(t) for t in zip(*picked))
    rows = [int(torch.nonzero((all_x == xi).flatten(1).all(1))[0]) for xi in x]
    assert len(set(rows)) == 100 and rows == sorted(rows)
    assert torch.equal(y, source.y[rows])
    again = training_batches(source, 100, batch_size=32, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for pa, pb in zip(picked, again) for a, b in zip(pa, pb))
    other = training_batches(source, 100, batch_size=32, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(torch.cat([x for x, _ in other]), x)
    with pytest.raises(ValueError, match="n must be in"):
        training_batches(source, len(source) + 1)


def test_errors_are_for_people():
    model, batches = make("mlp")
    with pytest.raises(ValueError, match="backend must be one of"):
        eigenvalues(model, batches, backend="scipy")
    with pytest.raises(ValueError, match="batches is empty"):
        hessian_trace(model, [])
    with pytest.raises(ValueError, match="k must be >= 1"):
        eigenvalues(model, batches, k=0)
    with pytest.raises(ValueError, match="deflate must be >= 0"):
        hessian_trace(model, batches, deflate=-1)


def test_results_round_trip_through_json():
    import json

    model, batches = make("mlp")
    for result in (eigenvalues(model, batches, k=2), hessian_trace(model, batches, samples=3),
                   spectral_density(model, batches, runs=1, steps=4, grid=20)):
        d = json.loads(json.dumps(result.to_dict()))
        assert type(result).from_dict(d) == result


# ---------------------------------------------------------------- PyHessian cross-check

def test_pyhessian_agrees(case):
    model, batches, H, exact = case
    ours = eigenvalues(model, batches, k=1)
    theirs = eigenvalues(model, batches, k=1, tol=1e-7, max_iter=2000, backend="pyhessian")
    assert theirs.backend == "pyhessian" and theirs.hvps > 0
    assert theirs.values[0] == pytest.approx(ours.values[0], rel=1e-3)
    trace = hessian_trace(model, batches, samples=300, backend="pyhessian")
    assert trace.samples == trace.hvps == 300
    assert abs(trace.trace - float(H.trace())) <= 4 * trace.stderr
    density = spectral_density(model, batches, runs=2, steps=20, backend="pyhessian")
    assert np.trapezoid(density.density, density.grid) == pytest.approx(1.0)
    assert max(map(max, density.nodes)) == pytest.approx(float(exact[-1]), rel=1e-3)
    assert model.training and all(m.training for m in model.modules())
    assert not hasattr(torch.eig, "__wrapped__") and torch.eig is not hs._eig_shim


def test_pyhessian_calls_in_threads_do_not_share_its_global_state():
    """PyHessian seeds torch's global RNG, sets the default dtype and (density) swaps in a torch.eig; concurrent
    calls are serialized, so each equals the same call made alone, and afterwards the default dtype is
    float32 again, torch.eig the original and the global RNG where it was."""
    import threading

    model, batches = make("mlp")  # float64: PyHessian needs the default dtype switched
    rng, eig = torch.get_rng_state(), torch.eig
    calls = {"trace": lambda: hessian_trace(model, batches, samples=30, backend="pyhessian").trace,
             "density": lambda: spectral_density(model, batches, runs=1, steps=5, grid=20,
                                                  backend="pyhessian").density}
    alone = {name: call() for name, call in calls.items()}
    out: list[tuple[str, object]] = []
    threads = [threading.Thread(target=lambda name=name: out.append((name, calls[name]())))
               for name in ("density", "trace", "density", "trace", "trace")]
    threads[0].start()
    while threads[0].is_alive() and torch.eig is eig:  # the others start while it has its torch.eig in place
        pass
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out, key=str) == sorted([(name, alone[name]) for name in ("trace",) * 3 + ("density",) * 2], key=str)
    assert torch.get_default_dtype() == torch.float32 and torch.eig is eig
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.gpu
def test_pyhessian_leaves_every_gpus_rng_as_it_was():
    """It seeds only the generators it draws from, which it forks: a CPU model's call seeds no GPU, a GPU
    model's only its own (torch.manual_seed would seed every GPU, and those outside the fork stayed seeded)."""
    model, batches = make("mlp")
    before = [torch.cuda.get_rng_state(d) for d in range(torch.cuda.device_count())]
    hessian_trace(model, batches, samples=3, backend="pyhessian")
    hessian_trace(model.cuda(), batches, samples=3, backend="pyhessian")
    assert all(torch.equal(s, torch.cuda.get_rng_state(d)) for d, s in enumerate(before))


# ---------------------------------------------------------------- warm-started λ_max (sharpness during training)

def test_warm_start_from_the_top_eigenvector_gives_lambda_max_in_one_or_two_steps(case):
    model, batches, H, exact = case
    values, vectors = torch.linalg.eigh(H)
    top = vectors[:, -1]
    for steps in (1, 2):
        est = hs.top_eigenvalue_warm(model, batches, 3.0 * top, steps, torch.Generator().manual_seed(0))
        assert isinstance(est, hs.SharpnessEstimate) and est.steps == steps
        assert est.value == pytest.approx(float(exact[-1]), rel=1e-6)
        assert abs(float(torch.dot(est.vector, top))) == pytest.approx(1.0, abs=1e-6)
        assert float(torch.linalg.vector_norm(est.vector)) == pytest.approx(1.0)
        assert est.residual < 1e-6


def test_from_a_random_start_enough_steps_converge_and_the_value_never_exceeds_lambda_max(case):
    model, batches, H, exact = case
    lam = float(exact[-1])
    previous = -math.inf
    for steps in (3, 10, 60):
        est = hs.top_eigenvalue_warm(model, batches, None, steps, torch.Generator().manual_seed(5))
        assert previous - 1e-12 <= est.value <= lam * (1 + 1e-12)  # Ritz values grow with the Krylov space
        assert float(torch.min(torch.abs(exact - est.value))) <= est.residual + 1e-12  # the residual bound holds
        previous = est.value
    assert est.value == pytest.approx(lam, rel=1e-6)
    # the returned vector warm-starts the next call: 2 more steps from it do as well as 60 from scratch
    again = hs.top_eigenvalue_warm(model, batches, est.vector, 2, torch.Generator().manual_seed(6))
    assert again.value == pytest.approx(lam, rel=1e-6)


def test_warm_estimate_restores_the_model_and_checks_its_start():
    model, batches = make("cnn")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    d = sum(p.numel() for p in model.parameters())
    zero = hs.top_eigenvalue_warm(model, batches, torch.zeros(d, dtype=torch.float64), 4,
                                  torch.Generator().manual_seed(0))
    cold = hs.top_eigenvalue_warm(model, batches, None, 4, torch.Generator().manual_seed(0))
    assert zero.value == cold.value  # a zero start is no start: the same random draw
    assert model.training and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match=f"v0 must have the {d} entries"):
        hs.top_eigenvalue_warm(model, batches, torch.ones(d + 1, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        hs.top_eigenvalue_warm(model, batches, None, 0)


def test_progress_counts_every_product():
    model, batches = make("mlp")
    seen: list[int] = []
    result = eigenvalues(model, batches, k=2, progress=seen.append)
    assert seen == list(range(1, result.hvps + 1))
    seen.clear()
    result = hessian_trace(model, batches, samples=5, deflate=3, progress=seen.append)
    assert seen == list(range(1, result.hvps + 1)) and result.hvps == 8
    seen.clear()
    result = spectral_density(model, batches, runs=2, steps=4, progress=seen.append)
    assert seen == list(range(1, 9)) and result.hvps == 8

    def stop(n: int) -> None:
        if n == 3:
            raise KeyboardInterrupt  # e.g. Cancelled from a job: the operator still restores the model
    with pytest.raises(KeyboardInterrupt):
        eigenvalues(model, batches, k=2, progress=stop)
    assert model.training and all(p.grad is None for p in model.parameters())
