"""sdcore.data: splits, label noise, batches, augmentation, and every on-disk format on fabricated files."""
from __future__ import annotations

import pickle
import struct
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets
import torchvision.datasets.utils
from PIL import Image

from sdcore.config import DataConfig, RunConfig
from sdcore.data import (
    BatchTransform,
    DataBundle,
    DataError,
    LoaderSource,
    TensorSource,
    check_available,
    crop_flip,
    load,
    size_warnings,
    steps_per_epoch,
    train_split_size,
)

DIGITS_N = 1797


def _rows(x: torch.Tensor) -> list[bytes]:
    return [r.numpy().tobytes() for r in x]


def _epoch(source, batch_size=100, **kw):
    """All (idx, x, y) of one epoch, concatenated."""
    kw = {"shuffle": False, "augment": False, **kw}
    parts = list(source.batches(batch_size, **kw))
    return tuple(torch.cat(p) for p in zip(*parts))


def _pixels(source, x: torch.Tensor) -> torch.Tensor:
    """Normalized batch back to 0..255 uint8, to compare against the pixels written to disk."""
    t = source.transform
    return (x * t.std + t.mean).mul(255).round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load(DataConfig(), seed=0)


# ---------------------------------------------------------------- digits splits

def test_digits_split_sizes_partition_the_dataset(digits):
    from sklearn.datasets import load_digits

    assert (len(digits.train), len(digits.val), len(digits.test)) == (1294, 144, 359)
    assert (digits.num_classes, digits.in_channels, digits.image_size) == (10, 1, 8)
    parts = [_rows(s.x) for s in (digits.train, digits.val, digits.test)]
    every = Counter(r for p in parts for r in p)
    # the digits images are pairwise distinct, so equal multisets means a disjoint cover
    assert every == Counter(_rows(torch.from_numpy(load_digits().images / 16.0).float()[:, None]))


def test_digits_test_split_fixed_but_val_follows_seed(digits):
    other = load(DataConfig(), seed=1)
    assert torch.equal(digits.test.x, other.test.x) and torch.equal(digits.test.y, other.test.y)
    assert set(_rows(digits.val.x)) != set(_rows(other.val.x))


def test_digits_same_seed_reproduces_everything():
    cfg = DataConfig(label_noise=0.2, subset=500)
    a, b = load(cfg, seed=3), load(cfg, seed=3)
    for s, t in [(a.train, b.train), (a.val, b.val), (a.test, b.test)]:
        assert torch.equal(s.x, t.x) and torch.equal(s.y, t.y)
    assert torch.equal(a.noise_mask, b.noise_mask)


def test_digits_splits_are_stratified(digits):
    total = torch.bincount(torch.cat([digits.train.y, digits.val.y, digits.test.y]), minlength=10)
    test = torch.bincount(digits.test.y, minlength=10)
    assert ((test - 0.2 * total).abs() <= 1).all()
    pool = total - test
    val = torch.bincount(digits.val.y, minlength=10)
    assert ((val - len(digits.val) / pool.sum() * pool).abs() <= 1).all()


def test_zero_val_fraction_gives_empty_val():
    b = load(DataConfig(val_fraction=0.0), seed=0)
    assert len(b.val) == 0 and b.val.num_batches(64) == 0 and list(b.val.batches(64, shuffle=True, augment=True)) == []
    assert len(b.train) == DIGITS_N - 359


# ---------------------------------------------------------------- label noise and subset

def test_label_noise_flips_exactly_the_requested_count(digits):
    noisy = load(DataConfig(label_noise=0.3), seed=0)
    n = len(noisy.train)
    assert int(noisy.noise_mask.sum()) == round(0.3 * n)
    assert torch.equal(noisy.noise_mask, noisy.train.y != noisy.train_clean_y)
    # noise comes after the splits: same examples, same clean labels, untouched val/test
    assert torch.equal(noisy.train_clean_y, digits.train.y) and torch.equal(noisy.train.x, digits.train.x)
    assert torch.equal(noisy.val.y, digits.val.y) and torch.equal(noisy.test.y, digits.test.y)
    assert not digits.noise_mask.any() and torch.equal(digits.train_clean_y, digits.train.y)
    flipped = noisy.train.y[noisy.noise_mask]
    assert flipped.min() >= 0 and flipped.max() < 10
    assert len(flipped.unique()) == 10  # the wrong class is drawn over all classes
    assert noisy.noise_mask.dtype == torch.bool and noisy.train_clean_y.dtype == torch.int64


