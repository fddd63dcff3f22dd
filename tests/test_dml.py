"""Deep mutual learning: one peer is plain training; the loss by hand; peers clipped and stepped
independently; an end-to-end cohort run reports every peer."""
import pytest
import torch
import torch.nn.functional as F

from sdcore.config import ConfigError, preset
from sdcore.losses import dml_loss, kd_loss
from sdcore.models import Cohort, create
from sdcore.training import train

TINY = {"epochs": 2, "data.subset": 200, "model.width": 0.25}


def test_one_peer_is_plain_training(tmp_path):
    plain, _ = train(preset("demo").replace(rounds=0, **TINY), runs_dir=tmp_path / "a")
    dml, _ = train(preset("demo").replace(method="dml", rounds=0, **TINY), runs_dir=tmp_path / "b")
    for (k, v), w in zip(plain.load_state_dict(0).items(), dml.load_state_dict(0).values()):
        assert torch.equal(v, w), k
    assert plain.summary().rounds[0].test_acc == dml.summary().rounds[0].test_acc


def test_loss_by_hand_and_detached_targets():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 4, generator=g, requires_grad=True)
    z2 = torch.randn(6, 4, generator=g, requires_grad=True)
    z3 = torch.randn(6, 4, generator=g, requires_grad=True)
    y = torch.randint(0, 4, (6,), generator=g)
    a, t = 0.3, 2.0
    total = dml_loss([z1, z2, z3], y, alpha=a, temperature=t)
    own = lambda z, others: sum(kd_loss(z, o.detach(), y, alpha=a, temperature=t) for o in others) / 2  # noqa: E731
    want = own(z1, [z2, z3]) + own(z2, [z1, z3]) + own(z3, [z1, z2])
    assert total.item() == pytest.approx(want.item())
    # The gradient reaching peer 1's logits is that of peer 1's own loss: the others are targets.
    g_total = torch.autograd.grad(total, z1)[0]
    g_own = torch.autograd.grad(own(z1, [z2, z3]), z1)[0]
    torch.testing.assert_close(g_total, g_own)
    assert dml_loss([z1], y, alpha=a, temperature=t).item() == pytest.approx(F.cross_entropy(z1, y).item())


def test_cohort_init_forward_and_per_peer_clipping():
    torch.manual_seed(0)
    plain = create("cnn", num_classes=10, in_channels=1, image_size=8, width=0.25)
    torch.manual_seed(0)
    cohort = create("cnn", num_classes=10, in_channels=1, image_size=8, width=0.25, peers=2)
    assert isinstance(cohort, Cohort) and cohort.num_peers == 2
    for (k, v), w in zip(plain.state_dict().items(), cohort.peers[0].state_dict().values()):
        assert torch.equal(v, w), k  # peer 1 = what peers=1 would build
    x = torch.randn(3, 1, 8, 8)
    cohort.eval()
    plain.eval()
    torch.testing.assert_close(cohort(x), plain(x))
    assert not torch.equal(cohort.forward_peers(x)[1], cohort(x))

    # Clipping is per peer: a huge loss on peer 2 does not shrink peer 1's step.
    from sdcore.config import DataConfig, OptimConfig
    from sdcore.data import load
    from sdcore.engine import build_optimizer, build_scheduler, train_epoch

    source = load(DataConfig(subset=100), seed=0).train
    o = OptimConfig(lr=0.1, momentum=0.0, weight_decay=0.0, grad_clip=1.0, schedule="constant")

    def step(model, loss_fn):
        opt = build_optimizer(model, o)
        train_epoch(model, source, loss_fn, opt, build_scheduler(opt, o, epochs=1, steps_per_epoch=1),
                    batch_size=len(source), grad_clip=1.0, augment=False, generator=torch.Generator().manual_seed(0))

    torch.manual_seed(1)
    both = create("cnn", num_classes=10, in_channels=1, image_size=8, width=0.25, peers=2).train()
    torch.manual_seed(1)
    alone = create("cnn", num_classes=10, in_channels=1, image_size=8, width=0.25).train()
    step(both, lambda m, x, y, idx: (F.cross_entropy(m.peers[0](x), y) + 1000 * F.cross_entropy(m.peers[1](x), y),
                                     m(x)))
    step(alone, lambda m, x, y, idx: (F.cross_entropy(m(x), y), m(x)))
    for p, q in zip(both.peers[0].parameters(), alone.parameters()):
        torch.testing.assert_close(p, q)


def test_a_two_peer_run_reports_every_peer(tmp_path):
    run, (result,) = train(preset("demo-dml").replace(**TINY), runs_dir=tmp_path)
    summary = run.summary().rounds[0]
    assert len(summary.peer_accs) == 2 and summary.ensemble_acc is not None
    assert summary.test_acc == summary.peer_accs[0]
    assert isinstance(result.model, Cohort)


def test_config_checks():
    with pytest.raises(ConfigError, match="model.peers.*1 unless method is dml"):
        preset("demo").replace(**{"model.peers": 2}).validate()
    with pytest.raises(ConfigError, match=r"model.peers.*\[1, 8\]"):
        preset("demo-dml").replace(**{"model.peers": 9}).validate()
    with pytest.raises(ConfigError, match="optim.sam_rho.*method dml"):
        preset("demo-dml").replace(**{"optim.sam_rho": 0.05}).validate()
    with pytest.raises(ConfigError, match="rounds"):
        preset("demo-dml").replace(rounds=2).validate()


def test_an_ensemble_of_teachers_trains_each_as_if_alone_and_teaches_with_its_mean(tmp_path):
    """Pham et al. Fig. 3: round 0 trains N teachers independently; their mean logits teach student 1."""
    from sdcore.data import load
    from sdcore.engine import predict_logits

    ens, results = train(preset("demo").replace(rounds=1, **TINY, **{"model.teachers": 2}), runs_dir=tmp_path / "b")
    teacher = results[0].model
    assert isinstance(teacher, Cohort) and teacher.ensemble and teacher.num_peers == 2
    # Teacher 1 of the ensemble is exactly the teacher trained alone (same init, batches and steps) —
    # as long as both keep the same epoch: compare the last-epoch weights through a select=last run.
    alone_last, _ = train(preset("demo").replace(rounds=0, select="last", **TINY), runs_dir=tmp_path / "c")
    ens_last, _ = train(preset("demo").replace(rounds=0, select="last", **TINY, **{"model.teachers": 2}),
                        runs_dir=tmp_path / "d")
    peer1 = {k[len("peers.0."):]: v for k, v in ens_last.load_state_dict(0).items() if k.startswith("peers.0.")}
    for k, v in alone_last.load_state_dict(0).items():
        assert torch.equal(v, peer1[k]), k
    # The summary reports the ensemble (mean logits) and each teacher.
    cfg = ens.config()
    data = load(cfg.data, seed=cfg.seed)
    model = ens.load_model(0, **data.shapes, device=data.device)
    zs = [predict_logits(p, data.test) for p in model.peers]
    mean_acc = 100.0 * float((torch.stack(zs).mean(0).argmax(1) == data.test.y).double().mean())
    summary = ens.summary().rounds
    assert summary[0].test_acc == pytest.approx(mean_acc) and len(summary[0].peer_accs) == 2
    assert [r.round for r in summary] == [0, 1] and summary[1].peer_accs == ()
    with pytest.raises(ConfigError, match="model.teachers.*1 unless method is kd"):
        preset("demo-dml").replace(**{"model.teachers": 3}).validate()
