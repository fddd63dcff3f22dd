"""SSE/SSB and PCA against hand computations; a BYOT run's exits end to end."""
import numpy as np
import pytest
import torch

from sdcore.analysis.exit_features import pca_2d, run_exit_features, separation


def test_separation_by_hand():
    f = torch.tensor([[0.0], [2.0], [10.0], [12.0]])
    s = separation(f, torch.tensor([0, 0, 1, 1]))
    assert (s.sse, s.ssb) == (4.0, 100.0) and s.ratio == pytest.approx(0.04)
    assert separation(torch.ones(3, 2), torch.tensor([0, 1, 1])).ratio == float("inf")
    with pytest.raises(ValueError, match=r"features must be \[N, D\]"):
        separation(torch.ones(3), torch.tensor([0, 1, 1]))


def test_separation_equals_a_loop_and_sums_to_the_total():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(60, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (60,), generator=g)
    s = separation(f, y)
    mu = f.mean(0)
    sse = sum(float(((f[i] - f[y == y[i]].mean(0)) ** 2).sum()) for i in range(60))
    ssb = sum(int((y == c).sum()) * float(((f[y == c].mean(0) - mu) ** 2).sum()) for c in y.unique())
    assert s.sse == pytest.approx(sse) and s.ssb == pytest.approx(ssb)
    assert s.sse + s.ssb == pytest.approx(float(((f - mu) ** 2).sum()))  # the total sum of squares splits


def test_pca_matches_the_covariance_eigenvectors():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(200, 6, generator=g, dtype=torch.float64) @ torch.diag(torch.tensor([5.0, 3, 1, 1, 0.5, 0.1],
                                                                                        dtype=torch.float64))
    xy = pca_2d(f)
    c = np.cov((f - f.mean(0)).numpy().T, bias=True)
    w, v = np.linalg.eigh(c)
    top = v[:, ::-1][:, :2]
    ref = (f - f.mean(0)).numpy() @ top
    np.testing.assert_allclose(np.abs(xy.numpy()), np.abs(ref), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(xy.var(0, unbiased=False).numpy(), w[::-1][:2], rtol=1e-8)
    assert torch.equal(pca_2d(f), xy)  # deterministic signs
    assert pca_2d(torch.randn(5, 1, dtype=torch.float64)).shape == (5, 2)  # one feature: padded


def test_a_byot_run_end_to_end(tmp_path, monkeypatch):
    from sdcore.config import preset
    from sdcore.training import train

    run, _ = train(preset("demo-byot").replace(epochs=3, **{"data.subset": 300, "model.width": 0.5}), runs_dir=tmp_path)
    exits = run_exit_features(run)
    assert [e.exit for e in exits] == [0, 1, 2]
    for e in exits:
        assert 0 < e.separation.ratio < float("inf") and 0 < e.explained <= 1
        assert len(e.points) == len(e.labels) > 0
        assert all(len(p) == 2 for p in e.points)
    with monkeypatch.context() as m:
        m.setattr("sdcore.analysis.exit_features.separation", lambda *a: pytest.fail("recomputed"))
        assert run_exit_features(run) == exits
    demo, _ = train(preset("demo").replace(epochs=1, rounds=0, **{"data.subset": 200, "model.width": 0.25}),
                    runs_dir=tmp_path)
    assert run_exit_features(demo) == []  # no exits
