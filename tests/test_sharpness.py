"""Sharpness during training (RunConfig.track_sharpness): logged every epoch of every round when on, never
when off; training identical either way; the tracked value follows the full analysis' λ_max."""
import math

import pytest
import torch

from sdcore.analysis import hessian
from sdcore.config import ConfigError, preset
from sdcore.data import load
from sdcore.models import create
from sdcore.training import train


def tiny(**changes):
    base = {"epochs": 3, "rounds": 1, "data.subset": 200, "model.width": 0.25, "select": "last",
            "sharpness_subset": 64, "sharpness_steps": 5, "name": "tiny-sharpness"}
    return preset("demo").replace(**{**base, **changes}).validate()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    rng = torch.get_rng_state()
    on = train(tiny(track_sharpness=True), runs_dir=root)[0]
    assert torch.equal(torch.get_rng_state(), rng)  # the tracker draws from its own generator only
    off = train(tiny(track_sharpness=False), runs_dir=root)[0]
    return on, off


def test_logged_every_epoch_of_every_round_when_on_and_never_when_off(runs):
    on, off = runs
    assert [(m["round"], m["epoch"]) for m in on.metrics()] == [(r, e) for r in (0, 1) for e in (1, 2, 3)]
    assert all(isinstance(m["sharpness"], float) and math.isfinite(m["sharpness"]) and m["sharpness"] > 0
               for m in on.metrics())
    assert not any("sharpness" in m for m in off.metrics())


def test_training_is_identical_with_and_without_tracking(runs):
    on, off = runs
    keep = lambda ms: [{k: v for k, v in m.items() if k not in ("epoch_time", "sharpness")} for m in ms]  # noqa: E731
    assert keep(on.metrics()) == keep(off.metrics())  # train_loss, test_acc, ... bit for bit
    assert on.summary().rounds == off.summary().rounds
    for r in (0, 1):
        a, b = on.load_state_dict(r), off.load_state_dict(r)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_last_epoch_value_tracks_the_full_lambda_max(runs):
    """select=last: the saved model is the last epoch's, so the full Lanczos λ_max (converged, tol 1e-6) of it on
    the tracker's subset bounds the tracked value from above (a Ritz value) and 5 warm steps get close."""
    on, _ = runs
    cfg = on.config()
    data = load(cfg.data, seed=cfg.seed)
    batches = hessian.training_batches(data.train, cfg.sharpness_subset,
                                       generator=torch.Generator().manual_seed(cfg.seed))
    for r in (0, 1):
        model = create(cfg.model.arch, num_classes=10, in_channels=1, image_size=8, width=cfg.model.width)
        model.load_state_dict(on.load_state_dict(r))
        full = hessian.eigenvalues(model, batches, k=1, tol=1e-6, max_iter=300).values[0]
        tracked = [m["sharpness"] for m in on.metrics() if m["round"] == r][-1]
        assert tracked <= full * (1 + 1e-4)
        assert tracked == pytest.approx(full, rel=0.01)  # measured: 1e-4


@pytest.mark.parametrize("field, value", [("sharpness_steps", 0), ("sharpness_steps", 201), ("sharpness_subset", 8),
                                          ("track_sharpness", "yes"), ("sharpness_subset", 1.5)])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"^{field} must be") as e:
        preset("demo").replace(**{field: value}).validate()
    assert e.value.field == field
