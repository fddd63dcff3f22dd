"""Pham et al.'s "data augmentation": AutoAugment's CIFAR-10 policy, batched and seeded, plus Cutout."""
import pytest
import torch

from sdcore.config import ConfigError, DataConfig, preset
from sdcore.data import BatchAutoAugment, BatchTransform, cutout, load


def test_batched_autoaugment_equals_one_image_at_a_time():
    aa = BatchAutoAugment()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), generator=g, dtype=torch.uint8)
    policy, fire, negative = aa.draw(64, g)
    batched = aa(x, policy, fire, negative)
    one_by_one = torch.cat([aa(x[i:i + 1], policy[i:i + 1], fire[i:i + 1], negative[i:i + 1]) for i in range(64)])
    assert torch.equal(batched, one_by_one)
    assert batched.dtype == torch.uint8 and batched.shape == x.shape
    assert not torch.equal(batched, x) and len(policy.unique()) > 10  # most sub-policies drawn, images changed
    # An image whose two operations both did not fire is left as it was.
    for i in range(64):
        ops = aa.policies[int(policy[i])]
        if fire[i, 0] > ops[0][1] and fire[i, 1] > ops[1][1]:
            assert torch.equal(batched[i], x[i])


def test_cutout_zeroes_a_clipped_square():
    x = torch.ones(2, 3, 8, 8)
    out = cutout(x, torch.tensor([4, 0]), torch.tensor([4, 0]), 4)
    assert (out[0] == 0).all(0).sum() == 16  # a full 4 x 4 square
    assert (out[1] == 0).all(0).sum() == 4  # centred on the corner: a 2 x 2 quarter inside the image
    assert torch.equal(out[0, :, 2:6, 2:6], torch.zeros(3, 4, 4))


def test_transform_is_seeded_and_only_augments_training_batches():
    t = BatchTransform(mean=(0.5,), std=(0.25,), pad=1, flip=False, device=torch.device("cpu"), policy="autoaugment",
                       image_size=8)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = t(x, t.draw(16, torch.Generator().manual_seed(1)))
    b = t(x, t.draw(16, torch.Generator().manual_seed(1)))
    c = t(x, t.draw(16, torch.Generator().manual_seed(2)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = BatchTransform(mean=(0.5,), std=(0.25,), pad=1, flip=False, device=torch.device("cpu"), image_size=8)
    assert torch.equal(t(x, None), plain(x, None))  # evaluation: no augmentation at all


def test_config_and_a_training_run(tmp_path):
    with pytest.raises(ConfigError, match="data.augment_policy"):
        preset("demo").replace(**{"data.augment_policy": "randaugment"}).validate()
    with pytest.raises(ConfigError, match="crop_flip when data.augment is false"):
        preset("demo").replace(**{"data.augment_policy": "autoaugment"}).validate()
    from sdcore.training import train

    cfg = preset("demo").replace(epochs=2, rounds=1, **{"data.subset": 200, "model.width": 0.25, "data.augment": True,
                                                         "data.augment_policy": "autoaugment"})
    run, rounds = train(cfg, runs_dir=tmp_path)
    assert run.status() == "done" and len(rounds) == 2
    data = load(DataConfig(augment=True, augment_policy="autoaugment", subset=100), seed=0)
    (_, x1, _), = [next(iter(data.train.batches(100, shuffle=False, augment=True,
                                               generator=torch.Generator().manual_seed(0))))]
    (_, x0, _), = [next(iter(data.train.batches(100, shuffle=False, augment=False)))]
    assert x1.shape == x0.shape and not torch.equal(x1, x0)
