"""Loss landscapes (line, surface, interpolate) and weight-noise flatness against their exact twins:
the model's plain loss at the centre, and a naive loop that loads θ + αd into a copy and runs one
forward per point."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from sdcore.analysis.flatness import noise_flatness
from sdcore.analysis.landscape import interpolate, line, random_direction, surface
from sdcore.config import DataConfig
from sdcore.data import load
from sdcore.models import create

TOL = dict(rel=1e-6, abs=1e-6)


@pytest.fixture(scope="module")
def digits():
    return load(DataConfig(), seed=0)


@pytest.fixture(scope="module")
def batches(digits):
    """256 training digits as two (x, y) batches, the last one short (batch-size weighting matters)."""
    it = digits.train.batches(160, shuffle=False, augment=False)
    (_, x0, y0), (_, x1, y1) = next(it), next(it)
    return [(x0, y0), (x1[:96], y1[:96])]


def tiny_cnn(seed: int = 0, width: float = 0.25):
    torch.manual_seed(seed)
    return create("cnn", num_classes=10, in_channels=1, image_size=8, width=width)


def resnet8(skip: bool, seed: int = 0):
    torch.manual_seed(seed)
    return create("resnet8", width=0.25, num_classes=10, in_channels=1, image_size=8, skip=skip)


def trained(model, digits, *, epochs: int = 3, seed: int = 0):
    """A few epochs of SGD, so BN running stats and weights are not at their init."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(epochs):
        for _, x, y in digits.train.batches(64, shuffle=True, augment=False, generator=g):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def cnn_trained(digits):
    return trained(tiny_cnn(width=0.5), digits)


@pytest.fixture(scope="module")
def cnn_other(digits):
    return trained(tiny_cnn(seed=1, width=0.5), digits, seed=1)


@torch.no_grad()
def plain_loss(model, batches, state=None):
    """(mean CE, acc %) of the model (or a copy holding ``state``) in eval mode, one forward per batch."""
    if state is not None:
        model = copy.deepcopy(model)
        model.load_state_dict(state)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    loss = correct = n = 0
    for x, y in batches:
        z = model(x)
        loss += F.cross_entropy(z, y, reduction="sum").item()
        correct += (z.argmax(1) == y).sum().item()
        n += len(y)
    for m, training in flags:
        m.training = training
    return loss / n, 100.0 * correct / n


