"""MNIST-1D: sdcore's transcription of the published recipe against the reference package (a test-only
dependency, requirements-dev.txt), the dataset as sdlab loads it, and sdlab's nets training on it."""
from __future__ import annotations

import ast
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sdcore import mnist1d
from sdcore.config import DataConfig
from sdcore.data import check_available, load, train_split_size
from sdcore.models import create

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def reference():
    """make_dataset(size, seed) of the published package, with the global RNGs it seeds (Python's and numpy's)
    put back afterwards."""
    from mnist1d.data import get_dataset_args, make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()

    def make(size: int, seed: int = 42) -> dict:
        args = get_dataset_args()
        args.num_samples, args.seed = size, seed
        return make_dataset(args)
    yield make
    random.setstate(py_state)
    np.random.set_state(np_state)


@pytest.mark.parametrize("size, seed", [pytest.param(5000, 42, marks=pytest.mark.slow), (735, 42), (200, 7)])
def test_generator_equals_the_published_package_bit_for_bit(reference, size, seed):
    """The published dataset (5000, seed 42), a size that is not a multiple of 10 (rounded down to 73 per class)
    and another seed: the same arrays exactly, not approximately."""
    ref = reference(size, seed)
    x_train, y_train, x_test, y_test = mnist1d.generate(size, seed=seed)
    for ours, theirs in ((x_train, ref["x"]), (y_train, ref["y"]), (x_test, ref["x_test"]), (y_test, ref["y_test"])):
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    assert len(x_train) == mnist1d.train_size(size)


def test_chunked_generation_draws_the_same_stream(reference, monkeypatch):
    """Examples are transformed in chunks (memory at 10^6 examples); chunks of 64 give the reference's arrays too."""
    monkeypatch.setattr(mnist1d, "_CHUNK", 64)
    ours = mnist1d.generate.__wrapped__(250, seed=3)  # uncached: the chunk size is not part of the cache key
    ref = reference(250, 3)
    assert np.array_equal(ours[0], ref["x"]) and np.array_equal(ours[2], ref["x_test"])


def test_templates_equal_the_published_ones(reference):
    from mnist1d.data import get_templates

    assert np.array_equal(mnist1d.templates(), get_templates()["x"])


def test_generated_arrays_are_cached_and_read_only():
    a, b = mnist1d.generate(300), mnist1d.generate(300)
    assert a[0] is b[0] and not a[0].flags.writeable
    assert not np.array_equal(mnist1d.generate(300, seed=1)[0], a[0])
    with pytest.raises(ValueError, match="at least 10"):
        mnist1d.generate(9)


def test_sdcore_never_imports_the_mnist1d_package():
    """It is a test-only dependency: no module of sdcore (or the app) imports it, only tests."""
    for path in [*ROOT.glob("sdcore/**/*.py"), *ROOT.glob("app/**/*.py"), *ROOT.glob("pages/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            assert not any(n == "mnist1d" or n.startswith("mnist1d.") for n in names), path


def test_loaded_as_one_channel_1x40_images_with_the_published_test_split(reference):
    ref = reference(1000)
    cfg = DataConfig(name="mnist1d", size=1000)
    check_available(cfg)
    b = load(cfg, seed=0)
    assert b.shapes == dict(num_classes=10, in_channels=1, image_size=40, height=1, width=40)
    assert b.class_names == list("0123456789")
    assert b.test.x.shape == (200, 1, 1, 40) and b.test.x.dtype == torch.float32
    assert torch.equal(b.test.x[:, 0, 0], torch.from_numpy(ref["x_test"]).float())
    assert b.test.y.tolist() == ref["y_test"].tolist()
    assert len(b.train) + len(b.val) == 800 and len(b.train) == train_split_size(cfg) == 720
    # the inputs are the recipe's standardized arrays themselves (mean 0, std 1), not normalized again
    _, x, _ = next(b.test.batches(200, shuffle=False, augment=False))
    assert torch.equal(x, b.test.x)
    # and augmentation leaves them alone (the recipe translates already; a vertical shift would empty the row)
    _, xa, _ = next(b.train.batches(len(b.train), shuffle=False, augment=True, generator=torch.Generator()))
    assert torch.equal(xa, b.train.x)


@pytest.mark.parametrize("arch", ["cnn", "resnet8"])
def test_sdlab_nets_and_their_exits_take_a_1x40_signal(arch):
    torch.manual_seed(0)
    net = create(arch, num_classes=10, in_channels=1, image_size=40, width=0.25, exits=True).eval()
    x = torch.randn(4, 1, 1, 40)
    with torch.no_grad():
        exits = net.forward_exits(x)
        assert net(x).shape == (4, 10)
    assert len(exits.logits) == 3 and all(l.shape == (4, 10) for l in exits.logits)
    assert len({f.shape for f in exits.features}) == 1  # every exit's feature has the deepest one's size


TINY = {"epochs": 5, "rounds": 1, "data.size": 500, "data.subset": 300, "data.label_noise": 0.0,
        "optim.batch_size": 16}


def test_the_mnist1d_preset_learns_it(trained):
    """The preset's teacher and one student for 5 epochs on 300 clean examples of 500 generated: both far above
    chance (10%), so the 1x40 signals reach the nets the right way round."""
    run = trained("mnist1d", **TINY)
    accs = [r.test_acc for r in run.summary().rounds]
    assert len(accs) == 2 and accs[0] > 50 and accs[1] > 30, accs  # measured: 74 and 59


def test_byot_exits_and_a_resnet_train_on_it(trained):
    run = trained("mnist1d", **{**TINY, "method": "byot", "rounds": 0, "model.arch": "resnet8", "model.exits": True})
    (teacher,) = run.summary().rounds
    assert len(teacher.test["acc_exits"]) == 3 and teacher.test_acc > 30, teacher.test