def test_label_noise_depends_on_seed():
    a = load(DataConfig(label_noise=0.3, val_fraction=0.0), seed=0)
    b = load(DataConfig(label_noise=0.3, val_fraction=0.0), seed=1)
    assert not torch.equal(a.noise_mask, b.noise_mask)


def test_subset_keeps_a_stratified_seeded_pick(digits):
    small = load(DataConfig(subset=100), seed=0)
    assert len(small.train) == 100 and len(small.noise_mask) == 100
    assert set(_rows(small.train.x)) <= set(_rows(digits.train.x))
    assert torch.equal(small.val.x, digits.val.x)  # the subset is taken after carving val
    assert (torch.bincount(small.train.y, minlength=10) - 10).abs().max() <= 1


def test_subset_larger_than_train_is_a_data_error():
    with pytest.raises(DataError, match=r"data\.subset=5000 exceeds the 1294 training examples"):
        load(DataConfig(subset=5000), seed=0)
    with pytest.raises(DataError, match=r"data\.subset=5000 exceeds the 1294 training examples.*at most 1294"):
        check_available(DataConfig(subset=5000))  # refused before a run is queued, without reading the images
    check_available(DataConfig(subset=1294))


@pytest.mark.parametrize("val_fraction", [0.0, 0.1, 0.25, 0.5])
def test_train_split_size_without_reading_equals_what_load_splits_off(val_fraction):
    cfg = DataConfig(val_fraction=val_fraction)
    assert train_split_size(cfg) == len(load(cfg, seed=3).train)
    assert train_split_size(DataConfig(name="cifar10", val_fraction=0.1)) == 45000
    assert train_split_size(DataConfig(name="imagefolder")) is None  # only reading the folder tells


def test_steps_per_epoch_keeps_the_last_partial_batch():
    base = RunConfig()
    assert steps_per_epoch(base.replace(**{"optim.batch_size": 64})) == 21  # 1294 digits = 20 x 64 + 14
    assert steps_per_epoch(base.replace(**{"optim.batch_size": 64, "data.subset": 128})) == 2
    assert steps_per_epoch(base.replace(**{"optim.batch_size": 65536})) == 1
    assert steps_per_epoch(base.replace(**{"data.name": "imagefolder"})) is None
    assert steps_per_epoch(base.replace(**{"data.name": "imagefolder", "data.subset": 100,
                                           "optim.batch_size": 32})) == 4


def test_size_warnings_say_what_a_batch_larger_than_the_split_does():
    cfg = RunConfig(epochs=10).replace(**{"optim.batch_size": 65536})
    (warning,) = size_warnings(cfg, 1294)
    assert warning == ("optim.batch_size=65536 is larger than the 1294 training examples (digits after the "
                       "validation hold-out): every epoch is a single step on all 1294 at once, so each network "
                       "gets only 10 optimizer steps (one per epoch). A batch smaller than 1294 takes several per "
                       "epoch.")
    (warning,) = size_warnings(cfg.replace(**{"data.subset": 300, "epochs": 1}), 1294)
    assert "larger than the 300 training examples (data.subset)" in warning and "only 1 optimizer step " in warning
    assert size_warnings(cfg.replace(**{"optim.batch_size": 1294}), 1294) == []  # exactly one full batch: intended
    assert size_warnings(cfg.replace(**{"optim.batch_size": 64}), 1294) == []
    assert size_warnings(cfg.replace(**{"data.subset": 5000}), 1294) == []  # an error, not a warning (above)


# ---------------------------------------------------------------- batches

def test_shuffled_epoch_covers_every_index_once_with_consistent_xy(digits):
    src = digits.train
    batches = list(src.batches(96, shuffle=True, augment=False, generator=torch.Generator().manual_seed(0)))
    assert len(batches) == src.num_batches(96) == 14
    assert [len(b[0]) for b in batches] == [96] * 13 + [1294 - 13 * 96]  # last partial batch kept
    idx, x, y = (torch.cat(p) for p in zip(*batches))
    assert torch.equal(idx.sort().values, torch.arange(len(src)))
    assert not torch.equal(idx, torch.arange(len(src)))
    assert torch.equal(y, src.y[idx])
    assert torch.allclose(x, (src.x[idx] - src.transform.mean) / src.transform.std)
    assert idx.dtype == y.dtype == torch.int64 and x.dtype == torch.float32
    assert x.shape == (1294, 1, 8, 8) and x.device == y.device == idx.device == torch.device("cpu")


