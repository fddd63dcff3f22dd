"""Ensembles: logit averaging, BAN vs independent ensembles on known logits, cached test logits of a run."""
import pytest
import torch

from sdcore.analysis.ensembles import accuracy, ban_vs_ensemble, ensemble_logits
from sdcore.analysis.ensembles import test_logits as run_test_logits


def onehot(classes, scale=1.0):
    return torch.nn.functional.one_hot(torch.tensor(classes), 3).float() * scale


def test_ensemble_is_the_mean_of_logits():
    a, b = torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    assert torch.equal(ensemble_logits([a, b]), torch.tensor([[1.5, 1.0, 0.0]], dtype=torch.float64))
    assert accuracy(ensemble_logits([a, b]), torch.tensor([0])) == 100.0
    with pytest.raises(ValueError, match="at least one member"):
        ensemble_logits([])


def test_ban_vs_independent_on_known_logits():
    y = torch.tensor([0, 1, 2, 0])
    # run A: teacher right on 0, 1; student 1 right on 0, 1, 2 (confident) -> BAN(2) right on 0, 1, 2
    a = [onehot([0, 1, 0, 1]), onehot([0, 1, 2, 2], 2.0)]
    # run B: teacher right on 2, 3; student 1 right on 3 only
    b = [onehot([1, 0, 2, 0]), onehot([2, 2, 0, 0])]
    rows = ban_vs_ensemble([(a, y), (b, y)])
    assert [r.size for r in rows] == [1, 2]
    assert rows[0].ban == (50.0, 0.0, 2) and rows[0].last_student == (50.0, 0.0, 2)
    # BAN of 2: A -> argmax of mean: [0, 1, 2, 2] right on 3 of 4 = 75; B -> [ties...] computed below
    want_b = accuracy(ensemble_logits(b), y)
    assert rows[1].ban[0] == pytest.approx((75.0 + want_b) / 2)
    assert rows[1].last_student[0] == pytest.approx((75.0 + 25.0) / 2)
    # Independent ensembles of teachers: size 1 = A's teacher; size 2 = mean of both teachers.
    assert rows[0].independent == 50.0
    assert rows[1].independent == accuracy(ensemble_logits([a[0], b[0]]), y)
    # More runs than rounds: the table grows to the number of runs; BAN has no entry there.
    rows = ban_vs_ensemble([(a[:1], y), (b[:1], y), (a[:1], y)])
    assert len(rows) == 3 and rows[2].ban is None and rows[2].independent is not None
    with pytest.raises(ValueError, match="do not share a test split"):
        ban_vs_ensemble([(a, y), (b, y[[1, 0, 2, 3]])])


def test_run_test_logits_are_cached(tmp_path, monkeypatch):
    from sdcore.config import preset
    from sdcore.data import load
    from sdcore.engine import predict_logits
    from sdcore.training import train

    run, _ = train(preset("demo").replace(epochs=2, rounds=1, **{"data.subset": 200, "model.width": 0.25}),
                   runs_dir=tmp_path)
    logits, y = run_test_logits(run)
    cfg = run.config()
    data = load(cfg.data, seed=cfg.seed)
    assert len(logits) == 2 and torch.equal(y, data.test.y)
    torch.testing.assert_close(logits[1],
                               predict_logits(run.load_model(1, **data.shapes, device=data.device), data.test))
    assert accuracy(logits[1], y) == pytest.approx(run.summary().rounds[1].test_acc)
    with monkeypatch.context() as m:
        m.setattr("sdcore.engine.predict_logits", lambda *a, **k: pytest.fail("recomputed"))
        again, _ = run_test_logits(run)
    assert all(torch.equal(p, q) for p, q in zip(again, logits))
    (sidecar,) = (run.path / "analysis").glob("test_logits-*.pt")
    sidecar.write_bytes(b"damaged")  # a damaged cache is recomputed
    fresh, _ = run_test_logits(run)
    assert all(torch.equal(p, q) for p, q in zip(fresh, logits))


def test_by_teacher_count_pools_seeds_and_needs_two_counts():
    from sdcore.analysis.ensembles import by_teacher_count
    from sdcore.config import preset

    base = preset("demo")
    members = [(base.replace(**{"model.teachers": 1}), (90.0, 91.0)),
               (base.replace(seed=1, **{"model.teachers": 1}), (92.0, 93.0)),
               (base.replace(**{"model.teachers": 3}), (95.0, 94.0)),
               (base.replace(alpha=0.9, **{"model.teachers": 3}), (50.0,))]  # another config: one count only
    (curve,) = by_teacher_count(members)
    assert [c.teachers for c in curve] == [1, 3]
    assert curve[0].teacher[0] == 91.0 and curve[0].student[0] == 92.0 and curve[0].teacher[2] == 2
    assert curve[1].teacher == (95.0, 0.0, 1) and curve[1].student == (94.0, 0.0, 1)
