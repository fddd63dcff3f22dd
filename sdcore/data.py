"""Datasets, splits, label noise and the batch iterator the training engine consumes.

``load(cfg, seed=..., device=...)`` returns a ``DataBundle`` of three ``Source``s (train / val / test).
A Source yields ``(idx, x, y)`` batches on the device: idx are positions in the split (the engine
keys cached teacher logits and PS-KD memory by them), x is normalized float32 [B, C, H, W].

Splits, in order, all from one CPU generator seeded by the run seed (so the same cfg + seed gives the
same examples, noise and batch order on any device):

1. test: the official test split; for ``digits`` (which has none) a fixed stratified 20% drawn with a
   constant seed, so every run is scored on the same images;
2. val: a stratified ``val_fraction`` of the remaining training pool;
3. subset: a stratified pick of ``cfg.subset`` training examples;
4. label noise: exactly round(label_noise * N_train) training labels moved to another class.

``mnist1d`` (sdcore/mnist1d.py) is generated from its published recipe and seed, ``data.size`` examples, and
split 80/20 into train and test as published; each signal is a one-channel 1x40 image [1, 1, 40].

``tensors`` is a person's own data: ``data.file``, a ``.npz`` (``np.savez``, read with allow_pickle=False) or a
``.pt`` (``torch.save`` of a dict of tensors, read with weights_only=True) holding

    x_train, x_test   images, uint8 (0..255) or float (any range): [N, C, H, W] or [N, H, W, C], told apart by
                      which of axes 1 and 3 has 1 or 3 entries (an optional ``layout`` entry, "nchw" or "nhwc",
                      decides when both or neither do, for any channel count); [N, H, W] grayscale; [N, L]
                      sequences, read as [N, 1, 1, L]; train and test with the same channels, height and width;
    y_train, y_test   class numbers 0..C-1, [N] (or [N, 1]; floats holding whole numbers are accepted); every
                      test class appears in training, and training has at least 2;
    classes           optional: the C class names (C may exceed the largest label + 1).

x_train is the training pool (val is carved from it as above), x_test the test split. Images are normalized
with x_train's per-channel mean and std (``data.normalize=imagenet``: ImageNet's, 3 channels only);
``data.augment`` crops but never flips (whether a mirror image keeps a class is not known). The file is read
whole and kept resident, so one holding more than half the machine's memory is refused before it is read.
Every problem is one DataError line naming the file and the key.

Small datasets are kept resident on the device (``TensorSource``: uint8 where the files are uint8)
and augmented there with batched tensor ops; ``imagefolder`` trees are decoded by DataLoader workers
(``LoaderSource``) and then go through the same device-side normalize/augment step.
"""
from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sdcore import files, mnist1d
from sdcore.config import DataConfig, RunConfig, show_value

# Added to the run seed for the split/noise stream, so it is not the same stream as an engine
# generator seeded with the bare seed (the two would draw correlated permutations).
_SPLIT_SALT = 0x5D1AB
_DIGITS_TEST_SEED = 0  # constant: the digits test split must not move with the run seed
_DIGITS_TEST_FRACTION = 0.2
# scikit-learn's 1797 digits less the fixed test split: the training pool every digits run splits val from
_DIGITS_POOL = 1797 - round(_DIGITS_TEST_FRACTION * 1797)
# Below this many images DataLoader worker start-up (each epoch) costs more than decoding in-process.
_MIN_IMAGES_FOR_WORKERS = 512
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Digits: mean/std of all 1797 images in [0, 1] (pixel values / 16), fixed like the published CIFAR
# constants rather than recomputed per split, so the input scaling does not depend on the seed.
_DIGITS_MEAN, _DIGITS_STD = (0.3053,), (0.3760,)

Batch = tuple[Tensor, Tensor, Tensor]  # idx int64 [B], x float32 [B, C, H, W], y int64 [B]


class DataError(Exception):
    """Data a person must fetch or fix; the message is one line naming the folder and the remedy."""


# ---------------------------------------------------------------- device-side transform