def test_batch_order_follows_the_generator(digits):
    def order(seed):
        return _epoch(digits.train, shuffle=True, generator=torch.Generator().manual_seed(seed))[0]

    assert torch.equal(order(5), order(5))
    assert not torch.equal(order(5), order(6))
    assert torch.equal(_epoch(digits.train)[0], torch.arange(len(digits.train)))  # no shuffle: index order


def test_normalization_centres_the_digits_train_split(digits):
    x = _epoch(digits.train)[1]
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def test_crop_flip_zero_shift_is_identity_and_shifts_move_pixels():
    x = torch.randint(0, 256, (3, 2, 5, 5), dtype=torch.uint8)
    zero, no = torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.bool)
    assert torch.equal(crop_flip(x, zero, zero, no, pad=2), x)
    assert torch.equal(crop_flip(x, zero, zero, ~no, pad=2), x.flip(3))
    one = torch.ones(3, dtype=torch.long)
    down = crop_flip(x, -one, zero, no, pad=2)  # row i reads row i-1: the image moves down one row
    assert torch.equal(down[:, :, 1:], x[:, :, :-1]) and (down[:, :, 0] == 0).all()
    left = crop_flip(x, zero, 2 * one, no, pad=2)  # column j reads j+2, zero-padded on the right
    assert torch.equal(left[..., :3], x[..., 2:]) and (left[..., 3:] == 0).all()


def _shift_candidates(x: torch.Tensor, pad: int, flip: bool) -> torch.Tensor:
    """[K, B, C, H, W]: x under every shift in [-pad, pad]^2, flipped or not."""
    b = len(x)
    out = []
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            full = lambda v: torch.full((b,), v, dtype=torch.long)  # noqa: E731
            out.append(crop_flip(x, full(dy), full(dx), torch.full((b,), flip), pad=pad))
    return torch.stack(out)


