"""The fast-path switches: bf16 autocast, channels_last and torch.compile (with its fallback)."""
import warnings

import pytest
import torch

from sdcore.config import ConfigError, preset
from sdcore.training import train

TINY = {"epochs": 1, "rounds": 0, "data.subset": 192, "model.width": 0.25, "optim.batch_size": 64}


@pytest.mark.parametrize("name", ["demo", "demo-pskd", "demo-pskd-byot-dmfl"])
def test_bf16_trains_with_fp32_master_weights(name, tmp_path):
    """PS-KD under bf16 autocast keeps its memory in float32 (it once failed at the first step)."""
    run, (r,) = train(preset(name).replace(precision="bf16", **TINY), runs_dir=tmp_path)
    assert run.status() == "done"
    assert all(p.dtype == torch.float32 for p in r.model.parameters())
    assert 0 <= run.summary().rounds[0].test_acc <= 100


def test_pskd_memory_stays_float32_under_bf16_autocast():
    from sdcore.methods.single import loss_fn

    cfg = preset("demo-pskd").replace(epochs=4)
    model = torch.nn.Linear(6, 10)
    x, y, idx = torch.randn(5, 6), torch.arange(5), torch.tensor([0, 2, 4, 6, 8])
    memory = torch.nn.functional.one_hot(torch.arange(10) % 10, 10).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, z, _ = loss_fn(cfg, state={"memory": memory}, epoch={"pskd_weight": 0.3})(model, x, y, idx)
    assert z.dtype == torch.bfloat16 and memory.dtype == torch.float32
    torch.testing.assert_close(memory[idx], z.detach().float().softmax(1))  # the softmax taken in float32


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


@pytest.mark.slow
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


@pytest.mark.gpu  # host-sync detection needs CUDA
@pytest.mark.parametrize("changes", [{}, {"precision": "bf16", "channels_last": True}, {"method": "byot",
                                     "model.exits": True, "alpha": 0.7},
                                     {"method": "pskd+byot+dmfl", "rounds": 0, "model.exits": True,
                                      "byot_style": "zhang"},
                                     {"method": "pskd+byot+dmfl", "rounds": 0, "model.exits": True,
                                      "byot_style": "luan", "precision": "bf16"}])
def test_the_step_loop_never_waits_for_the_gpu(changes):
    """CUDA's sync debug mode raises on any device-to-host sync (an .item(), a nonzero, a bool of a tensor)
    between the first step (lazy initialisation may sync) and the last one (the epoch's metrics are read
    once, after the loop). Written without a GPU to run it on: a session with one should see it pass."""
    from sdcore import terms
    from sdcore.data import load
    from sdcore.engine import build_optimizer, build_scheduler, train_epoch
    from sdcore.methods.kd_rounds import label_loss
    from sdcore.methods.single import loss_fn as single_loss_fn
    from sdcore.models import model_for_round

    cfg = preset("demo").replace(**{**TINY, "data.augment": True, "data.subset": 640, **changes}).validate()
    device = torch.device("cuda")
    data = load(cfg.data, seed=0, device=device)
    model = model_for_round(cfg, 0, num_classes=data.num_classes, in_channels=data.in_channels,
                            image_size=data.image_size).to(device)
    o = cfg.optim
    steps = data.train.num_batches(o.batch_size)
    opt = build_optimizer(model, o)
    sched = build_scheduler(opt, o, epochs=1, steps_per_epoch=steps)
    memory = torch.nn.functional.one_hot(data.train.y, data.num_classes).float()  # PS-KD's, where used
    loss = (single_loss_fn(cfg, state={"memory": memory}, epoch={"pskd_weight": 0.5}) if terms.recipe(cfg) == "single"
            else label_loss)

    def watch(step: int) -> None:
        torch.cuda.set_sync_debug_mode("error" if step < steps else "default")

    try:
        stats = train_epoch(model, data.train, loss, opt, sched, batch_size=o.batch_size, grad_clip=o.grad_clip,
                            augment=True, generator=torch.Generator().manual_seed(0), on_step=watch,
                            autocast=torch.bfloat16 if cfg.precision == "bf16" else None,
                            channels_last=cfg.channels_last)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert steps >= 3 and stats["train_loss"] > 0
