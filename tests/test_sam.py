"""SAM as an optimizer option: rho = 0 is the plain optimizer bit for bit; one step equals SAM by
hand; BatchNorm statistics move on the first pass only; configs and runs."""
import copy

import pytest
import torch
import torch.nn.functional as F

from sdcore.config import ConfigError, DataConfig, preset
from sdcore.data import load
from sdcore.engine import build_optimizer, build_scheduler, train_epoch
from sdcore.models import create


@pytest.fixture(scope="module")
def source():
    return load(DataConfig(subset=160), seed=0).train  # 144 training digits after the validation split


def model(seed: int = 0):
    torch.manual_seed(seed)
    return create("cnn", num_classes=10, in_channels=1, image_size=8, width=0.25)  # conv + BatchNorm


def ce(m, x, y, idx):
    z = m(x)
    return F.cross_entropy(z, y), z


def run_epoch(m, source, rho, *, batch_size=32, **optim):
    from sdcore.config import OptimConfig

    o = OptimConfig(**{"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "grad_clip": 1.0, **optim})
    opt = build_optimizer(m, o)
    sched = build_scheduler(opt, o, epochs=1, steps_per_epoch=-(-len(source) // batch_size))
    return train_epoch(m, source, ce, opt, sched, batch_size=batch_size, grad_clip=o.grad_clip, augment=False,
                       generator=torch.Generator().manual_seed(0), sam_rho=rho)


def test_rho_zero_is_the_plain_optimizer_bit_for_bit(source):
    plain, sam = model(), model()
    a = run_epoch(plain, source, None)
    b = run_epoch(sam, source, 0.0)
    assert a == b
    for (k, v), w in zip(plain.state_dict().items(), sam.state_dict().values()):
        assert torch.equal(v, w), k  # weights, BN running stats and num_batches_tracked


def test_one_step_equals_sam_by_hand(source):
    rho, lr = 0.5, 0.1
    m = model()
    x, y = next((x, y) for _, x, y in source.batches(len(source), shuffle=False, augment=False))
    # By hand: g at w, e = rho g / ||g||, g' at w + e (batch statistics, no running-stat update), w - lr g'.
    ref = copy.deepcopy(m).train()
    params = list(ref.parameters())
    g = torch.autograd.grad(F.cross_entropy(ref(x), y), params)
    norm = torch.sqrt(sum((t ** 2).sum() for t in g))
    probe = copy.deepcopy(ref)
    with torch.no_grad():
        for p, t in zip(probe.parameters(), g):
            p.add_(rho * t / norm)
    g2 = torch.autograd.grad(F.cross_entropy(probe(x), y), list(probe.parameters()))
    want = [p.detach() - lr * t for p, t in zip(params, g2)]

    run_epoch(m, source, rho, batch_size=len(source), momentum=0.0, weight_decay=0.0, grad_clip=0.0, lr=lr,
              schedule="constant")
    for p, w in zip(m.parameters(), want):
        torch.testing.assert_close(p.detach(), w, rtol=1e-5, atol=1e-6)
    # Running statistics: updated once, by the pass at w (the same as the reference's single forward).
    for (k, v), w in zip(m.state_dict().items(), ref.state_dict().values()):
        if "running" in k or "num_batches" in k:
            assert torch.equal(v, w), k


def test_sam_moves_weights_differently_and_keeps_finite_losses(source):
    plain, sam = model(), model()
    run_epoch(plain, source, None)
    stats = run_epoch(sam, source, 0.05)
    assert torch.isfinite(torch.tensor(stats["train_loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(plain.parameters(), sam.parameters()))


def test_config_checks():
    cfg = preset("demo")
    assert cfg.replace(**{"optim.sam_rho": 0.05}).validate().optim.sam_rho == 0.05
    with pytest.raises(ConfigError, match=r"optim.sam_rho.*in \[0, 10\]"):
        cfg.replace(**{"optim.sam_rho": -1.0}).validate()
    with pytest.raises(ConfigError, match="optim.sam_rho.*method pskd"):
        cfg.replace(method="pskd", rounds=0, **{"optim.sam_rho": 0.05}).validate()


def test_a_sam_run_trains_and_saves_its_setting(tmp_path):
    import json

    from sdcore.training import train

    cfg = preset("demo").replace(epochs=2, rounds=0, **{"data.subset": 200, "model.width": 0.25, "optim.sam_rho": 0.05})
    run, rounds = train(cfg, runs_dir=tmp_path)
    assert run.status() == "done" and len(rounds) == 1
    assert json.loads((run.path / "config.json").read_text())["optim"]["sam_rho"] == 0.05


def test_grad_abs_is_the_mean_gradient_magnitude_per_backbone_conv(source):
    m = model()
    x, y = next((x, y) for _, x, y in source.batches(len(source), shuffle=False, augment=False))
    ref = copy.deepcopy(m).train()
    loss = F.cross_entropy(ref(x), y)
    names = [n for n, p in ref.named_parameters() if p.ndim == 4]
    grads = torch.autograd.grad(loss, [p for n, p in ref.named_parameters() if p.ndim == 4])
    stats = run_epoch(m, source, None, batch_size=len(source))  # one step: the batch above
    assert list(stats["grad_abs"]) == names
    for n, g in zip(names, grads):
        assert stats["grad_abs"][n] == pytest.approx(float(g.abs().mean()), rel=1e-5)


def test_grad_abs_leaves_byot_exit_heads_out(source):
    torch.manual_seed(0)
    byot = create("cnn", num_classes=10, in_channels=1, image_size=8, width=0.25, exits=True)
    stats = run_epoch(byot, source, None)
    assert list(stats["grad_abs"]) == list(run_epoch(model(), source, None)["grad_abs"])
    assert all(v > 0 for v in stats["grad_abs"].values())
