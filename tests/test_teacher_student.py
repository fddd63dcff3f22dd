"""Teacher-vs-student numbers against known tensors and a direct computation on a real tiny run."""
import math

import pytest
import torch

from sdcore.analysis.teacher_student import (
    compare_logits,
    gallery_images,
    logit_mse,
    mean_kl,
    per_class_accuracy,
    round_pairs,
)


def test_logit_mse_and_kl_on_known_tensors():
    a = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    assert logit_mse(a, b) == pytest.approx((0 + 4 + 9 + 0) / 4)
    assert logit_mse(a, a) == 0.0
    # KL(p || q) for p = softmax([0, 0]) = (1/2, 1/2), q = softmax([log 3, 0]) = (3/4, 1/4):
    p, q = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]])
    want = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert mean_kl(p, q) == pytest.approx(want)
    assert mean_kl(q, q) == pytest.approx(0.0, abs=1e-15)
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(20, 5, generator=g), torch.randn(20, 5, generator=g)
    ref = torch.nn.functional.kl_div(torch.log_softmax(s.double(), 1), torch.log_softmax(t.double(), 1),
                                     log_target=True, reduction="batchmean")
    assert mean_kl(t, s) == pytest.approx(float(ref))
    with pytest.raises(ValueError, match="one shape"):
        logit_mse(a, b[:1])


def test_per_class_accuracy_and_fixed_broken_indices():
    y = torch.tensor([0, 0, 1, 1, 2])
    assert per_class_accuracy(torch.tensor([0, 1, 1, 1, 0]), y, 4) == [50.0, 100.0, 0.0, None]
    one_hot = lambda classes: torch.nn.functional.one_hot(torch.tensor(classes), 3).float() * 5  # noqa: E731
    teacher = one_hot([0, 1, 1, 1, 0])  # right on 0, 2, 3
    student = one_hot([0, 0, 1, 2, 2])  # right on 0, 1, 2, 4
    r = compare_logits([teacher, student], y, ["a", "b", "c"])
    (pair,) = r.pairs
    assert pair.fixed == [1, 4] and pair.broken == [3]
    assert pair.agreement_teacher == pair.agreement_prev == pytest.approx(100 * 2 / 5)
    assert pair.test_acc == pytest.approx(80.0)
    assert r.teacher_class_acc == [50.0, 100.0, 0.0] and pair.class_acc == [100.0, 50.0, 100.0]
    assert pair.class_delta == [50.0, -50.0, 100.0]
    assert r.predictions == [[0, 1, 1, 1, 0], [0, 0, 1, 2, 2]] and r.targets == y.tolist()
    with pytest.raises(ValueError, match="at least one student"):
        compare_logits([teacher], y, ["a", "b", "c"])


def test_successive_rounds_compare_with_their_own_teacher():
    g = torch.Generator().manual_seed(1)
    z = [torch.randn(30, 4, generator=g) for _ in range(3)]
    y = torch.randint(0, 4, (30,), generator=g)
    r = compare_logits(z, y, list("abcd"))
    assert [p.round for p in r.pairs] == [1, 2]
    assert r.pairs[1].logit_mse == pytest.approx(logit_mse(z[2], z[1]))  # round 2 vs round 1, not round 0
    assert r.pairs[1].kl == pytest.approx(mean_kl(z[1], z[2]))
    assert r.pairs[1].agreement_teacher == pytest.approx(100 * float((z[2].argmax(1) == z[0].argmax(1)).float().mean()))


@pytest.fixture(scope="module")
def run(trained):
    return trained(epochs=2, rounds=2, **{"data.subset": 200, "model.width": 0.25})


def test_round_pairs_on_a_real_run_are_cached(run, monkeypatch):
    from sdcore.analysis.compare import agreement
    from sdcore.data import load
    from sdcore.engine import predict_logits

    result = round_pairs(run)
    cfg = run.config()
    data = load(cfg.data, seed=cfg.seed)
    logits = [predict_logits(run.load_model(k, **data.shapes, device=data.device), data.test) for k in range(3)]
    assert [p.round for p in result.pairs] == [1, 2]
    assert result.pairs[0].logit_mse == pytest.approx(logit_mse(logits[1], logits[0]), rel=1e-6)
    for p, a in zip(result.pairs, agreement(run)):  # the Compare page's agreement, computed on its own
        assert p.agreement_teacher == pytest.approx(a.agreement) and p.test_acc == pytest.approx(a.test_acc)
    assert result.class_names == data.class_names and len(result.targets) == len(data.test)
    monkeypatch.setattr("sdcore.analysis.teacher_student.compare_logits", lambda *a, **k: pytest.fail("recomputed"))
    assert round_pairs(run) == result


def test_gallery_images_are_the_test_images(run):
    from sdcore.data import load

    cfg = run.config()
    data = load(cfg.data, seed=cfg.seed)
    idx = [5, 0, 17]
    imgs = gallery_images(run, idx)
    assert imgs.shape == (3, 1, 8, 8)
    want = torch.cat([x for _, x, _ in data.test.batches(512, shuffle=False, augment=False)])[idx]
    assert torch.equal(imgs, want.cpu())
    assert gallery_images(run, []).numel() == 0
