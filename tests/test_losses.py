"""Losses against hand computations written independently of sdcore.losses (plain loops over numbers)."""
import math

import pytest
import torch
import torch.nn.functional as F

from sdcore.losses import byot_loss, kd_loss, pskd_prev_weight, pskd_targets, soft_cross_entropy, soft_kl


def _softmax(row, tau=1.0):
    e = [math.exp(v / tau) for v in row]
    s = sum(e)
    return [v / s for v in e]


def _hand_kd(zs, zt, y, alpha, tau):
    """alpha*CE + (1-alpha)*tau^2*KL(p_t||p_s), averaged over rows, by explicit sums."""
    total = 0.0
    for s_row, t_row, label in zip(zs, zt, y):
        ce = -math.log(_softmax(s_row)[label])
        ps, pt = _softmax(s_row, tau), _softmax(t_row, tau)
        kl = sum(q * (math.log(q) - math.log(p)) for p, q in zip(ps, pt))
        total += alpha * ce + (1 - alpha) * tau**2 * kl
    return total / len(y)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3
    zt = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([0, 3, 1, 2, 3])
    return zs, zt, y


@pytest.mark.parametrize("alpha,tau", [(0.2, 4.0), (0.5, 1.0), (0.8, 2.5), (0.0, 3.0)])
def test_kd_loss_matches_hand_computation(batch, alpha, tau):
    zs, zt, y = batch
    got = kd_loss(zs, zt, y, alpha=alpha, temperature=tau).item()
    assert got == pytest.approx(_hand_kd(zs.tolist(), zt.tolist(), y.tolist(), alpha, tau), rel=1e-10)


def test_alpha_one_is_cross_entropy(batch):
    zs, zt, y = batch
    assert kd_loss(zs, zt, y, alpha=1.0, temperature=4.0).item() == pytest.approx(F.cross_entropy(zs, y).item())


def test_kl_term_scales_with_tau_squared_and_vanishes_for_identical_logits(batch):
    zs, zt, y = batch
    assert soft_kl(zs, zs, 3.0).item() == pytest.approx(0.0, abs=1e-12)
    # The tau^2 factor: KL at tau computed by hand, multiplied by tau^2.
    for tau in (1.0, 2.0, 8.0):
        hand = sum(sum(q * (math.log(q) - math.log(p)) for p, q in zip(_softmax(s, tau), _softmax(t, tau)))
                   for s, t in zip(zs.tolist(), zt.tolist())) / 5
        assert soft_kl(zs, zt, tau).item() == pytest.approx(tau**2 * hand, rel=1e-10)


def test_gradient_flows_only_to_the_student(batch):
    zs, zt, y = batch
    zs = zs.clone().requires_grad_(True)
    zt = zt.clone().requires_grad_(True)
    kd_loss(zs, zt.detach(), y, alpha=0.3, temperature=4.0).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    assert zt.grad is None


def test_kd_gradient_matches_closed_form(batch):
    # d/dz_s of tau^2 KL(p_t^tau || p_s^tau) = tau * (p_s^tau - p_t^tau) per sample (Hinton et al.), / B.
    zs, zt, y = batch
    zs = zs.clone().requires_grad_(True)
    tau = 4.0
    soft_kl(zs, zt, tau).backward()
    expected = tau * (F.softmax(zs.detach() / tau, 1) - F.softmax(zt / tau, 1)) / zs.shape[0]
    torch.testing.assert_close(zs.grad, expected)


def test_byot_loss_parts_and_total():
    g = torch.Generator().manual_seed(1)
    K, B, C, D = 3, 6, 5, 7
    logits = [torch.randn(B, C, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(K)]
    feats = [torch.randn(B, D, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(K)]
    y = torch.randint(0, C, (B,), generator=g)
    alpha, tau, beta = 0.7, 3.0, 0.03
    out = byot_loss(logits, feats, y, alpha=alpha, temperature=tau, hint_weight=beta)
    expected = F.cross_entropy(logits[-1], y)  # deepest: CE only
    for i in range(K - 1):
        zs, zt = logits[i].tolist(), logits[-1].tolist()
        expected = expected + _hand_kd(zs, zt, y.tolist(), alpha, tau)
        hint = sum((a - b) ** 2 for fa, fb in zip(feats[i].tolist(), feats[-1].tolist())
                   for a, b in zip(fa, fb)) / (B * D)
        expected = expected + beta * hint
    assert out.total.item() == pytest.approx(float(expected.detach()), rel=1e-10)
    assert out.kl[-1].item() == 0 and out.hint[-1].item() == 0
    # The deepest exit is a teacher: its logits/features get gradient only from its own CE.
    out.total.backward()
    deep = logits[-1].grad.clone()
    zc = logits[-1].detach().clone().requires_grad_(True)
    F.cross_entropy(zc, y).backward()
    torch.testing.assert_close(deep, zc.grad)
    assert feats[-1].grad is None or feats[-1].grad.abs().sum() == 0


def test_pskd_targets_and_schedule():
    y = torch.tensor([0, 2])
    prev = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    t = pskd_targets(y, prev, prev_weight=0.4)
    torch.testing.assert_close(t, torch.tensor([[0.6 + 0.2, 0.1, 0.1], [0.04, 0.04, 0.6 + 0.32]]))
    torch.testing.assert_close(t.sum(1), torch.ones(2))
    # a_t grows linearly to 1 - alpha at the last epoch; the hard-label weight ends at alpha.
    ws = [pskd_prev_weight(e, 10, alpha=0.2) for e in range(10)]
    assert ws[-1] == pytest.approx(0.8) and ws[0] == pytest.approx(0.08)
    assert all(b - a == pytest.approx(0.08) for a, b in zip(ws, ws[1:]))


def test_soft_cross_entropy_with_one_hot_is_ce():
    z = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([1, 5, 0, 2])
    assert (soft_cross_entropy(z, F.one_hot(y, 6).float()).item()
            == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-6))