def moved(model, directions, coeffs):
    """state_dict with θ + Σ c_k d_k on the parameters; buffers as they are."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for d, c in zip(directions, coeffs):
        for name, t in d.items():
            state[name] += c * t
    return state


def snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "modes": [m.training for m in model.modules()],
    }


def assert_untouched(model, before):
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k  # weights and BN buffers bit-identical
    for n, g in before["grads"].items():
        assert (after["grads"][n] is None) == (g is None) and (g is None or torch.equal(after["grads"][n], g)), n
    assert after["modes"] == before["modes"]


# ---------------------------------------------------------------- centre, restoration

@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_centre_is_the_model_loss_and_the_model_is_left_as_it_was(mode, cnn_trained, batches):
    model = copy.deepcopy(cnn_trained)
    x, y = batches[0]
    F.cross_entropy(model(x), y).backward()  # grads present on every parameter
    model.fc.weight.grad = None  # and one missing
    model.train(mode != "eval")
    if mode == "mixed":
        model.sections[1].eval()  # per-module flags must come back, not just the top-level one
    before = snapshot(model)
    ref_loss, ref_acc = plain_loss(model, batches)

    r1 = line(model, batches, steps=5, generator=torch.Generator().manual_seed(3))
    assert r1.alphas[2] == 0.0
    assert r1.loss[2] == pytest.approx(ref_loss, **TOL)
    assert r1.acc[2] == pytest.approx(ref_acc, abs=1e-9)
    assert_untouched(model, before)

    r2 = surface(model, batches, steps=3, generator=torch.Generator().manual_seed(3), chunk=4)
    assert r2.alphas[1] == r2.betas[1] == 0.0
    assert r2.loss[1][1] == pytest.approx(ref_loss, **TOL)
    assert r2.acc[1][1] == pytest.approx(ref_acc, abs=1e-9)
    assert_untouched(model, before)

    # Away from the centre the loss is not the same number (the direction really moved the weights).
    assert r1.loss[0] != pytest.approx(ref_loss, rel=1e-4)


def test_zero_is_on_every_grid_and_results_are_json(cnn_trained, batches):
    r = line(cnn_trained, batches, steps=4, span=(-1, 2))  # evenly spaced: -1, 0, 1, 2 -> 0 is hit
    assert r.alphas == [-1.0, 0.0, 1.0, 2.0] and r.points == 4
    r = line(cnn_trained, batches, steps=4, span=(-1, 1))  # -1, -1/3, 1/3, 1 -> 0 inserted
    assert r.points == 5 and r.alphas[2] == 0.0 and r.steps == 4
    assert r.loss[2] == pytest.approx(plain_loss(cnn_trained, batches)[0], **TOL)
    s = surface(cnn_trained, batches, steps=2)
    assert s.alphas == s.betas == [-1.0, 0.0, 1.0] and s.points == 9
    assert len(s.loss) == 3 and all(len(row) == 3 for row in s.loss)
    d = json.loads(json.dumps(s.to_dict(), allow_nan=False))
    assert d["loss"] == s.loss and d["span"] == [-1.0, 1.0] and d["examples"] == 256
    assert d["seconds"] > 0 and d["device"] == "cpu"


def test_steps_default_is_coarse_on_cpu(cnn_trained, batches):
    r = line(cnn_trained, batches)
    assert r.steps == 21 and r.points == 21 and r.alphas[10] == 0.0


def test_bad_arguments_are_refused(cnn_trained, batches):
    with pytest.raises(ValueError, match="span"):
        line(cnn_trained, batches, span=(1, -1), steps=3)
    with pytest.raises(ValueError, match="steps"):
        line(cnn_trained, batches, steps=1)
    with pytest.raises(ValueError, match="chunk"):
        surface(cnn_trained, batches, steps=3, chunk=0)
    bad = {"fc.weight": torch.zeros(3, 3)}
    with pytest.raises(ValueError, match="shape"):
        line(cnn_trained, batches, direction=bad, steps=3)
    with pytest.raises(ValueError, match="not parameters"):
        line(cnn_trained, batches, direction={"nope": torch.zeros(1)}, steps=3)
    with pytest.raises(ValueError, match="architecture"):
        interpolate(cnn_trained, tiny_cnn(), batches, steps=3)
    with pytest.raises(ValueError, match="empty"):
        line(cnn_trained, [], steps=3)


# ---------------------------------------------------------------- directions

def test_filter_normalized_direction(cnn_trained):
    params = dict(cnn_trained.named_parameters())
    d = random_direction(cnn_trained, generator=torch.Generator().manual_seed(0))
    d_bn = random_direction(cnn_trained, generator=torch.Generator().manual_seed(0), include_bias_bn=True)
    assert d.keys() == params.keys()  # parameters only: no running_mean / running_var
    assert not any("running" in k or "num_batches" in k for k in d)
    for name, p in params.items():
        assert d[name].shape == p.shape and d[name].dtype == p.dtype
        if p.dim() > 1:  # conv [out, in, k, k] and linear [out, in]: one norm per output filter
            torch.testing.assert_close(d[name].flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1),
                                       rtol=1e-5, atol=1e-7)
            assert torch.equal(d[name], d_bn[name])  # the weight part ignores include_bias_bn
        else:  # biases and BN scale/shift
            assert not d[name].any()
            assert d_bn[name].any()
            torch.testing.assert_close(d_bn[name].norm(), p.detach().norm(), rtol=1e-5, atol=1e-7)
    assert sum(p.dim() <= 1 for p in params.values()) >= 7  # the check above did cover BN and the fc bias


def test_seeded_directions_are_reproducible(cnn_trained):
    a = random_direction(cnn_trained, generator=torch.Generator().manual_seed(5))
    b = random_direction(cnn_trained, generator=torch.Generator().manual_seed(5))
    c = random_direction(cnn_trained, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc.weight"], c["fc.weight"])
    g = torch.Generator().manual_seed(5)
    first, second = random_direction(cnn_trained, generator=g), random_direction(cnn_trained, generator=g)
    assert not torch.equal(first["fc.weight"], second["fc.weight"])  # surface's d1, d2 differ


def test_seeded_surfaces_are_reproducible(cnn_trained, batches):
    r1 = surface(cnn_trained, batches, steps=3, generator=torch.Generator().manual_seed(1))
    r2 = surface(cnn_trained, batches, steps=3, generator=torch.Generator().manual_seed(1))
    r3 = surface(cnn_trained, batches, steps=3, generator=torch.Generator().manual_seed(2))
    assert r1.loss == r2.loss
    assert r1.loss != r3.loss


# ---------------------------------------------------------------- vmap against the naive loop

@pytest.mark.parametrize("make", [
    pytest.param(lambda: tiny_cnn(), id="cnn-bn"),
    pytest.param(lambda: resnet8(skip=True), id="resnet8-skip"),
    pytest.param(lambda: resnet8(skip=False), id="resnet8-noskip"),
])
def test_batched_grid_equals_one_forward_per_point(make, digits, batches):
    model = trained(make(), digits, epochs=1)
    g = torch.Generator().manual_seed(0)
    d1 = random_direction(model, generator=g, include_bias_bn=True)  # BN params move too (batched BN affine)
    d2 = random_direction(model, generator=g)
    s = surface(model, batches, directions=(d1, d2), steps=5, span=(-0.5, 0.5), chunk=7)  # 25 = 7+7+7+4
    for i, j in [(0, 0), (4, 4), (1, 3), (3, 0), (2, 4)]:
        ref_loss, ref_acc = plain_loss(model, batches, moved(model, (d1, d2), (s.alphas[i], s.betas[j])))
        assert s.loss[j][i] == pytest.approx(ref_loss, rel=1e-5, abs=1e-6), (i, j)
        assert s.acc[j][i] == pytest.approx(ref_acc, abs=1e-9), (i, j)
    for chunk in (2, 1):  # 1: the CPU default, a plain forward per point without vmap
        r = line(model, batches, direction=d2, steps=5, span=(-2, 2), chunk=chunk)
        for i in (0, 1, 4):
            ref_loss, ref_acc = plain_loss(model, batches, moved(model, (d2,), (r.alphas[i],)))
            assert r.loss[i] == pytest.approx(ref_loss, rel=1e-5, abs=1e-6), (chunk, i)
            assert r.acc[i] == pytest.approx(ref_acc, abs=1e-9), (chunk, i)


# ---------------------------------------------------------------- interpolation

def test_interpolation_hits_both_models_and_lerps_bn_stats(cnn_trained, cnn_other, batches):
    a, b = cnn_trained, cnn_other
    before_a, before_b = snapshot(a), snapshot(b)
    r = interpolate(a, b, batches, steps=7, chunk=3)  # -0.25, 0, 0.25, ..., 1.25: 0 and 1 on the grid
    assert r.kind == "interpolate" and r.alphas[0] == -0.25 and r.alphas[-1] == 1.25
    i0, i1 = r.alphas.index(0.0), r.alphas.index(1.0)
    assert r.loss[i0] == pytest.approx(plain_loss(a, batches)[0], **TOL)
    assert r.loss[i1] == pytest.approx(plain_loss(b, batches)[0], **TOL)
    assert r.acc[i0] == pytest.approx(plain_loss(a, batches)[1], abs=1e-9)
    assert r.acc[i1] == pytest.approx(plain_loss(b, batches)[1], abs=1e-9)
    # In between: parameters *and* BN running stats at (1 - t) a + t b.
    sa, sb = a.state_dict(), b.state_dict()
    t = r.alphas[i0 + 2]
    mid = {k: (1 - t) * v + t * sb[k] if v.is_floating_point() else v for k, v in sa.items()}
    assert r.loss[i0 + 2] == pytest.approx(plain_loss(a, batches, mid)[0], rel=1e-5, abs=1e-6)
    assert_untouched(a, before_a)
    assert_untouched(b, before_b)

    r = interpolate(a, b, batches)  # the default 41 steps over (-0.25, 1.25) miss 0 and 1: both inserted
    assert r.points == 43 and 0.0 in r.alphas and 1.0 in r.alphas
    assert r.loss[r.alphas.index(1.0)] == pytest.approx(plain_loss(b, batches)[0], **TOL)


# ---------------------------------------------------------------- weight-noise flatness

def test_noise_flatness(cnn_trained, batches):
    model = cnn_trained
    before = snapshot(model)
    clean_loss, clean_acc = plain_loss(model, batches)
    sigmas = (0, 0.05, 0.5)
    r = noise_flatness(model, batches, sigmas=sigmas, draws=3, generator=torch.Generator().manual_seed(0))
    assert_untouched(model, before)
    assert r.clean_loss == pytest.approx(clean_loss, **TOL) and r.clean_acc == pytest.approx(clean_acc, abs=1e-9)
    assert r.loss[0] == [r.clean_loss] * 3 and r.acc[0] == [r.clean_acc] * 3  # sigma 0 is the model, exactly
    assert r.loss_mean[0] == r.clean_loss and r.loss_std[0] == 0.0
    assert r.loss_mean[0] < r.loss_mean[1] < r.loss_mean[2]  # a trained model gets worse with noise
    assert r.acc_mean[2] < r.acc_mean[0]
    assert all(s > 0 for s in r.loss_std[1:])
    assert r.points == 2 * 3 + 1

    # Exact twin of draw 0: ε per parameter in named_parameters order, θ + σ * RMS(θ) * ε.
    g = torch.Generator().manual_seed(0)
    eps = {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}
    for i in (1, 2):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        for n, p in model.named_parameters():
            state[n] = p.detach() + sigmas[i] * (p.detach().norm() / math.sqrt(p.numel())) * eps[n]
        assert r.loss[i][0] == pytest.approx(plain_loss(model, batches, state)[0], rel=1e-5, abs=1e-6)

    again = noise_flatness(model, batches, sigmas=sigmas, draws=3, generator=torch.Generator().manual_seed(0))
    other = noise_flatness(model, batches, sigmas=sigmas, draws=3, generator=torch.Generator().manual_seed(1))
    assert again.loss == r.loss and again.acc == r.acc
    assert other.loss[1:] != r.loss[1:] and other.loss[0] == r.loss[0]
    json.dumps(r.to_dict(), allow_nan=False)


def test_noise_flatness_default_sigmas_and_errors(cnn_trained, batches):
    r = noise_flatness(cnn_trained, batches[:1], draws=2)
    assert r.sigmas == [0, 0.01, 0.02, 0.05, 0.1, 0.2] and len(r.loss_mean) == 6
    assert r.loss_mean[-1] > r.loss_mean[0]
    with pytest.raises(ValueError, match="sigmas"):
        noise_flatness(cnn_trained, batches, sigmas=(-0.1,))
    with pytest.raises(ValueError, match="draws"):
        noise_flatness(cnn_trained, batches, draws=0)