def crop_flip(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, *, pad: int) -> Tensor:
    """Per-example shifted crop of the zero-padded image, then an optional horizontal flip.

    x: [B, C, H, W] any dtype; dy, dx: int64 [B] in [-pad, pad]; flip: bool [B].
    out[b, :, i, j] = x[b, :, i + dy[b], j' + dx[b]] (0 outside x), j' = W-1-j where flip[b] else j.
    One pad and one gather for the whole batch: no per-example Python loop.
    """
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))  # [B, C, H+2p, W+2p], zeros = black before normalization
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = (dy + pad)[:, None] + ar_h  # [B, H]
    cols = (dx + pad)[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # [B, W]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


AUGMENT_POLICIES = ("crop_flip", "autoaugment")


class BatchAutoAugment:
    """AutoAugment's CIFAR-10 policy (Cubuk et al. 2019; torchvision's table and operations) applied
    per example but batched: the examples that drew the same sub-policy, op firing and sign go
    through each operation together, so a batch costs at most ~100 calls instead of one per image.
    Every draw comes from the caller's generator (``draw``), so runs and resumes are reproducible."""

    def __init__(self) -> None:
        from torchvision.transforms import v2  # noqa: PLC0415 - torchvision takes seconds to import; only AutoAugment needs it

        self._aa = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
        self.policies = self._aa._policies

    def draw(self, n: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """(sub-policy int64 [n], firing draws float [n, 2], negative-sign flags bool [n, 2])."""
        return (torch.randint(len(self.policies), (n,), generator=generator), torch.rand(n, 2, generator=generator),
                torch.rand(n, 2, generator=generator) <= 0.5)

    def __call__(self, x: Tensor, policy: Tensor, fire: Tensor, negative: Tensor) -> Tensor:
        """x: uint8 [B, C, H, W]; the other arguments: this batch's slice of ``draw`` (same device)."""
        out = x.clone()
        h, w = x.shape[-2:]
        for p in policy.unique().tolist():
            members = torch.nonzero(policy == p).flatten()
            for i, (op, probability, magnitude_idx) in enumerate(self.policies[p]):
                fired = members[fire[members, i] <= probability]
                if fired.numel() == 0:
                    continue
                magnitudes_fn, signed = self._aa._AUGMENTATION_SPACE[op]
                magnitudes = magnitudes_fn(10, h, w)
                m = float(magnitudes[magnitude_idx]) if magnitudes is not None else 0.0
                groups = [(fired[negative[fired, i]], -m), (fired[~negative[fired, i]], m)] \
                    if signed and magnitudes is not None else [(fired, m)]
                for g, magnitude in groups:
                    if g.numel():
                        out[g] = self._aa._apply_image_or_video_transform(
                            out[g], op, magnitude, interpolation=self._aa.interpolation, fill=self._aa._fill)
        return out


def cutout(x: Tensor, cy: Tensor, cx: Tensor, size: int) -> Tensor:
    """DeVries & Taylor's Cutout: zero a size x size square centred at (cy, cx) per example (clipped at
    the border); applied after normalization, so the square is the dataset's mean colour."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    top, left = (cy - size // 2)[:, None, None], (cx - size // 2)[:, None, None]
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)  # [B, H, W]
    return x.masked_fill(inside[:, None], 0.0)


class BatchTransform:
    """Scale to [0, 1], optionally crop/flip (and with policy "autoaugment" AutoAugment's CIFAR-10
    policy plus Cutout, Pham et al.'s "data augmentation"), normalize with per-channel mean/std — on
    x's device."""

    def __init__(self, *, mean: tuple[float, ...], std: tuple[float, ...], pad: int, flip: bool,
                 device: torch.device, policy: str = "crop_flip", image_size: int = 32):
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)  # [1, C, 1, 1]
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.pad = pad  # crop shifts are drawn in [-pad, pad] pixels
        self.flip = flip  # False where mirroring can change the class (digits, MNIST, SVHN)
        self.policy = policy
        self.autoaugment = BatchAutoAugment() if policy == "autoaugment" else None
        self.image_size = image_size
        self.cutout = max(1, image_size // 2)  # 16 pixels on 32x32 CIFAR (DeVries & Taylor's CIFAR-10 size)

    def draw(self, n: int, generator: torch.Generator | None) -> tuple[Tensor, ...]:
        """Augmentation parameters for n examples, drawn on the CPU: dy, dx int64 [n]; flip bool [n];
        with "autoaugment" also its draws and the Cutout centres (cy, cx int64 [n])."""
        dy = torch.randint(-self.pad, self.pad + 1, (n,), generator=generator)
        dx = torch.randint(-self.pad, self.pad + 1, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        if self.autoaugment is None:
            return dy, dx, flip
        return (dy, dx, flip, *self.autoaugment.draw(n, generator),
                torch.randint(0, self.image_size, (n,), generator=generator),
                torch.randint(0, self.image_size, (n,), generator=generator))

    def __call__(self, x: Tensor, aug: tuple[Tensor, ...] | None) -> Tensor:
        """x: uint8 (0..255) or float32 (0..1) [B, C, H, W]; aug: this batch's slice of ``draw``."""
        if aug is not None:
            x = crop_flip(x, *aug[:3], pad=self.pad)
            if self.autoaugment is not None:
                as_uint8 = x if x.dtype == torch.uint8 else (x.float() * 255).round().to(torch.uint8)
                x = self.autoaugment(as_uint8, *aug[3:6])
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = (x - self.mean) / self.std
        if aug is not None and self.autoaugment is not None:
            x = cutout(x, aug[6], aug[7], self.cutout)
        return x


# ---------------------------------------------------------------- sources

class Source(ABC):
    """One split. Subclasses supply raw batches; shuffling, augmentation draws and normalization live here."""

    y: Tensor  # int64 [N] on the device; the possibly-noisy labels for train
    transform: BatchTransform

    def __len__(self) -> int:
        return self.y.shape[0]

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)  # the last partial batch is kept

    def batches(self, batch_size: int, *, shuffle: bool, augment: bool,
                generator: torch.Generator | None = None) -> Iterator[Batch]:
        """One epoch of (idx, x, y) on the device. ``generator`` (CPU) draws the order, then the augmentation."""
        n, device = len(self), self.y.device
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)  # CPU [N]
        # Drawn for the whole epoch up front: one host->device copy per epoch, not per batch.
        aug = [t.to(device) for t in self.transform.draw(n, generator)] if augment else None
        start = 0  # position in the epoch, which indexes the augmentation draws
        for idx, x in self._raw_batches(order, batch_size):
            a = None if aug is None else tuple(t[start:start + len(idx)] for t in aug)
            yield idx, self.transform(x, a), self.y[idx]
            start += len(idx)

    @abstractmethod
    def _raw_batches(self, order: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(idx int64 [B], raw x [B, C, H, W]) on the device, following ``order`` in chunks of batch_size."""


class TensorSource(Source):
    """A split resident on the device: x uint8 (or float32 in [0, 1]) [N, C, H, W], y int64 [N]."""

    def __init__(self, *, x: Tensor, y: Tensor, transform: BatchTransform):
        self.x, self.y, self.transform = x, y, transform

    def _raw_batches(self, order: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = order.to(self.y.device)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield idx, self.x[idx]


class _IndexedImages(Dataset):
    """Item i -> (i, uint8 [3, S, S]); the index travels with the image so labels stay on the device."""

    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Tensor]:
        return i, _read_image(self.paths[i], self.size)


def _read_image(path: str, size: int) -> Tensor:
    """An image file as RGB uint8 [3, size, size]; resized (bilinear) only when it is not size x size."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous()


class LoaderSource(Source):
    """A split read from image files each epoch by DataLoader workers; paths[i] is example i."""

    def __init__(self, *, paths: list[str], y: Tensor, image_size: int, transform: BatchTransform,
                 num_workers: int | None = None):
        self.paths, self.y, self.image_size, self.transform = paths, y, image_size, transform
        few = len(paths) < _MIN_IMAGES_FOR_WORKERS
        self.num_workers = num_workers if num_workers is not None else 0 if few else min(4, os.cpu_count() or 1)

    def _raw_batches(self, order: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        device = self.y.device
        # The order is the sampler, so batch order follows the caller's generator exactly as for
        # TensorSource; workers only decode. A new loader per epoch because the order changes.
        loader = DataLoader(
            _IndexedImages(self.paths, self.image_size), batch_size=batch_size, sampler=order.tolist(),
            num_workers=self.num_workers, pin_memory=device.type == "cuda")
        for idx, x in loader:
            yield idx.to(device, non_blocking=True), x.to(device, non_blocking=True)


@dataclass
class DataBundle:
    name: str  # config name, e.g. "digits", "cifar10"
    num_classes: int
    in_channels: int
    image_size: int  # H == W of every x the sources yield; the longer side where they differ (mnist1d: 1 x 40)
    class_names: list[str]
    train: Source
    val: Source
    test: Source
    train_clean_y: Tensor  # int64 [N_train] on the device: training labels before label noise
    noise_mask: Tensor  # bool [N_train] on the device: True where the training label was flipped

    @property
    def shapes(self) -> dict[str, int]:
        """What a model for this data is built with (``model_for_round``'s and ``Run.load_model``'s keywords); where
        the images are not image_size x image_size (mnist1d's 1 x 40), also their ``height`` and ``width``, which
        the probe batch of your own model takes (``models.external``)."""
        shapes = dict(num_classes=self.num_classes, in_channels=self.in_channels, image_size=self.image_size)
        x = getattr(self.test, "x", None)  # a TensorSource's resident images; a LoaderSource's are square
        if x is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            shapes.update(height=int(x.shape[-2]), width=int(x.shape[-1]))
        return shapes

    @property
    def device(self) -> torch.device:
        return self.test.y.device


# ---------------------------------------------------------------- reading datasets

@dataclass
class _Raw:
    """A dataset as read, before splitting: the training pool (val is carved from it) and the test split.

    x is a resident tensor (uint8 [N, C, H, W], or float32: in [0, 1] for image sets, any range for mnist1d and a
    tensors file) or a list of image paths.
    """
    pool_x: Tensor | list[str]
    pool_y: Tensor  # int64 [N_pool], CPU
    test_x: Tensor | list[str]
    test_y: Tensor  # int64 [N_test], CPU
    class_names: list[str]
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int  # crop padding in pixels
    flip: bool  # horizontal flip keeps the class


def _read_digits(cfg: DataConfig) -> _Raw:
    from sklearn.datasets import load_digits  # noqa: PLC0415 - scikit-learn takes seconds to import; only digits need it

    d = load_digits()
    x = torch.from_numpy(d.images / 16.0).float()[:, None]  # [1797, 1, 8, 8] in [0, 1]
    y = torch.from_numpy(d.target).long()
    gen = torch.Generator().manual_seed(_DIGITS_TEST_SEED)
    pool, test = _stratified_split(y, round(_DIGITS_TEST_FRACTION * len(y)), gen)
    return _Raw(pool_x=x[pool], pool_y=y[pool], test_x=x[test], test_y=y[test],
                class_names=[str(k) for k in range(10)], in_channels=1, image_size=8,
                mean=_DIGITS_MEAN, std=_DIGITS_STD, pad=1, flip=False)


@dataclass(frozen=True)
class _TorchvisionSpec:
    title: str  # for messages
    cls: str  # torchvision.datasets class
    split_kwargs: tuple[dict, dict]  # constructor kwargs selecting (train, test)
    layout: str  # axes of the class's .data: "nhwc" (CIFAR), "nchw" (SVHN), "nhw" (MNIST-like)
    labels: str  # attribute holding the labels
    files: tuple[str, ...]  # what torchvision reads, relative to data.root
    how: str  # how a person obtains the files ({root} is filled in)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int
    flip: bool
    pool: int  # images in the official training split (val is carved from it): sizes known without reading


_NETWORK = "or set data.download=true on a machine with a network"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")
_TORCHVISION = {
    "cifar10": _TorchvisionSpec(
        "CIFAR-10", "CIFAR10", ({"train": True}, {"train": False}), "nhwc", "targets",
        tuple(f"cifar-10-batches-py/{f}" for f in
              ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
               "batches.meta")),
        f"download cifar-10-python.tar.gz from {_CIFAR_URL} and extract it in {{root}}, {_NETWORK}",
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4, True, pool=50000),
    "cifar100": _TorchvisionSpec(
        "CIFAR-100", "CIFAR100", ({"train": True}, {"train": False}), "nhwc", "targets",
        ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
        f"download cifar-100-python.tar.gz from {_CIFAR_URL} and extract it in {{root}}, {_NETWORK}",
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 4, True, pool=50000),
    "svhn": _TorchvisionSpec(
        "SVHN", "SVHN", ({"split": "train"}, {"split": "test"}), "nchw", "labels",
        ("train_32x32.mat", "test_32x32.mat"),
        f"download train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ "
        f"into {{root}}, {_NETWORK}",
        (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 4, False, pool=73257),
    "mnist": _TorchvisionSpec(
        "MNIST", "MNIST", ({"train": True}, {"train": False}), "nhw", "targets",
        tuple(f"MNIST/raw/{f}" for f in _MNIST_FILES),
        f"download the four .gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ and gunzip them "
        f"in {{root}}/MNIST/raw, {_NETWORK}",
        (0.1307,), (0.3081,), 2, False, pool=60000),
    "fashionmnist": _TorchvisionSpec(
        "FashionMNIST", "FashionMNIST", ({"train": True}, {"train": False}), "nhw", "targets",
        tuple(f"FashionMNIST/raw/{f}" for f in _MNIST_FILES),
        f"download the four .gz files from https://github.com/zalandoresearch/fashion-mnist (data/fashion) "
        f"and gunzip them in {{root}}/FashionMNIST/raw, {_NETWORK}",
        (0.2860,), (0.3530,), 2, True, pool=60000),
}


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _missing_files_error(spec: _TorchvisionSpec, root: Path, missing: list[str]) -> DataError:
    shown = ", ".join(missing[:3]) + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
    return DataError(f"{spec.title} not found: searched {root} for {shown}; {spec.how.format(root=root)}")


def _open_torchvision(spec: _TorchvisionSpec, root: Path, download: bool, train: bool):
    import torchvision.datasets  # noqa: PLC0415 - seconds to import; only torchvision's datasets need it

    cls = getattr(torchvision.datasets, spec.cls)
    try:
        return cls(str(root), download=download, **spec.split_kwargs[0 if train else 1])
    except (RuntimeError, OSError) as e:  # torchvision's "not found or corrupted"; URLError is an OSError
        what = f"download into {root} failed" if download else f"the files in {root} failed torchvision's check"
        raise DataError(f"{spec.title}: {what} ({_first_line(e)}); {spec.how.format(root=root)}") from None


def _arrays(ds, spec: _TorchvisionSpec) -> tuple[Tensor, Tensor]:
    """(x uint8 [N, C, H, W], y int64 [N]) from a torchvision dataset's raw arrays (no per-item PIL)."""
    x = torch.as_tensor(np.asarray(ds.data))
    if spec.layout == "nhwc":
        x = x.permute(0, 3, 1, 2)
    elif spec.layout == "nhw":
        x = x[:, None]
    y = torch.as_tensor(np.asarray(getattr(ds, spec.labels)), dtype=torch.long)
    return x.contiguous(), y


def check_available(cfg: DataConfig) -> None:
    """Raise DataError now if the dataset's files are missing and cannot be downloaded, or if data.subset
    asks for more examples than the training split has (where its size is known without reading it).

    Cheap (file existence only), so a job can be refused before it is queued instead of failing later.
    """
    try:
        _check_files(cfg)
    except OSError as e:  # permission denied, a name too long, a loop of links: the folder cannot be read
        raise DataError(f"{cfg.name}: cannot read {cfg.root}: {e.strerror or e}") from None
    split = train_split_size(cfg)
    if cfg.subset is not None and split is not None and cfg.subset > split:
        raise _subset_error(cfg, split)


def _check_files(cfg: DataConfig) -> None:
    if cfg.name == "tensors":
        _check_tensors(cfg)
    elif cfg.name in _TORCHVISION and not cfg.download:
        spec, root = _TORCHVISION[cfg.name], Path(cfg.root).resolve()
        missing = [f for f in spec.files if not (root / f).is_file()]
        if missing:
            raise _missing_files_error(spec, root, missing)
    elif cfg.name == "imagefolder" and not (Path(cfg.root) / "train").is_dir():
        raise DataError(f"imagefolder: no train/ folder in {Path(cfg.root).resolve()}; {_IMAGEFOLDER_HOW}")


def train_split_size(cfg: DataConfig) -> int | None:
    """Training examples left after the validation hold-out, before any subset (what ``load`` splits off),
    known without reading the images (a .npz's array headers at most); None where only reading the files tells
    (imagefolder, a .pt, a tensors file that cannot be read)."""
    if cfg.name == "tensors":
        pool = _tensors_pool(cfg)
    elif cfg.name == "mnist1d":
        pool = mnist1d.train_size(cfg.size)
    else:
        pool = {"digits": _DIGITS_POOL, **{name: spec.pool for name, spec in _TORCHVISION.items()}}.get(cfg.name)
    return None if pool is None else pool - round(cfg.val_fraction * pool)


def steps_per_epoch(cfg: RunConfig) -> int | None:
    """Optimizer steps in one epoch (the last partial batch is kept, as in ``Source.num_batches``); None when
    the training split's size is not known before loading it."""
    n = cfg.data.subset or train_split_size(cfg.data)
    return None if n is None else -(-n // cfg.optim.batch_size)


def size_warnings(cfg: RunConfig, split: int) -> list[str]:
    """What a batch larger than the training examples does, as sentences for a person (empty: nothing odd).

    ``split``: training examples after the validation hold-out (``train_split_size``). A subset larger than
    it is not a warning but an error (``check_available`` refuses it)."""
    n, batch = cfg.data.subset or split, cfg.optim.batch_size
    if batch <= n or n > split:
        return []
    where = "data.subset" if cfg.data.subset else f"{cfg.data.name} after the validation hold-out"
    return [f"optim.batch_size={batch} is larger than the {n} training examples ({where}): every epoch is a "
            f"single step on all {n} at once, so each network gets only {cfg.epochs} optimizer "
            f"step{'s' if cfg.epochs != 1 else ''} (one per epoch). A batch smaller than {n} takes several per epoch."]


def _subset_error(cfg: DataConfig, split: int) -> DataError:
    return DataError(f"data.subset={cfg.subset} exceeds the {split} training examples of {cfg.name} left after "
                     f"holding out data.val_fraction={cfg.val_fraction}; use at most {split}, or 0 (null) for all")


def _read_torchvision(cfg: DataConfig) -> _Raw:
    spec, root = _TORCHVISION[cfg.name], Path(cfg.root).resolve()
    check_available(cfg)
    train = _open_torchvision(spec, root, cfg.download, train=True)
    test = _open_torchvision(spec, root, cfg.download, train=False)  # SVHN downloads per split
    pool_x, pool_y = _arrays(train, spec)
    test_x, test_y = _arrays(test, spec)
    names = [str(c) for c in getattr(train, "classes", range(10))]  # SVHN has no .classes: digits 0-9
    return _Raw(pool_x=pool_x, pool_y=pool_y, test_x=test_x, test_y=test_y, class_names=names,
                in_channels=pool_x.shape[1], image_size=pool_x.shape[2],
                mean=spec.mean, std=spec.std, pad=spec.pad, flip=spec.flip)


_IMAGEFOLDER_HOW = ("expected train/<class>/<images> and val/<class>/<images> (or test/<class>/..., or "
                    "TinyImageNet's val/images + val/val_annotations.txt); for TinyImageNet extract "
                    "http://cs231n.stanford.edu/tiny-imagenet-200.zip and set data.root to its tiny-imagenet-200 "
                    "folder")


def _imagefolder(folder: Path):
    from torchvision.datasets import ImageFolder  # noqa: PLC0415 - seconds to import; only image folders need it

    try:
        return ImageFolder(str(folder))
    except (FileNotFoundError, RuntimeError) as e:  # no class folders, or a class without images
        raise DataError(f"imagefolder: cannot read {folder} ({_first_line(e)}); {_IMAGEFOLDER_HOW}") from None


def _read_test_folder(folder: Path, class_to_idx: dict[str, int]) -> tuple[list[str], list[int]]:
    """Paths and train-class indices of the held-out folder, in ImageFolder or TinyImageNet val layout."""
    ann = folder / "val_annotations.txt"
    if ann.is_file():  # TinyImageNet: filename \t wnid \t bbox...; images in val/images/
        rows = [line.split("\t")[:2] for line in ann.read_text().splitlines() if line.strip()]
        pairs = [(str(folder / "images" / f), wnid) for f, wnid in rows]
        absent = [p for p, _ in pairs if not os.path.isfile(p)]
        if absent:
            raise DataError(f"imagefolder: {ann} lists {len(absent)} images that are missing, e.g. {absent[0]}")
    else:
        ds = _imagefolder(folder)
        pairs = [(p, ds.classes[k]) for p, k in ds.samples]
    unknown = sorted({c for _, c in pairs} - class_to_idx.keys())
    if unknown:
        raise DataError(f"imagefolder: {folder} has classes missing from train/: {', '.join(unknown[:5])}")
    return [p for p, _ in pairs], [class_to_idx[c] for _, c in pairs]


def _read_imagefolder(cfg: DataConfig) -> _Raw:
    root = Path(cfg.root).resolve()
    held = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or held is None:
        raise DataError(f"imagefolder not found: searched {root}; {_IMAGEFOLDER_HOW}")
    train = _imagefolder(root / "train")
    test_paths, test_y = _read_test_folder(held, train.class_to_idx)
    with Image.open(train.samples[0][0]) as im:
        size = min(im.size)  # assumed square and uniform; other sizes are resized to size x size
    return _Raw(pool_x=[p for p, _ in train.samples], pool_y=torch.tensor(train.targets, dtype=torch.long),
                test_x=test_paths, test_y=torch.tensor(test_y, dtype=torch.long), class_names=list(train.classes),
                in_channels=3, image_size=size, mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
                pad=max(1, size // 8), flip=True)


def _read_mnist1d(cfg: DataConfig) -> _Raw:
    x_train, y_train, x_test, y_test = mnist1d.generate(cfg.size)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)[:, None, None]  # [N, 40] -> [N, 1, 1, 40]
    as_y = lambda a: torch.tensor(a, dtype=torch.long)
    # mean 0, std 1: the recipe already standardizes (over all examples), so the inputs are its arrays.
    # pad 0: a vertical crop shift would empty a one-row signal, and the recipe already translates.
    return _Raw(pool_x=as_x(x_train), pool_y=as_y(y_train), test_x=as_x(x_test), test_y=as_y(y_test),
                class_names=list(mnist1d.CLASSES), in_channels=1, image_size=mnist1d.LENGTH,
                mean=(0.0,), std=(1.0,), pad=0, flip=False)


# ---------------------------------------------------------------- your own tensors (data.name=tensors)

TENSOR_KEYS = ("x_train", "y_train", "x_test", "y_test")  # required; "classes" and "layout" are optional
_TENSOR_SUFFIXES = (".npz", ".pt", ".pth")
_TENSOR_HOW = ("a .npz (np.savez) or .pt (torch.save of a dict of tensors) holding x_train, y_train, x_test, "
               "y_test (README, 'Your own data')")
_MAX_CLASSES = 100_000  # a label past this is a mistake (an id, a pixel value), not a class of a classifier
_X_SHAPES = "[N, C, H, W], [N, H, W, C], [N, H, W] or [N, L]"


@dataclass(frozen=True)
class _Header:
    """An array as its file describes it, before its values are read (a .npz's headers are cheap to read)."""
    shape: tuple[int, ...]
    kind: str  # "uint8", "float", "int", "bool", "str", "object", or the dtype's name
    nbytes: int

    @staticmethod
    def of_numpy(shape: tuple[int, ...], dtype: np.dtype) -> "_Header":
        kind = "uint8" if dtype == np.uint8 else {"f": "float", "i": "int", "u": "int", "b": "bool", "U": "str",
                                                  "S": "str", "O": "object"}.get(dtype.kind, dtype.name)
        return _Header(tuple(int(d) for d in shape), kind, int(np.prod(shape, dtype=np.float64)) * dtype.itemsize)

    @staticmethod
    def of_tensor(t: Tensor) -> "_Header":
        kind = "uint8" if t.dtype == torch.uint8 else "float" if t.dtype.is_floating_point else \
            "bool" if t.dtype == torch.bool else str(t.dtype).removeprefix("torch.") if t.dtype.is_complex else "int"
        return _Header(tuple(t.shape), kind, t.numel() * t.element_size())


def _tensors_path(cfg: DataConfig) -> Path:
    # realpath: a link a person made to their data is fine (files.open_regular refuses links themselves)
    return Path(os.path.realpath(os.path.expanduser(cfg.file or "")))


def _bad(path: Path, problem: str, key: str | None = None) -> DataError:
    return DataError(f"data.file {path}: {key + ' ' if key else ''}{problem}")


def _memory_limit() -> int:
    """Bytes of arrays a tensors file may hold: half this machine's memory (the whole dataset is read, then
    kept resident); 8 GiB where the system does not say how much it has."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, ValueError, OSError):
        return 8 * 2**30


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 2**10:.0f} KB"


def _too_large(path: Path, nbytes: int, what: str) -> DataError:
    return _bad(path, f"{what} {_size(nbytes)}, more than half this machine's memory "
                      f"({_size(2 * _memory_limit())}): sdlab reads the whole dataset into memory; save fewer or "
                      f"smaller (uint8) images, or use data.name=imagefolder, which reads image files as it goes")


def _open_tensors(path: Path):
    """The file opened for reading: a regular file with a known suffix, no larger than ``_memory_limit``."""
    if path.suffix.lower() not in _TENSOR_SUFFIXES:
        raise _bad(path, f"is not a .npz or .pt file; expected {_TENSOR_HOW}")
    try:
        f = files.open_regular(path)
    except files.FileProblem as e:
        raise _bad(path, str(e)) from None
    size = os.fstat(f.fileno()).st_size
    if size > _memory_limit():
        f.close()
        raise _too_large(path, size, "is")
    return f


def _open_npz(path: Path, f) -> np.lib.npyio.NpzFile:
    try:
        npz = np.load(f, allow_pickle=False)  # a pickle would run code: refused, never executed
    except Exception as e:  # noqa: BLE001 - BadZipFile, EOFError, ValueError (a pickle), OSError, ...
        raise _bad(path, f"is damaged or not a .npz archive ({files.first_line(e)})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _bad(path, "holds a single array (np.save), not named arrays; save them with "
                         "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
    return npz


def _npz_header(path: Path, npz: np.lib.npyio.NpzFile, key: str) -> _Header:
    """The header of one array in the archive, read without its values (a compressed one is not inflated)."""
    name = key + ".npy" if key + ".npy" in npz.zip.namelist() else key
    try:
        with npz.zip.open(name) as fp:
            version = np.lib.format.read_magic(fp)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fp)
    except Exception as e:  # noqa: BLE001 - BadZipFile, zlib.error, ValueError (not .npy), EOFError, ...
        raise _bad(path, f"cannot be read ({files.first_line(e)})", key) from None
    return _Header.of_numpy(shape, dtype)


def _npz_value(path: Path, npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return npz[key]
    except Exception as e:  # noqa: BLE001 - a bad CRC in a damaged archive, a truncated member, ...
        raise _bad(path, f"cannot be read ({files.first_line(e)})", key) from None


def _missing_keys(path: Path, keys) -> None:
    missing = [k for k in TENSOR_KEYS if k not in keys]
    if missing:
        raise _bad(path, f"has no {', '.join(missing)}; it has {', '.join(sorted(map(str, keys))) or 'nothing'}, "
                         f"expected {_TENSOR_HOW}")


def _layout_of(path: Path, value) -> str | None:
    """The optional ``layout`` entry ("nchw" or "nhwc"), from a .npz string array or a .pt str."""
    if value is None:
        return None
    text = value.item() if isinstance(value, np.ndarray) and value.shape == () else value
    if text not in ("nchw", "nhwc"):
        raise _bad(path, f"is {show_value(text, 60)}; expected 'nchw' or 'nhwc'", "layout")
    return text


def _image_layout(path: Path, headers: dict[str, _Header], layout: str | None) -> tuple[str, tuple[int, int, int]]:
    """(layout of x_train and x_test: "nchw", "nhwc", "nhw" or "nl"; their (C, H, W)) from the headers alone,
    with every check the headers allow: dtypes, shapes, example counts and the size once read."""
    for key in ("x_train", "x_test"):
        h = headers[key]
        if h.kind not in ("uint8", "float"):
            raise _bad(path, f"has dtype {h.kind}; expected uint8 (0..255) or float images", key)
        if not 2 <= len(h.shape) <= 4 or 0 in h.shape[1:]:
            raise _bad(path, f"has shape {list(h.shape)}; expected {_X_SHAPES}", key)
        if h.shape[0] == 0:
            raise _bad(path, "holds no examples", key)
    if headers["x_test"].kind != headers["x_train"].kind:
        raise _bad(path, f"is {headers['x_test'].kind} but x_train is {headers['x_train'].kind}: both are scaled "
                         "the same way, so both must be uint8 or both float", "x_test")
    for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
        h = headers[y]
        if h.kind not in ("uint8", "int", "float"):
            raise _bad(path, f"has dtype {h.kind}; expected integer labels 0..C-1", y)
        if not (len(h.shape) == 1 or (len(h.shape) == 2 and h.shape[1] == 1)):
            raise _bad(path, f"has shape {list(h.shape)}; expected [N] labels", y)
        if h.shape[0] != headers[x].shape[0]:
            raise _bad(path, f"has {h.shape[0]} labels but {x} has {headers[x].shape[0]} examples", y)
    shape = headers["x_train"].shape
    if len(shape) == 2:
        layout, chw = "nl", (1, 1, shape[1])
    elif len(shape) == 3:
        layout, chw = "nhw", (1, shape[1], shape[2])
    else:
        if layout is None:
            channels_first, channels_last = shape[1] in (1, 3), shape[3] in (1, 3)
            if channels_first == channels_last:
                which = "both axis 1 and axis 3 have" if channels_first else "neither axis 1 nor axis 3 has"
                raise _bad(path, f"has shape {list(shape)}: {which} 1 or 3 entries, so channels first or last is "
                                 "ambiguous; add layout='nchw' or layout='nhwc' to the file", "x_train")
            layout = "nchw" if channels_first else "nhwc"
        chw = shape[1:] if layout == "nchw" else (shape[3], shape[1], shape[2])
    test = headers["x_test"].shape
    test_chw = _to_chw(test, layout) if len(test) == len(shape) else None
    if test_chw != tuple(chw):
        raise _bad(path, f"has shape {list(test)} but x_train {list(shape)}: their images must have the same "
                         "channels, height and width", "x_test")
    nbytes = sum(h.nbytes for h in headers.values())
    if nbytes > _memory_limit():
        raise _too_large(path, nbytes, "holds")
    return layout, tuple(chw)


def _to_chw(shape: tuple[int, ...], layout: str) -> tuple[int, int, int]:
    return {"nl": lambda: (1, 1, shape[1]), "nhw": lambda: (1, *shape[1:]), "nchw": lambda: tuple(shape[1:]),
            "nhwc": lambda: (shape[3], shape[1], shape[2])}[layout]()


def _images(path: Path, key: str, x: Tensor, layout: str) -> Tensor:
    """x as uint8 or float32 [N, C, H, W] (contiguous), its floats checked finite."""
    if x.dtype != torch.uint8:
        x = x.float()  # float64 past float32's range becomes inf, caught below
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero()
        if len(bad):
            raise _bad(path, f"holds NaN or infinite values (example {int(bad[0])} first)", key)
    n = x.shape[0]
    x = {"nl": lambda: x.reshape(n, 1, 1, -1), "nhw": lambda: x[:, None], "nchw": lambda: x,
         "nhwc": lambda: x.permute(0, 3, 1, 2)}[layout]()
    return x.contiguous()


def _labels(path: Path, key: str, y: Tensor) -> Tensor:
    """y as int64 [N]: whole numbers, 0 or more, below _MAX_CLASSES."""
    y = y.reshape(-1)
    if not y.dtype.is_floating_point:
        y = y.long()  # uint16/32/64 tensors of a .pt support too few operations
    else:
        y = y.double()
        bad = (~torch.isfinite(y) | (y != y.round())).nonzero()
        if len(bad):
            raise _bad(path, f"holds {float(y[bad[0]]):g} at position {int(bad[0])}; expected whole class "
                             "numbers 0..C-1", key)
    if len(y) and (y.min() < 0 or y.max() >= _MAX_CLASSES):
        i = int(torch.argmin(y) if y.min() < 0 else torch.argmax(y))
        raise _bad(path, f"holds {y[i].item():g} at position {i}; expected class numbers 0..C-1 "
                         f"(C at most {_MAX_CLASSES})", key)
    return y.long()


def _class_names(path: Path, value, y_train: Tensor, y_test: Tensor) -> list[str]:
    """``classes`` if the file names them (checked against the labels), else "0".."C-1" with C = max + 1."""
    present = torch.unique(y_train)
    if len(present) < 2:
        raise _bad(path, f"has only class {int(present[0])}; at least 2 classes are needed", "y_train")
    unseen = sorted(set(torch.unique(y_test).tolist()) - set(present.tolist()))
    if unseen:
        raise _bad(path, f"has class {unseen[0]}, which no y_train example has: a model can never learn it",
                   "y_test")
    top = int(present[-1])
    if value is None:
        return [str(k) for k in range(top + 1)]
    names = value.tolist() if isinstance(value, np.ndarray) and value.ndim == 1 else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(c, (str, bytes)) for c in names):
        raise _bad(path, "must be a list of class names (strings)", "classes")
    names = [c.decode("utf-8", "replace") if isinstance(c, bytes) else c for c in names]
    if len(names) <= top:
        raise _bad(path, f"names {len(names)} classes but y_train has label {top}", "classes")
    twice = next((c for i, c in enumerate(names) if c in names[:i]), None)
    if twice is not None:
        raise _bad(path, f"names {show_value(twice, 60)} twice", "classes")
    return names


def _channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of x (uint8 -> /255, as BatchTransform scales it) over every example
    and pixel: two passes in float64 chunks, so a large uint8 set is never copied whole and values far from 0 lose
    no precision; a constant channel gets std 1 (no 0 divide)."""
    chunks = lambda: (p.double() / 255.0 if x.dtype == torch.uint8 else p.double() for p in x.split(4096))
    count = x.numel() // x.shape[1]
    mean = sum(v.sum((0, 2, 3)) for v in chunks()) / count  # [C]
    var = sum((v - mean[:, None, None]).square().sum((0, 2, 3)) for v in chunks()) / count
    std = torch.where(var > 1e-16, var.sqrt(), torch.ones_like(var))
    return tuple(mean.tolist()), tuple(std.tolist())


def _npz_headers(path: Path, npz: np.lib.npyio.NpzFile) -> tuple[dict[str, _Header], str | None]:
    """The four arrays' headers and the layout entry, without reading the arrays' values."""
    _missing_keys(path, npz.files)
    layout = _layout_of(path, _npz_value(path, npz, "layout")) if "layout" in npz.files else None
    return {k: _npz_header(path, npz, k) for k in TENSOR_KEYS}, layout


def _tensors_headers(cfg: DataConfig) -> tuple[dict[str, _Header], str | None] | None:
    """``_npz_headers`` of a .npz; None for a .pt (torch.load reads everything). DataError where the file cannot
    be opened or lacks a key."""
    path = _tensors_path(cfg)
    with _open_tensors(path) as f:
        return _npz_headers(path, _open_npz(path, f)) if path.suffix.lower() == ".npz" else None


def _check_tensors(cfg: DataConfig) -> None:
    found = _tensors_headers(cfg)
    if found is not None:
        _image_layout(_tensors_path(cfg), *found)


def _tensors_pool(cfg: DataConfig) -> int | None:
    try:
        found = _tensors_headers(cfg)
    except DataError:
        return None  # check_available says why
    return None if found is None else found[0]["y_train"].shape[0]


def _as_tensor(a: np.ndarray, *, label: bool) -> Tensor:
    """A checked .npz array (uint8, int or float, any byte order) as a tensor: uint8 kept, other ints int64, float
    images float32 (past its range: inf, which _images refuses), float labels float64 (whole numbers stay exact)."""
    if a.dtype != np.uint8:
        with np.errstate(over="ignore", invalid="ignore"):
            a = a.astype(np.int64 if a.dtype.kind in "iu" else np.float64 if label else np.float32)
    return torch.from_numpy(np.ascontiguousarray(a))


def _read_tensor_file(path: Path) -> tuple[dict[str, Tensor], object, str | None]:
    """(the four arrays as CPU tensors, the classes entry or None, the layout or None), each checked against the
    headers before its values are read (.npz), or after torch.load for a .pt."""
    with _open_tensors(path) as f:
        if path.suffix.lower() == ".npz":
            npz = _open_npz(path, f)
            headers, layout = _npz_headers(path, npz)
            _image_layout(path, headers, layout)  # sizes and shapes, before a byte of the arrays is inflated
            tensors = {k: _as_tensor(_npz_value(path, npz, k), label=k.startswith("y")) for k in TENSOR_KEYS}
            classes = _npz_value(path, npz, "classes") if "classes" in npz.files else None
            return tensors, classes, layout
        try:
            obj = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - RuntimeError, UnpicklingError, EOFError, ...
            detail = files.first_line(e).split(". ")[0]
            if "Weights only load failed" in detail:
                raise _bad(path, "holds objects torch.load(weights_only=True) refuses (numpy arrays or other Python "
                                 "objects); save a dict of torch tensors (torch.from_numpy), or a .npz") from None
            raise _bad(path, f"is damaged or not a PyTorch file ({detail})") from None
    if not isinstance(obj, dict):
        raise _bad(path, f"holds a {type(obj).__name__}, not a dict; expected {_TENSOR_HOW}")
    _missing_keys(path, obj.keys())
    for k in TENSOR_KEYS:
        if not isinstance(obj[k], Tensor):
            raise _bad(path, f"is a {type(obj[k]).__name__}, not a tensor", k)
    tensors = {k: obj[k].detach() for k in TENSOR_KEYS}
    return tensors, obj.get("classes"), _layout_of(path, obj.get("layout"))


def _read_tensors(cfg: DataConfig) -> _Raw:
    path = _tensors_path(cfg)
    arrays, classes, layout = _read_tensor_file(path)
    layout, (c, h, w) = _image_layout(path, {k: _Header.of_tensor(t) for k, t in arrays.items()}, layout)
    pool_x, test_x = (_images(path, k, arrays[k], layout) for k in ("x_train", "x_test"))
    pool_y, test_y = (_labels(path, k, arrays[k]) for k in ("y_train", "y_test"))
    names = _class_names(path, classes, pool_y, test_y)
    mean, std = _channel_stats(pool_x)
    side = min(h, w)
    # flip=False: whether a mirror image keeps its class is not known for a person's own data
    return _Raw(pool_x=pool_x, pool_y=pool_y, test_x=test_x, test_y=test_y, class_names=names, in_channels=c,
                image_size=max(h, w), mean=mean, std=std, pad=0 if side == 1 else max(1, side // 8), flip=False)


_READERS = {"digits": _read_digits, "mnist1d": _read_mnist1d, "imagefolder": _read_imagefolder,
            "tensors": _read_tensors, **{k: _read_torchvision for k in _TORCHVISION}}


# ---------------------------------------------------------------- splits and noise

def _stratified_split(y: Tensor, n_hold: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(keep, hold): sorted int64 index tensors, hold has exactly n_hold entries, each class ~ proportional.

    Each example gets the key (random rank within its class + 0.5) / class size, spreading every
    class evenly over [0, 1]; the n_hold smallest keys are held out, so every class contributes
    its share to within one example.
    """
    n = len(y)
    perm = torch.randperm(n, generator=generator)
    yp = y[perm]
    counts = torch.bincount(yp)
    by_class = torch.argsort(yp, stable=True)  # positions in perm, grouped by class
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.long)
    rank[by_class] = torch.arange(n) - starts[yp[by_class]]
    key = (rank.double() + 0.5) / counts[yp]
    picked = perm[torch.argsort(key, stable=True)]
    return picked[n_hold:].sort().values, picked[:n_hold].sort().values


def _label_noise(y: Tensor, frac: float, num_classes: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(noisy y, mask): exactly round(frac * N) labels moved to a uniformly drawn *other* class."""
    n_flip = round(frac * len(y))
    mask = torch.zeros(len(y), dtype=torch.bool)
    if n_flip == 0:
        return y.clone(), mask
    if num_classes < 2:
        raise DataError("data.label_noise needs at least 2 classes to flip labels between")
    where = torch.randperm(len(y), generator=generator)[:n_flip]
    offset = torch.randint(1, num_classes, (n_flip,), generator=generator)  # never 0: never the same class
    noisy = y.clone()
    noisy[where] = (y[where] + offset) % num_classes
    mask[where] = True
    return noisy, mask


def _take(x: Tensor | list[str], idx: Tensor) -> Tensor | list[str]:
    return x[idx] if isinstance(x, Tensor) else [x[i] for i in idx.tolist()]


def _source(raw: _Raw, x: Tensor | list[str], y: Tensor, device: torch.device, policy: str = "crop_flip") -> Source:
    transform = BatchTransform(mean=raw.mean, std=raw.std, pad=raw.pad, flip=raw.flip, device=device, policy=policy,
                               image_size=raw.image_size)
    if isinstance(x, Tensor):
        return TensorSource(x=x.to(device), y=y.to(device), transform=transform)
    return LoaderSource(paths=x, y=y.to(device), image_size=raw.image_size, transform=transform)


def load(cfg: DataConfig, *, seed: int, device: torch.device | str = "cpu") -> DataBundle:
    """Read ``cfg.name``, split, subset and add label noise reproducibly from ``seed``; see the module doc."""
    device = torch.device(device)
    raw = _READERS[cfg.name](cfg)
    if cfg.normalize == "imagenet":  # seed paper 003 normalizes CIFAR-100 with ImageNet's mean and std
        if raw.in_channels != 3:
            raise DataError(f"data.normalize=imagenet needs 3-channel images; {cfg.name} has {raw.in_channels}")
        raw = dataclasses.replace(raw, mean=_IMAGENET_MEAN, std=_IMAGENET_STD)
    gen = torch.Generator().manual_seed(seed + _SPLIT_SALT)
    train_idx, val_idx = _stratified_split(raw.pool_y, round(cfg.val_fraction * len(raw.pool_y)), gen)
    if cfg.subset is not None:
        if cfg.subset > len(train_idx):
            raise _subset_error(cfg, len(train_idx))
        _, keep = _stratified_split(raw.pool_y[train_idx], cfg.subset, gen)
        train_idx = train_idx[keep]
    num_classes = len(raw.class_names)
    clean_y = raw.pool_y[train_idx]
    noisy_y, noise_mask = _label_noise(clean_y, cfg.label_noise, num_classes, gen)
    return DataBundle(
        name=cfg.name, num_classes=num_classes, in_channels=raw.in_channels, image_size=raw.image_size,
        class_names=raw.class_names,
        train=_source(raw, _take(raw.pool_x, train_idx), noisy_y, device, cfg.augment_policy),
        val=_source(raw, _take(raw.pool_x, val_idx), raw.pool_y[val_idx], device),
        test=_source(raw, raw.test_x, raw.test_y, device),
        train_clean_y=clean_y.to(device), noise_mask=noise_mask.to(device))