def _matches(aug: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """bool [B]: aug[b] equals (to float rounding) one of candidates[:, b]."""
    return ((candidates - aug[None]).abs() < 1e-4).flatten(2).all(2).any(0)


def test_digits_augmentation_shifts_but_never_flips(digits):
    src = digits.train
    gen = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    idx, x_aug, _ = _epoch(src, augment=True, generator=gen())
    idx2, x_aug2, _ = _epoch(src, augment=True, generator=gen())
    assert torch.equal(idx, idx2) and torch.equal(x_aug, x_aug2)  # deterministic given the generator
    plain = _epoch(src)[1]
    assert x_aug.shape == plain.shape and not torch.equal(x_aug, plain)
    raw = src.transform.mean + x_aug * src.transform.std  # back to [0, 1] pixels
    assert src.transform.pad == 1 and not src.transform.flip
    assert _matches(raw, _shift_candidates(src.x[idx], 1, flip=False)).all()


def test_flip_datasets_flip_about_half_the_images():
    x = torch.randint(0, 256, (400, 3, 6, 6), dtype=torch.uint8)
    t = BatchTransform(mean=(0.0,) * 3, std=(1 / 255,) * 3, pad=2, flip=True, device=torch.device("cpu"))
    src = TensorSource(x=x, y=torch.zeros(400, dtype=torch.long), transform=t)
    idx, out, _ = _epoch(src, augment=True, generator=torch.Generator().manual_seed(0))
    # mean 0, std 1/255: the normalized values are the raw 0..255 pixels
    flipped = _matches(out, _shift_candidates(x[idx], 2, flip=True))
    straight = _matches(out, _shift_candidates(x[idx], 2, flip=False))
    assert (flipped | straight).all()
    assert 150 < int(flipped.sum()) < 250


# ---------------------------------------------------------------- torchvision formats, fabricated

@pytest.fixture
def no_md5(monkeypatch):
    # torchvision compares the md5 of the real CIFAR/SVHN files (CIFAR10._check_integrity for the data,
    # and _load_meta calls check_integrity on batches.meta directly). Fabricated files cannot match, so
    # accept any md5 at the one function all of those calls reach; file existence is still checked.
    monkeypatch.setattr(torchvision.datasets.utils, "check_md5", lambda *a, **k: True)


def _images(rng, n, c, h, w=None):
    return rng.integers(0, 256, (n, c, h, w or h), dtype=np.uint8)


def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def _write_cifar10(root: Path, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    folder = root / "cifar-10-batches-py"
    names = [f"class{k}" for k in range(10)]
    train_x, train_y = _images(rng, 20, 3, 32), np.arange(20) % 10
    test_x, test_y = _images(rng, 10, 3, 32), np.arange(10)[::-1].copy()
    for k in range(5):  # data: [N, 3072] rows = R plane, G plane, B plane, as in the real batches
        part = slice(4 * k, 4 * k + 4)
        _pickle(folder / f"data_batch_{k + 1}", {"data": train_x[part].reshape(4, -1), "labels": list(train_y[part])})
    _pickle(folder / "test_batch", {"data": test_x.reshape(10, -1), "labels": list(test_y)})
    _pickle(folder / "batches.meta", {"label_names": names})
    return train_x, train_y, test_x, test_y, names


def _write_cifar100(root: Path, rng):
    folder = root / "cifar-100-python"
    names = [f"fine{k}" for k in range(100)]
    train_x, train_y = _images(rng, 200, 3, 32), np.arange(200) % 100
    test_x, test_y = _images(rng, 100, 3, 32), (np.arange(100) * 7) % 100
    for split, x, y in [("train", train_x, train_y), ("test", test_x, test_y)]:
        _pickle(folder / split, {"data": x.reshape(len(x), -1), "fine_labels": list(y), "coarse_labels": list(y // 5)})
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": [f"c{k}" for k in range(20)]})
    return train_x, train_y, test_x, test_y, names


def _write_svhn(root: Path, rng):
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for split, n in [("train", 30), ("test", 10)]:
        x, digit = _images(rng, n, 3, 32), np.arange(n) % 10
        # the .mat holds X as H x W x 3 x N and y as N x 1 with the digit 0 stored as label 10
        stored = np.where(digit == 0, 10, digit).astype(np.uint8)[:, None]
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": stored})
        out += [x, digit]
    return (*out, [str(k) for k in range(10)])


def _write_idx(path: Path, arr: np.ndarray) -> None:
    """IDX (ubyte): magic 0 0 0x08 ndim, then each dimension as big-endian uint32, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes())


def _mnist_writer(folder: str):
    def write(root: Path, rng):
        raw = root / folder / "raw"  # torchvision 0.29: <root>/<ClassName>/raw/<name>, uncompressed
        out = []
        for prefix, n in [("train", 30), ("t10k", 10)]:
            x, y = _images(rng, n, 1, 28), (np.arange(n) * 3 % 10).astype(np.uint8)
            _write_idx(raw / f"{prefix}-images-idx3-ubyte", x[:, 0])
            _write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
            out += [x, y]
        return (*out, list(getattr(torchvision.datasets, folder).classes))
    return write


FORMATS = {
    "cifar10": _write_cifar10,
    "cifar100": _write_cifar100,
    "svhn": _write_svhn,
    "mnist": _mnist_writer("MNIST"),
    "fashionmnist": _mnist_writer("FashionMNIST"),
}


@pytest.mark.parametrize("name", FORMATS)
def test_torchvision_formats_load_exact_pixels_and_labels(name, tmp_path, no_md5):
    train_x, train_y, test_x, test_y, names = FORMATS[name](tmp_path, np.random.default_rng(0))
    b = load(DataConfig(name=name, root=str(tmp_path), val_fraction=0.0), seed=0)
    c, s = train_x.shape[1], train_x.shape[2]
    assert (b.num_classes, b.in_channels, b.image_size, b.class_names) == (len(names), c, s, names)
    for src, x, y in [(b.train, train_x, train_y), (b.test, test_x, test_y)]:
        assert isinstance(src, TensorSource) and src.x.dtype == torch.uint8
        idx, xb, yb = _epoch(src)  # val_fraction 0: the split is the file's order
        assert torch.equal(_pixels(src, xb), torch.from_numpy(x)[idx])
        assert torch.equal(yb, torch.from_numpy(y).long()[idx])
    assert b.train.transform.flip == (name in ("cifar10", "cifar100", "fashionmnist"))
    assert b.train.transform.pad == (4 if s == 32 else 2)


def test_torchvision_val_is_carved_from_train(tmp_path, no_md5):
    train_x, *_ = _write_cifar10(tmp_path, np.random.default_rng(0))
    b = load(DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.5, label_noise=0.5), seed=0)
    assert (len(b.train), len(b.val), len(b.test)) == (10, 10, 10)
    assert torch.bincount(b.val.y, minlength=10).tolist() == [1] * 10  # stratified: one per class
    carved = set(_rows(b.train.x)) | set(_rows(b.val.x))
    assert carved == set(_rows(torch.from_numpy(train_x))) and len(carved) == 20
    assert int(b.noise_mask.sum()) == 5


def test_corrupted_files_are_a_data_error(tmp_path):
    _write_cifar10(tmp_path, np.random.default_rng(0))  # real md5 check: fabricated files fail it
    with pytest.raises(DataError, match="failed torchvision's check") as e:
        load(DataConfig(name="cifar10", root=str(tmp_path)), seed=0)
    assert str(tmp_path.resolve()) in str(e.value)


@pytest.mark.parametrize("name", [*FORMATS, "imagefolder"])
def test_missing_dataset_names_the_absolute_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        load(DataConfig(name=name, root="./nowhere"), seed=0)
    msg = str(e.value)
    assert type(e.value) is DataError and "\n" not in msg
    assert str(tmp_path.resolve() / "nowhere") in msg and "not found" in msg


def test_missing_cifar10_message_says_what_and_how(tmp_path):
    with pytest.raises(DataError) as e:
        load(DataConfig(name="cifar10", root=str(tmp_path)), seed=0)
    msg = str(e.value)
    for part in ["cifar-10-batches-py/data_batch_1", "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/",
                 "data.download=true"]:
        assert part in msg


@pytest.mark.parametrize("name, module, func", [
    ("cifar10", "cifar", "download_and_extract_archive"),
    ("mnist", "mnist", "download_and_extract_archive"),
    ("svhn", "svhn", "download_url"),
])
def test_download_without_network_is_a_data_error(name, module, func, tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError(OSError("Temporary failure in name resolution"))

    monkeypatch.setattr(getattr(torchvision.datasets, module), func, offline)
    with pytest.raises(DataError, match="download into .* failed") as e:
        load(DataConfig(name=name, root=str(tmp_path), download=True), seed=0)
    assert str(tmp_path.resolve()) in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- imagefolder

CLASSES = ["cat", "dog", "emu"]


def _png(path: Path, rng, size=8, mode="RGB") -> np.ndarray:
    """Write a random PNG; return the RGB uint8 [3, H, W] pixels a loader should produce."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(arr, mode).save(path)
    rgb = arr if mode == "RGB" else np.repeat(arr[..., None], 3, 2)
    return rgb.transpose(2, 0, 1)


def _write_plain_tree(root: Path, rng) -> dict[str, tuple[np.ndarray, int]]:
    """train/<class>/*.png (6 each) and val/<class>/*.png (2 each); path -> (pixels, class index)."""
    files = {}
    for k, c in enumerate(CLASSES):
        for split, n in [("train", 6), ("val", 2)]:
            for i in range(n):
                p = root / split / c / f"{i}.png"
                files[str(p)] = (_png(p, rng), k)
    return files


def _write_tiny_imagenet_tree(root: Path, rng) -> dict[str, tuple[np.ndarray, int]]:
    """TinyImageNet: train/<wnid>/images/*, val/images/* labelled by val/val_annotations.txt."""
    files, lines = {}, []
    wnids = ["n01443537", "n01629819", "n01641577"]
    for k, w in enumerate(wnids):
        for i in range(5):
            p = root / "train" / w / "images" / f"{w}_{i}.png"
            files[str(p)] = (_png(p, rng), k)
        for i in range(2):
            name = f"val_{k * 2 + i}.png"
            files[str(root / "val" / "images" / name)] = (_png(root / "val" / "images" / name, rng), k)
            lines.append(f"{name}\t{w}\t0\t0\t7\t7")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return files


def _check_loader(src: LoaderSource, files, *, shuffle: bool) -> None:
    idx, x, y = _epoch(src, batch_size=4, shuffle=shuffle, generator=torch.Generator().manual_seed(0))
    assert idx.device == x.device == y.device == src.y.device
    assert x.shape == (len(src), 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    idx, pixels, y = idx.cpu(), _pixels(src, x).cpu(), y.cpu()
    assert torch.equal(idx.sort().values, torch.arange(len(src)))
    for i, px, label in zip(idx.tolist(), pixels, y.tolist()):
        want_px, want_y = files[src.paths[i]]
        assert torch.equal(px, torch.from_numpy(want_px)) and label == want_y == int(src.y[i])


@pytest.mark.parametrize("writer", [_write_plain_tree, _write_tiny_imagenet_tree])
def test_imagefolder_layouts(writer, tmp_path):
    files = writer(tmp_path, np.random.default_rng(0))
    b = load(DataConfig(name="imagefolder", root=str(tmp_path), val_fraction=0.2), seed=0)
    assert (b.num_classes, b.in_channels, b.image_size) == (3, 3, 8)
    assert (len(b.train) + len(b.val), len(b.test)) == (len(files) - 6, 6)
    assert set(b.train.paths).isdisjoint(b.val.paths) and all(Path(p).is_relative_to(tmp_path) for p in b.test.paths)
    assert b.train.transform.flip and b.train.transform.pad == 1
    for src in (b.train, b.val, b.test):
        assert isinstance(src, LoaderSource)
        _check_loader(src, files, shuffle=True)


def test_loader_source_with_workers_matches_files_and_order(tmp_path):
    files = _write_plain_tree(tmp_path, np.random.default_rng(0))
    b = load(DataConfig(name="imagefolder", root=str(tmp_path), val_fraction=0.0), seed=0)
    assert b.train.num_workers == 0  # a handful of images: decoding in-process is cheaper
    order = _epoch(b.train, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3))[0]
    b.train.num_workers = 2
    _check_loader(b.train, files, shuffle=False)
    with_workers = _epoch(b.train, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(order, with_workers)  # workers decode only; the order is the generator's


def test_imagefolder_resizes_and_converts_odd_images(tmp_path):
    rng = np.random.default_rng(0)
    _write_plain_tree(tmp_path, rng)
    _png(tmp_path / "train" / "cat" / "big.png", rng, size=12)
    _png(tmp_path / "val" / "dog" / "grey.png", rng, mode="L")
    b = load(DataConfig(name="imagefolder", root=str(tmp_path), val_fraction=0.0), seed=0)
    _, x, _ = _epoch(b.train)
    assert x.shape == (19, 3, 8, 8)
    grey = b.test.paths.index(str(tmp_path / "val" / "dog" / "grey.png"))
    px = _pixels(b.test, _epoch(b.test)[1])[grey]
    assert torch.equal(px[0], px[1]) and torch.equal(px[1], px[2])


def test_imagefolder_test_class_unknown_to_train_is_a_data_error(tmp_path):
    rng = np.random.default_rng(0)
    _write_plain_tree(tmp_path, rng)
    _png(tmp_path / "val" / "yak" / "0.png", rng)
    with pytest.raises(DataError, match="classes missing from train/: yak"):
        load(DataConfig(name="imagefolder", root=str(tmp_path)), seed=0)


def test_tiny_imagenet_annotation_naming_a_missing_image_is_a_data_error(tmp_path):
    _write_tiny_imagenet_tree(tmp_path, np.random.default_rng(0))
    (tmp_path / "val" / "images" / "val_3.png").unlink()
    with pytest.raises(DataError, match="lists 1 images that are missing, e.g. .*val_3.png"):
        load(DataConfig(name="imagefolder", root=str(tmp_path)), seed=0)


@pytest.mark.gpu
def test_cuda_batches_equal_cpu_batches(tmp_path):
    files = _write_plain_tree(tmp_path, np.random.default_rng(0))
    for cfg in (DataConfig(label_noise=0.2), DataConfig(name="imagefolder", root=str(tmp_path))):
        cpu, gpu = load(cfg, seed=0), load(cfg, seed=0, device="cuda")
        assert torch.equal(cpu.noise_mask, gpu.noise_mask.cpu())
        for s, t in [(cpu.train, gpu.train), (cpu.test, gpu.test)]:
            kw = {"batch_size": 7, "shuffle": True, "augment": True}
            i, x, y = _epoch(s, generator=torch.Generator().manual_seed(1), **kw)
            gi, gx, gy = _epoch(t, generator=torch.Generator().manual_seed(1), **kw)
            assert gx.device.type == gy.device.type == gi.device.type == "cuda"
            assert torch.equal(i, gi.cpu()) and torch.equal(y, gy.cpu()) and torch.allclose(x, gx.cpu(), atol=1e-5)
    gpu.train.num_workers = 2  # pinned memory + workers
    _check_loader(gpu.train, files, shuffle=True)
