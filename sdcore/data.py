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

from sdcore.config import DataConfig, RunConfig

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
    image_size: int  # H == W of every x the sources yield
    class_names: list[str]
    train: Source
    val: Source
    test: Source
    train_clean_y: Tensor  # int64 [N_train] on the device: training labels before label noise
    noise_mask: Tensor  # bool [N_train] on the device: True where the training label was flipped

    @property
    def shapes(self) -> dict[str, int]:
        """What a model for this data is built with (``model_for_round``'s and ``Run.load_model``'s keywords)."""
        return dict(num_classes=self.num_classes, in_channels=self.in_channels, image_size=self.image_size)

    @property
    def device(self) -> torch.device:
        return self.test.y.device


# ---------------------------------------------------------------- reading datasets

@dataclass
class _Raw:
    """A dataset as read, before splitting: the training pool (val is carved from it) and the test split.

    x is a resident tensor (uint8 [N, C, H, W], or float32 in [0, 1]) or a list of image paths.
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
    if cfg.name in _TORCHVISION and not cfg.download:
        spec, root = _TORCHVISION[cfg.name], Path(cfg.root).resolve()
        missing = [f for f in spec.files if not (root / f).is_file()]
        if missing:
            raise _missing_files_error(spec, root, missing)
    elif cfg.name == "imagefolder" and not (Path(cfg.root) / "train").is_dir():
        raise DataError(f"imagefolder: no train/ folder in {Path(cfg.root).resolve()}; {_IMAGEFOLDER_HOW}")


def train_split_size(cfg: DataConfig) -> int | None:
    """Training examples left after the validation hold-out, before any subset (what ``load`` splits off),
    known without reading the images; None where only reading the files tells (imagefolder)."""
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


_READERS = {"digits": _read_digits, "imagefolder": _read_imagefolder, **{k: _read_torchvision for k in _TORCHVISION}}


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
