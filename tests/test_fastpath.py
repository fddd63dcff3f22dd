"""The fast-path switches: bf16 autocast, channels_last and torch.compile (with its fallback)."""
import warnings

import pytest
import torch

from sdcore.config import ConfigError, preset
from sdcore.methods import train

TINY = {"epochs": 1, "rounds": 0, "data.subset": 192, "model.width": 0.25, "optim.batch_size": 64}


def test_bf16_trains_with_fp32_master_weights(tmp_path):
    run, (r,) = train(preset("demo").replace(precision="bf16", **TINY), runs_dir=tmp_path)
    assert run.status() == "done"
    assert all(p.dtype == torch.float32 for p in r.model.parameters())
    assert 0 <= run.summary()["rounds"][0]["test_acc"] <= 100


def test_channels_last_matches_the_default_layout(tmp_path):
    _, (a,) = train(preset("demo").replace(**TINY), runs_dir=tmp_path / "a")
    _, (b,) = train(preset("demo").replace(channels_last=True, **TINY), runs_dir=tmp_path / "b")
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        torch.testing.assert_close(v, w.contiguous(), rtol=1e-4, atol=1e-5, msg=k)  # same numbers, other layout


def test_compile_falls_back_to_eager_with_a_warning(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no compiler here")
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no compiler here.*training eagerly"):
        run, _ = train(preset("demo").replace(compile=True, **TINY), runs_dir=tmp_path)
    assert run.status() == "done"


def test_compiled_training_equals_eager(tmp_path):
    """A real torch.compile (about 20-30 s on this CPU): same weights as eager training, to rounding."""
    _, (a,) = train(preset("demo").replace(**TINY), runs_dir=tmp_path / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would hide the compiled path
        _, (b,) = train(preset("demo").replace(compile=True, **TINY), runs_dir=tmp_path / "b")
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        torch.testing.assert_close(v, w, rtol=1e-3, atol=1e-4, msg=k)


def test_config_checks():
    with pytest.raises(ConfigError, match="precision must be fp32 or bf16"):
        preset("demo").replace(precision="fp16").validate()
