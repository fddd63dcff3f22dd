"""Corruptions keep shapes and ranges, are seeded, grow with severity; run_robustness on a real run (the official
CIFAR-C files: tests/test_cifar_c.py)."""
import pytest
import torch

from sdcore.analysis.robustness import (
    CORRUPTIONS,
    PARAMS,
    SEVERITIES,
    RobustnessSettings,
    corrupt,
    robustness,
    run_robustness,
)


def images(seed=0, n=6):
    """Smooth, image-like [n, 3, 8, 8] in [0, 1]: random 3x3 patterns upsampled (pixel noise would make
    any pixelation equally destructive)."""
    coarse = torch.rand((n, 3, 3, 3), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=True)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shapes_ranges_seeds_and_severity(name):
    x = images()
    before = x.clone()
    distances = []
    for s in SEVERITIES:
        y = corrupt(x, name, s, generator=torch.Generator().manual_seed(1))
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        again = corrupt(x, name, s, generator=torch.Generator().manual_seed(1))
        assert torch.equal(y, again)  # seeded
        distances.append(float((y - x).abs().mean()))
        if name == "pixelate":  # at most (f * 8)^2 distinct values per channel: the resolution falls
            side = round(PARAMS["pixelate"][s - 1] * 8)
            assert max(len(torch.unique(ch)) for ch in y.flatten(0, 1)) <= side**2
    assert torch.equal(x, before)  # the input is not modified
    assert distances[0] > 0
    if name != "pixelate":  # (see the module doc)
        assert all(b >= a - 1e-6 for a, b in zip(distances, distances[1:])), distances
        assert distances[-1] > distances[0]


def test_known_answers():
    x = torch.full((1, 1, 8, 8), 0.5)
    assert torch.equal(corrupt(x, "contrast", 5), x)  # a flat image has no contrast to lose
    torch.testing.assert_close(corrupt(x, "gaussian_blur", 5), x)  # the kernel sums to 1
    assert torch.allclose(corrupt(x, "brightness", 2), torch.full_like(x, 0.7))
    assert float(corrupt(torch.full((1, 1, 4, 4), 0.95), "brightness", 1).max()) == 1.0  # clipped
    ramp = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8) / 63
    p = corrupt(ramp, "pixelate", 4)  # f = 0.5: 2x2 blocks, each the mean of its block
    blocks = torch.nn.functional.avg_pool2d(ramp, 2)
    torch.testing.assert_close(p, blocks.repeat_interleave(2, 2).repeat_interleave(2, 3))
    noisy = corrupt(torch.full((1, 1, 200, 200), 0.5), "gaussian_noise", 1)
    assert float(noisy.std()) == pytest.approx(PARAMS["gaussian_noise"][0], rel=0.05)
    assert not torch.equal(corrupt(x, "gaussian_noise", 1, generator=torch.Generator().manual_seed(1)),
                           corrupt(x, "gaussian_noise", 1, generator=torch.Generator().manual_seed(2)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="corruption must be one of"):
        corrupt(images(), "snow", 1)
    with pytest.raises(ValueError, match="severity must be one of 1..5"):
        corrupt(images(), "contrast", 6)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        corrupt(torch.rand(8, 8), "contrast", 1)


@pytest.fixture(scope="module")
def run(trained):
    return trained(epochs=3, rounds=1, **{"data.subset": 300, "model.width": 0.5})


def test_run_robustness_per_round_cached(run, monkeypatch):
    result = run_robustness(run)
    assert [r.round for r in result] == [0, 1]
    for r in result:
        assert r.clean == pytest.approx(run.summary().rounds[r.round].test_acc, abs=1e-6)
        assert set(r.accuracy) == set(CORRUPTIONS) and all(len(v) == 5 for v in r.accuracy.values())
        assert r.mean_corrupted == pytest.approx(sum(map(sum, r.accuracy.values())) / 25)
        assert r.mean_corrupted < r.clean  # a trained model loses accuracy off its distribution
        assert r.source == "synthetic" and r.mce is None and r.problems == {}  # CIFAR-C's fields stay empty
    monkeypatch.setattr("sdcore.analysis.robustness.robustness", lambda *a, **k: pytest.fail("recomputed"))
    cached = run_robustness(run, RobustnessSettings())  # the default settings: the same record
    assert cached == result and list(cached[0].accuracy) == list(CORRUPTIONS)  # not the JSON's sorted keys


def test_every_model_sees_the_same_corrupted_images(run):
    from sdcore.data import load

    cfg = run.config()
    data = load(cfg.data, seed=cfg.seed)
    m = run.load_model(0, **data.shapes, device=data.device)
    assert robustness(m, data.test, seed=3) == robustness(m, data.test, seed=3)
    assert (robustness(m, data.test, seed=3)[1]["gaussian_noise"]
            != robustness(m, data.test, seed=4)[1]["gaussian_noise"])


def test_alpha_tradeoff_groups_by_everything_but_alpha_and_seed():
    from sdcore.analysis.robustness import RoundRobustness, alpha_tradeoff
    from sdcore.config import preset

    def res(clean, ood):
        return [RoundRobustness(round=0, clean=clean, accuracy={}, mean_corrupted=ood),
                RoundRobustness(round=1, clean=clean + 1, accuracy={}, mean_corrupted=ood + 2)]

    base = preset("demo")
    members = [(base.replace(alpha=0.2, seed=0), res(90, 50)), (base.replace(alpha=0.2, seed=1), res(92, 54)),
               (base.replace(alpha=0.8), res(94, 60)),
               (base.replace(alpha=0.5, temperature=2.0), res(10, 10))]  # another group, one alpha only
    (curve,) = alpha_tradeoff(members)
    assert curve.seeds == {0.2: 2, 0.8: 1} and "α=*" in curve.label and "τ=4" in curve.label
    assert curve.curves[0] == ([0.2, 0.8], [91.0, 94.0], [52.0, 60.0])
    assert curve.curves[1] == ([0.2, 0.8], [92.0, 95.0], [54.0, 62.0])


def test_cli_robustness_prints_the_synthetic_table_without_the_hessian(run, monkeypatch):
    import contextlib
    import io

    from sdcore import cli

    monkeypatch.setattr(cli, "analyze", lambda *a, **k: pytest.fail("the Hessian default ran"))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["analyze", run.id, "--robustness", "--runs-dir", str(run.path.parent)])
    assert code == 0, err.getvalue()
    rows = {line.split("  ")[0].strip(): line.split() for line in out.getvalue().splitlines()}
    result = run_robustness(run)
    assert rows["mean corrupted err %"][-2:] == [f"{100 - r.mean_corrupted:.2f}" for r in result]
    assert rows["gaussian blur err %"][-2:] == [f"{r.errors['gaussian_blur']:.2f}" for r in result]  # no star
    assert "mCE %" not in rows
