"""Tiny end-to-end runs on the embedded digits: every recipe writes a complete, self-consistent run folder."""

import pytest
import torch
import torch.nn.functional as F

from sdcore import terms
from sdcore.config import ConfigError, preset
from sdcore.data import load
from sdcore.engine import Cancelled, Diverged, Session, lr_factor, resolve_device
from sdcore.losses import kd_loss
from sdcore.methods.kd_rounds import distill_loss
from sdcore.models import create
from sdcore.runs import RunStore
from sdcore.training import train


def tiny(method="kd", **changes):
    base = {"epochs": 2, "rounds": 1 if method == "kd" else 0, "method": method, "data.subset": 300,
            "select": "best_val", "alpha": 0.2,
            "model.width": 0.5, "model.exits": terms.needs_exits(preset("demo").replace(method=method)),
            "name": f"tiny-{method.replace('+', '-')}"}
    return preset("demo").replace(**{**base, **changes}).validate()


def _accuracy_by_hand(model, split):
    """Independent of engine.evaluate: a plain loop over single examples' argmax."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for _, x, y in split.batches(37, shuffle=False, augment=False):
            correct += sum(int(model(x[i:i + 1]).argmax()) == int(y[i]) for i in range(len(y)))
    return 100.0 * correct / len(split)


@pytest.mark.parametrize("method", terms.all_methods())
def test_run_folder_is_complete_and_consistent(method, tmp_path):
    cfg = tiny(method)
    events = []
    run, results = train(cfg, runs_dir=tmp_path, on_event=events.append)
    rounds = terms.num_rounds(cfg)

    assert run.config() == cfg
    metrics = run.metrics()
    assert [(m["round"], m["epoch"]) for m in metrics] == [(r, e) for r in range(rounds) for e in (1, 2)]
    for m in metrics:
        assert {"train_loss", "train_acc", "val_acc", "test_acc", "lr", "epoch_time"} <= set(m)
    summary = run.summary()
    assert summary.complete and summary.method == method
    assert summary.finished_rounds() == list(range(rounds))

    data = load(cfg.data, seed=cfg.seed)
    for r in summary.rounds:
        model = create(cfg.model.arch, num_classes=10, in_channels=1, image_size=8, width=cfg.model.width,
                       exits=cfg.model.exits)
        model.load_state_dict(run.load_state_dict(r.round))
        assert r.test_acc == pytest.approx(_accuracy_by_hand(model, data.test), abs=1e-9)
        # The saved model is the best-validation epoch, and its metrics line says so.
        line = next(m for m in metrics if m["round"] == r.round and m["epoch"] == r.best_epoch)
        assert line["val_acc"] == max(m["val_acc"] for m in metrics if m["round"] == r.round)
    if cfg.model.exits:
        r = summary.rounds[0]
        assert len(r.exit_accs) == 3 and r.exit_accs[-1] == r.test_acc
        assert 0 <= r.ensemble_acc <= 100
    if terms.recipe(cfg) == "single":  # every term it trains logs its parts, every epoch
        keys = {"ce"} | {k for t in terms.terms_of(cfg) for k in terms.TERMS[t].logs}
        assert all(set(m["train_parts"]) == keys for m in metrics)
        for m in metrics:  # each term's weighted share: together the objective
            assert sum(m["train_parts"].values()) == pytest.approx(m["train_loss"], rel=1e-5)
    kinds = {e.kind for e in events}
    assert kinds == {"step", "epoch", "round"}
    assert sum(e.kind == "round" for e in events) == rounds


def test_same_seed_same_numbers(tmp_path):
    a = train(tiny(), runs_dir=tmp_path)[0].metrics()
    b = train(tiny(), runs_dir=tmp_path)[0].metrics()
    strip = lambda ms: [{k: v for k, v in m.items() if k != "epoch_time"} for m in ms]
    assert strip(a) == strip(b)
    c = train(tiny(seed=1), runs_dir=tmp_path)[0].metrics()
    assert strip(a) != strip(c)


def test_cached_teacher_logits_equal_a_teacher_forward_per_step(tmp_path):
    cfg = tiny()
    data = load(cfg.data, seed=0)
    s = Session(cfg=cfg, data=data, device=torch.device("cpu"), run=RunStore(tmp_path).create(cfg))
    teacher, student = s.new_model(0), s.new_model(1)
    loss_fn = distill_loss(s, teacher)
    for idx, x, y in data.train.batches(50, shuffle=True, augment=False, generator=torch.Generator().manual_seed(3)):
        got, _ = loss_fn(student, x, y, idx)
        with torch.no_grad():
            t = teacher.eval()(x)
        want = kd_loss(student(x), t, y, alpha=cfg.alpha, temperature=cfg.temperature)
        torch.testing.assert_close(got, want)


def test_divergence_stops_with_a_clear_message_and_keeps_earlier_rounds(tmp_path):
    cfg = tiny()
    s = Session(cfg=cfg, data=load(cfg.data, seed=0), device=torch.device("cpu"), run=RunStore(tmp_path).create(cfg))

    def nan_loss(model, x, y, idx):
        z = model(x)
        return F.cross_entropy(z, y) * float("nan"), z

    with pytest.raises(Diverged, match="diverged at round 1 epoch 1"):
        s.fit(s.new_model(1), nan_loss, round_idx=1)


def test_cancel_between_batches_keeps_finished_rounds(tmp_path):
    cfg = tiny()
    calls = {"n": 0}
    steps_round0 = 2 * -(-int(300 * 1) // cfg.optim.batch_size)  # epochs * batches for the 300-example subset

    def stop():
        calls["n"] += 1
        return calls["n"] > steps_round0 + 1  # stop during round 1

    with pytest.raises(Cancelled):
        train(cfg, runs_dir=tmp_path, should_stop=stop)
    (run,) = list(RunStore(tmp_path))
    summary = run.summary()
    assert not summary.complete and summary.finished_rounds() == [0]
    assert run.model_path(0).exists() and not run.model_path(1).exists()


def test_bad_data_writes_nothing(tmp_path):
    cfg = tiny(**{"data.name": "cifar10", "data.root": str(tmp_path / "nowhere")})
    from sdcore.data import DataError
    with pytest.raises(DataError):
        train(cfg, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_lr_schedules():
    o = preset("demo").optim
    spe, ep = 10, 4
    f = [lr_factor(o, step=s, epochs=ep, steps_per_epoch=spe) for s in range(ep * spe)]
    assert f[0] == 1.0 and f[-1] < 0.01 and all(a >= b for a, b in zip(f, f[1:]))
    o2 = preset("demo").replace(**{"optim.schedule": "step", "optim.warmup_epochs": 1}).optim
    g = [lr_factor(o2, step=s, epochs=ep, steps_per_epoch=spe) for s in range(ep * spe)]
    assert g[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert g[10:20] == [1.0] * 10 and g[20:30] == pytest.approx([0.1] * 10) and g[30:] == pytest.approx([0.01] * 10)


def test_device_auto_is_cpu_here_and_cuda_is_refused_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_train_ce_is_the_cross_entropy_of_the_reported_logits_against_noisy_and_clean_labels():
    """Independent of train_epoch's sums: record every batch's logits and labels, recompute the means by hand."""
    from sdcore.config import OptimConfig
    from sdcore.engine import build_optimizer, build_scheduler, train_epoch

    data = load(preset("demo").replace(**{"data.subset": 200}).data, seed=0)
    assert data.noise_mask.any()
    torch.manual_seed(0)
    model = create("cnn", num_classes=10, in_channels=1, image_size=8, width=0.25)
    seen = []

    def student_like(m, x, y, idx):  # an objective that is not the cross-entropy, as a student's is not
        z = m(x)
        seen.append((z.detach().clone(), y.clone(), idx.clone()))
        return 0.3 * F.cross_entropy(z, y) + z.pow(2).mean(), z

    o = OptimConfig(lr=0.05, batch_size=32)
    opt = build_optimizer(model, o)
    sched = build_scheduler(opt, o, epochs=1, steps_per_epoch=data.train.num_batches(32))
    out = train_epoch(model, data.train, student_like, opt, sched, batch_size=32, grad_clip=0.0, augment=False,
                      generator=torch.Generator().manual_seed(1), clean_y=data.train_clean_y)
    z = torch.cat([s[0] for s in seen])
    noisy = torch.cat([s[1] for s in seen])
    clean = data.train_clean_y[torch.cat([s[2] for s in seen])]
    assert (noisy != clean).any()
    by_hand = lambda t: sum(-torch.log_softmax(z[i], 0)[t[i]].item() for i in range(len(t))) / len(t)  # noqa: E731
    assert out["train_ce"] == pytest.approx(by_hand(noisy), rel=1e-5)
    assert out["train_ce_clean"] == pytest.approx(by_hand(clean), rel=1e-5)
    assert out["train_acc_clean"] == pytest.approx(100.0 * (z.argmax(1) == clean).sum().item() / len(clean), abs=1e-9)
    assert out["train_loss"] != pytest.approx(out["train_ce"], rel=1e-3)  # the objective is another quantity


def test_every_round_logs_comparable_cross_entropies(tmp_path):
    """A teacher's objective is its cross-entropy; a student's is not, but both log the same train_ce."""
    cfg = tiny("kd", alpha=0.2)
    run, _ = train(cfg, runs_dir=tmp_path)
    for m in run.metrics():
        assert {"train_ce", "train_ce_clean", "train_acc_clean"} <= set(m)
        if m["round"] == 0:
            assert m["train_ce"] == pytest.approx(m["train_loss"], rel=1e-5)
        else:
            assert m["train_ce"] != pytest.approx(m["train_loss"], rel=1e-3)
    clean_cfg = tiny("kd", **{"data.label_noise": 0.0, "name": "tiny-clean"})
    run, _ = train(clean_cfg, runs_dir=tmp_path)
    assert all("train_ce" in m and "train_ce_clean" not in m for m in run.metrics())  # no noise: nothing to add


def test_threads_follow_the_models_size_not_the_machines_load():
    """FLOPs counted by hand for a linear model: 2 * batch * in * out per forward (a matmul's multiply-adds)."""
    from sdcore.engine import SMALL_FORWARD_FLOPS, forward_flops, threads_for

    small, x = torch.nn.Linear(64, 10), torch.randn(32, 64)
    assert forward_flops(small, x) == 2 * 32 * 64 * 10
    assert threads_for(small, x, most=8) == 1
    n = int(SMALL_FORWARD_FLOPS // (2 * 32 * 64)) + 1  # just over the line
    big = torch.nn.Linear(64, n)
    assert forward_flops(big, x) >= SMALL_FORWARD_FLOPS and threads_for(big, x, most=8) == 8
    demo = create("cnn", num_classes=10, in_channels=1, image_size=8, width=1.0)
    assert threads_for(demo, torch.randn(64, 1, 8, 8), most=2) == 1  # the demo's CNN is small
    assert demo.training  # counting FLOPs runs eval mode and gives the mode back


def test_time_train_step_leaves_the_model_and_thread_count_as_they_were():
    from sdcore.engine import time_train_step

    torch.manual_seed(0)
    model = create("cnn", num_classes=10, in_channels=1, image_size=8, width=0.25)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    s = time_train_step(model, torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)), threads=2)
    assert s > 0 and torch.get_num_threads() == threads
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_run_records_the_threads_it_trained_with(tmp_path):
    run, _ = train(tiny("kd", epochs=1, rounds=0), runs_dir=tmp_path)
    assert run.status_record()["threads"] == 1  # the tiny CNN is small
    run, _ = train(tiny("kd", epochs=1, rounds=0, threads=2, name="fixed"), runs_dir=tmp_path)
    assert run.status_record()["threads"] == 2  # the config's own count wins
