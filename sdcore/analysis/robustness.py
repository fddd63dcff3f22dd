"""How does each round hold up off its training distribution? Test accuracy under corruptions.

    images01 = corrupt(x01, "gaussian_blur", severity=3, generator=g)   # [B, C, H, W] in [0, 1] -> same
    result = run_robustness(run)                                        # every round, cached in the run
    result = run_robustness(run, RobustnessSettings(source="cifar-c"))  # the official CIFAR-10-C / -100-C files
    result[0].mce, result[0].errors                                     # their mean corruption error, per corruption

Pham et al. (Sec. 7, "self-distillation transfers robustness") evaluate teacher and students out of
distribution; Hendrycks & Dietterich's CIFAR-10-C is the usual benchmark (read below where its files are at
hand). For any dataset, sdlab also corrupts the test split itself, in torch, on the fly and seeded, with five
of the CIFAR-C corruption families at five severities each (parameters below; CIFAR-C's where they
carry over to any image size, adapted where they do not, e.g. pixelation must be visible on 8x8
digits). Corruptions act on pixel values in [0, 1] (the test images are un-normalized, corrupted,
clipped to [0, 1] and normalized again with the dataset's mean/std):

* gaussian_noise: x + N(0, s^2), s = 0.08, 0.12, 0.18, 0.26, 0.38 (ImageNet-C's);
* gaussian_blur: a Gaussian kernel of std 0.4, 0.6, 0.8, 1.0, 1.5 pixels (CIFAR-C's first four),
  reflect padding;
* contrast: (x - m) * c + m around each image's mean m, c = 0.75, 0.5, 0.4, 0.3, 0.15 (CIFAR-C's);
* brightness: x + b, b = 0.1, 0.2, 0.3, 0.4, 0.5;
* pixelate: area-downsample to round(f * H) pixels a side and back up (nearest), f = 0.9, 0.75, 0.6,
  0.5, 0.4 (8x8 digits: 7, 6, 5, 4, 3 pixels; 32x32: 29, 24, 19, 16, 13). The resolution falls with
  every severity; the pixel distance to the clean image need not (blocks that divide the image
  evenly can sit closer to it than misaligned larger ones).

"ID" is the clean test accuracy, "OOD" the mean accuracy over all 25 corrupted copies.

**The official files** (``RobustnessSettings(source="cifar-c")``, runs trained on cifar10 / cifar100): Hendrycks &
Dietterich's released CIFAR-10-C / CIFAR-100-C (https://zenodo.org/record/2535967, /3555552), read from
``<root>/CIFAR-10-C/<corruption>.npy`` (root: the run's data.root unless given): uint8 [5N, 32, 32, 3], severity s
in rows (s-1)N..sN-1, each block the N test images in test-set order, and ``labels.npy`` [5N] (hendrycks/robustness,
ImageNet-C/create_c/make_cifar_c.py writes them so). Files are memory-mapped and evaluated per severity in
batches, through the run's own normalization (``data.test.transform``, so data.normalize holds too). The 15
corruptions of the benchmark are ``CIFAR_C`` (the authors' order); the 4 extra released files
(``CIFAR_C_EXTRA``, which make_cifar_c.py lists apart: the authors' held-out validation corruptions) are scored
too but never enter the means. Per round:

* per-corruption error E_c = 100 - mean over severities s of the accuracy %: on a file with equal blocks this is
  the error on all 5N images at once, what AugMix's ``test_c`` prints per corruption (google-research/augmix,
  cifar.py);
* mCE = mean of E_c over the 15 corruptions: the *unnormalized* mean corruption error that CIFAR-10-C /
  CIFAR-100-C results report (AugMix, ICLR 2020, Table 1; cifar.py's "Mean Corruption Error" = 100 - mean
  accuracy over the 15 files). ImageNet-C's mCE divides each E_c by AlexNet's; there is no such baseline for CIFAR;
* relative mCE = mCE - clean error = mean over c, s of (E_{s,c} - E_clean): the numerator of Hendrycks &
  Dietterich's Relative CE (ICLR 2019), likewise without the AlexNet denominator: what the corruptions cost beyond
  the clean error.

A corruption file that is missing or damaged (not .npy, truncated, wrong shape or dtype) is left out with its
reason (``problems``) and the others are computed; mCE is then over the corruptions read (``complete`` is
False). A missing folder, a bad labels.npy or no readable standard file stops the whole computation with one
line. A cached result is recomputed once the files in the folder change (size or modification time).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sdcore.analysis.compare import config_label, group_key
from sdcore.analysis.registry import AnalysisKind, dump_list, get_or_compute, register
from sdcore.config import ConfigError, RunConfig
from sdcore.data import DataError, load
from sdcore.engine import predict_logits
from sdcore.runs import Run

SEVERITIES = (1, 2, 3, 4, 5)
PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "gaussian_blur": (0.4, 0.6, 0.8, 1.0, 1.5),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "pixelate": (0.9, 0.75, 0.6, 0.5, 0.4),
}
CORRUPTIONS = tuple(PARAMS)


def corrupt(x: Tensor, name: str, severity: int, *, generator: torch.Generator | None = None) -> Tensor:
    """``x`` [B, C, H, W] with values in [0, 1], corrupted by ``name`` at ``severity`` (1..5), clipped to
    [0, 1]; same shape, dtype and device. Only gaussian_noise draws random numbers (from ``generator``,
    on the CPU; None: seeded 0)."""
    if name not in PARAMS:
        raise ValueError(f"corruption must be one of {', '.join(CORRUPTIONS)}, got {name!r}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of 1..5, got {severity!r}")
    if x.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(x.shape)}")
    c = PARAMS[name][severity - 1]
    if name == "gaussian_noise":
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        out = x + c * torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
    elif name == "gaussian_blur":
        out = _blur(x, c)
    elif name == "contrast":
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        out = (x - m) * c + m
    elif name == "brightness":
        out = x + c
    else:
        h, w = x.shape[-2:]
        small = F.interpolate(x, size=(max(1, round(c * h)), max(1, round(c * w))), mode="area")
        out = F.interpolate(small, size=(h, w), mode="nearest")
    return out.clamp(0.0, 1.0)


def _blur(x: Tensor, sigma: float) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    # Reflect padding needs pad < size; tiny images fall back to replicate.
    mode = "reflect" if radius < min(x.shape[-2:]) else "replicate"
    y = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=mode), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, radius, radius), mode=mode), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@dataclass(frozen=True)
class RoundRobustness:
    round: int
    clean: float  # test accuracy %, the in-distribution (ID) number
    accuracy: dict[str, list[float]]  # corruption -> test accuracy % at severities 1..5
    mean_corrupted: float  # mean accuracy % over the benchmark's corruptions and severities: the OOD number
    #                        (synthetic: all 25 sets; cifar-c: the 15 of CIFAR_C that could be read, = 100 - mCE)
    source: str = "synthetic"  # RobustnessSettings.source the result comes from
    problems: dict[str, str] = field(default_factory=dict)  # cifar-c: corruption -> why its file was left out
    folder: str = ""  # cifar-c: the absolute folder the files were read from
    files: dict[str, list[int]] = field(default_factory=dict)  # cifar-c: file -> [size, mtime_ns] when read

    @property
    def errors(self) -> dict[str, float]:
        """Corruption -> error % averaged over the 5 severities (E_c in the module doc)."""
        return {n: 100.0 - sum(a) / len(a) for n, a in self.accuracy.items()}

    @property
    def complete(self) -> bool:
        """cifar-c: every one of the 15 benchmark corruptions was read (mCE is the literature's number)."""
        return self.source == "cifar-c" and all(n in self.accuracy for n in CIFAR_C)

    @property
    def mce(self) -> float | None:
        """cifar-c: the unnormalized mean corruption error % over the CIFAR_C corruptions read; None for synthetic."""
        return 100.0 - self.mean_corrupted if self.source == "cifar-c" else None

    @property
    def relative_mce(self) -> float | None:
        """cifar-c: mCE - clean error %, the unnormalized relative mCE (module doc); None for synthetic."""
        return None if self.mce is None else self.mce - (100.0 - self.clean)


def robustness(model, source, *, seed: int = 0, batch_size: int = 512,
               progress: Callable[[float, str], None] | None = None) -> tuple[float, dict[str, list[float]]]:
    """(clean accuracy %, {corruption: [accuracy % at severity 1..5]}) of ``model`` on ``source``.

    The noise is seeded per (seed, corruption, severity, batch), so every model sees the same
    corrupted images. ``progress(fraction, corruption)`` before each corruption of each batch."""
    mean, std = source.transform.mean, source.transform.std
    was = model.training
    model.eval()
    hits = {(n, s): 0 for n in CORRUPTIONS for s in SEVERITIES}
    clean, total = 0, 0
    n_batches = -(-len(source) // batch_size)
    try:
        with torch.no_grad():
            for b, (_, x, y) in enumerate(source.batches(batch_size, shuffle=False, augment=False)):
                x01 = (x * std + mean).clamp(0, 1)
                clean += int((model(x).argmax(1) == y).sum())
                total += len(y)
                for i, n in enumerate(CORRUPTIONS):
                    if progress is not None:
                        progress((b + i / len(CORRUPTIONS)) / n_batches, n.replace("_", " "))
                    for s in SEVERITIES:
                        g = torch.Generator().manual_seed(((seed * 31 + i) * 7 + s) * 100_003 + b)
                        xc = (corrupt(x01, n, s, generator=g) - mean) / std
                        hits[(n, s)] += int((model(xc).argmax(1) == y).sum())
    finally:
        model.train(was)
    return 100.0 * clean / total, {n: [100.0 * hits[(n, s)] / total for s in SEVERITIES] for n in CORRUPTIONS}


# ---------------------------------------------------------------- the official CIFAR-10-C / CIFAR-100-C files

CIFAR_C = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
           "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
CIFAR_C_EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")  # released too; outside the mCE
CIFAR_C_FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}  # run's data.name -> folder under the root
CIFAR_C_IMAGE = (32, 32, 3)  # H, W, C of every image in the files
LABELS = "labels.npy"
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class CifarCFolder:
    """What a folder holds, from file names only (cheap: the page shows it on every render)."""
    title: str  # "CIFAR-10-C" or "CIFAR-100-C"
    path: Path  # absolute
    present: tuple[str, ...]  # corruptions (CIFAR_C + CIFAR_C_EXTRA order) whose <name>.npy is there
    labels: bool  # labels.npy is there

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(n for n in CIFAR_C + CIFAR_C_EXTRA if n not in self.present)

    def problem(self) -> str | None:
        """The one line when nothing can be computed from this folder, else None."""
        how = (f"download {self.title}.tar from https://zenodo.org/record/"
               f"{'2535967' if self.title == 'CIFAR-10-C' else '3555552'} and extract it in {self.path.parent}")
        if not self.path.is_dir():
            return f"{self.title} not found: no folder {self.path}; {how}"
        if not self.labels:
            return f"{self.title}: {self.path / LABELS} is missing; {how}"
        if not any(n in self.present for n in CIFAR_C):
            return f"{self.title}: none of the 15 corruption files (e.g. {CIFAR_C[0]}.npy) is in {self.path}; {how}"
        return None

    def describe(self) -> str:
        """Where it looks and what is missing, in a sentence."""
        found = f"{sum(n in self.present for n in CIFAR_C)} of the 15 corruption files"
        extra = sum(n in self.present for n in CIFAR_C_EXTRA)
        absent = [f"{n}.npy" for n in self.missing] + ([] if self.labels else [LABELS])
        return (f"{self.title} in {self.path}: {found} (+{extra} of 4 extra)"
                + (f"; missing: {', '.join(absent)}" if absent else "; nothing missing"))


def cifar_c_folder(cfg: RunConfig, settings: "RobustnessSettings") -> CifarCFolder:
    """Where ``settings`` looks for a run (config ``cfg``) trained on cifar10 / cifar100, and what is there.
    ConfigError for a run on another dataset. ``<root>/CIFAR-10-C``, or root itself when it is that folder."""
    title = CIFAR_C_FOLDERS.get(cfg.data.name)
    if title is None:
        raise ConfigError(f"CIFAR-10-C needs a run trained on cifar10 (CIFAR-100-C on cifar100); this run was "
                          f"trained on {cfg.data.name}")
    root = Path(settings.root if settings.root is not None else cfg.data.root).expanduser().resolve()
    path = root if root.name == title and not (root / title).is_dir() else root / title
    try:
        names = {p.name for p in path.iterdir()} if path.is_dir() else set()
    except OSError:  # unreadable: described as empty, and problem() names the folder
        names = set()
    present = tuple(n for n in CIFAR_C + CIFAR_C_EXTRA if f"{n}.npy" in names)
    return CifarCFolder(title=title, path=path, present=present, labels=LABELS in names)


class _BadFile(ValueError):
    """One line naming a CIFAR-C file and what is wrong with it."""


def _open_npy(path: Path, *, dtype_ok: Callable[[np.dtype], bool], what: str, shape: tuple[int, ...]) -> np.ndarray:
    """``path`` memory-mapped read-only after checking it is a whole .npy of ``shape`` whose dtype passes
    ``dtype_ok`` (``what`` names it in the message); _BadFile otherwise."""
    try:
        with open(path, "rb") as f:
            if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                raise _BadFile(f"{path} is not a .npy file")
            f.seek(0)
            major, _ = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            got_shape, _, dtype = header(f)
            offset = f.tell()
        size = path.stat().st_size
    except _BadFile:
        raise
    except FileNotFoundError:
        raise _BadFile(f"{path} is missing") from None
    except OSError as e:
        raise _BadFile(f"{path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:  # numpy: a damaged header
        raise _BadFile(f"{path} has a damaged .npy header ({str(e).splitlines()[0]})") from None
    if not dtype_ok(dtype) or dtype.hasobject:
        raise _BadFile(f"{path} holds {dtype} values, not {what}")
    if tuple(got_shape) != shape:
        raise _BadFile(f"{path} has shape {tuple(got_shape)}, expected {shape}")
    need = offset + math.prod(shape) * dtype.itemsize
    if size < need:
        raise _BadFile(f"{path} is truncated: {size} bytes, its array needs {need}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise _BadFile(f"{path}: cannot read it ({e})") from None


def _labels(folder: CifarCFolder, test_y: Tensor) -> None:
    """DataError unless labels.npy is the run's N test labels, once per severity (the files' order)."""
    n = len(test_y)
    try:
        labels = np.asarray(_open_npy(folder.path / LABELS, dtype_ok=lambda d: d.kind in "iu", what="integer labels",
                                      shape=(5 * n,)))
    except _BadFile as e:
        raise DataError(f"{folder.title}: {e} (5 x the {n} test images of the run's dataset)") from None
    expected = test_y.cpu().numpy()
    for s in SEVERITIES:
        block = labels[(s - 1) * n:s * n]
        if not np.array_equal(block, expected):
            i = int(np.flatnonzero(block != expected)[0])
            raise DataError(f"{folder.title}: {folder.path / LABELS} does not match the run's test labels (severity "
                            f"{s}, image {i}: {int(block[i])}, the test set says {int(expected[i])}); is it "
                            f"{folder.title}'s own labels.npy?")


def fingerprint(path: Path) -> dict[str, list[int]]:
    """File name -> [size, mtime_ns] of the CIFAR-C files in ``path`` (a changed file makes a cached result stale)."""
    out = {}
    for name in [f"{n}.npy" for n in CIFAR_C + CIFAR_C_EXTRA] + [LABELS]:
        try:
            st = (path / name).stat()
        except OSError:
            continue
        out[name] = [st.st_size, st.st_mtime_ns]
    return out


def cifar_c_accuracy(model, images: np.ndarray, y: Tensor, transform, *, batch_size: int = 500,
                     progress: Callable[[float, str], None] | None = None) -> list[float]:
    """Accuracy % of ``model`` at severities 1..5 of one corruption file ``images`` (uint8 [5N, 32, 32, 3],
    memory-mapped: read one batch at a time), against the N test labels ``y`` (on the model's device).
    ``transform`` is the run's test transform (uint8 NCHW -> normalized float). ``progress(fraction, what)``
    before each batch."""
    n = len(y)
    was = model.training
    model.eval()
    out, steps = [], 5 * -(-n // batch_size)
    try:
        with torch.no_grad():
            for s in SEVERITIES:
                hits = 0
                for start in range(0, n, batch_size):
                    if progress is not None:
                        progress(((s - 1) * -(-n // batch_size) + start // batch_size) / steps, f"severity {s}")
                    rows = images[(s - 1) * n + start:(s - 1) * n + min(n, start + batch_size)]  # [B, H, W, C]
                    x = torch.from_numpy(np.array(rows)).to(y.device).permute(0, 3, 1, 2)  # read: a copy
                    hits += int((model(transform(x, None)).argmax(1) == y[start:start + len(rows)]).sum())
                out.append(100.0 * hits / n)
    finally:
        model.train(was)
    return out


SOURCES = ("synthetic", "cifar-c")  # RobustnessSettings.source


@dataclass(frozen=True)
class RobustnessSettings:
    source: str = "synthetic"  # "synthetic": sdlab's 25 corrupted copies of the test split (module doc); "cifar-c":
    #                            Hendrycks & Dietterich's released CIFAR-10-C / CIFAR-100-C files (runs on cifar10/100)
    root: str | None = None  # cifar-c: the folder holding CIFAR-10-C/ (or CIFAR-100-C/); None = the run's data.root

    def validate(self) -> "RobustnessSettings":
        if self.source not in SOURCES:
            raise ConfigError(f"robustness source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.root is not None:
            if self.source != "cifar-c":
                raise ConfigError("robustness root applies only to source='cifar-c' (where the files are)")
            if not isinstance(self.root, str) or not self.root.strip():
                raise ConfigError(f"robustness root must be a folder path, got {self.root!r}")
        return self


def run_robustness(run: Run, settings: RobustnessSettings | None = None, *, device: str = "cpu",
                   progress: Callable[[float, str], None] | None = None) -> list[RoundRobustness]:
    """Every finished round of ``run`` under every corruption of ``settings.source`` (module doc), cached in
    <run>/analysis/ (registry: kind "robustness") keyed by the settings and the finished rounds; [] before the
    first round ends."""
    return get_or_compute(run, "robustness", settings, device=device, progress=progress)


def _compute(run: Run, settings: RobustnessSettings, *, device, progress, should_stop) -> list[RoundRobustness]:
    cfg = run.config()
    if settings.source == "cifar-c":
        return _compute_cifar_c(run, cfg, settings, device=device, progress=progress)
    finished = run.finished_rounds()
    data = load(cfg.data, seed=cfg.seed, device=device)
    out = []
    for j, k in enumerate(finished):
        def step(f: float, what: str, j=j, k=k) -> None:  # this round's share of the whole
            progress((j + f) / len(finished), f"round {k} · {what}")
        clean, acc = robustness(run.load_model(k, **data.shapes, device=data.device), data.test, seed=cfg.seed,
                                progress=step)
        out.append(RoundRobustness(round=k, clean=clean, accuracy=acc,
                                   mean_corrupted=sum(sum(v) for v in acc.values()) / (len(acc) * len(SEVERITIES))))
    return out


def _compute_cifar_c(run: Run, cfg: RunConfig, settings: RobustnessSettings, *, device,
                     progress) -> list[RoundRobustness]:
    folder = cifar_c_folder(cfg, settings)
    if (line := folder.problem()) is not None:
        raise DataError(line)
    stamp = fingerprint(folder.path)  # before reading: a file replaced meanwhile makes the record stale, not wrong
    data = load(cfg.data, seed=cfg.seed, device=device)
    if data.image_size != CIFAR_C_IMAGE[0] or data.in_channels != CIFAR_C_IMAGE[2]:
        raise DataError(f"{folder.title} holds 32x32 RGB images; this run's data are "
                        f"{data.in_channels}x{data.image_size}x{data.image_size}")
    _labels(folder, data.test.y)
    n = len(data.test)
    files, problems = {}, {}
    for name in CIFAR_C + CIFAR_C_EXTRA:
        try:
            files[name] = _open_npy(folder.path / f"{name}.npy", dtype_ok=lambda d: d == np.uint8, what="uint8 pixels",
                                    shape=(5 * n, *CIFAR_C_IMAGE))
        except _BadFile as e:
            problems[name] = str(e)
    if not any(name in files for name in CIFAR_C):
        raise DataError(f"{folder.title}: no corruption file could be read; {problems[CIFAR_C[0]]}")
    finished = run.finished_rounds()
    units = 1 + len(files)  # the clean pass counts as one file's worth of progress
    out = []
    for j, k in enumerate(finished):
        model = run.load_model(k, **data.shapes, device=data.device)
        progress(j / len(finished), f"round {k} · clean")
        clean = 100.0 * int((predict_logits(model, data.test).argmax(1) == data.test.y).sum()) / len(data.test)
        acc, bad = {}, dict(problems)
        for u, (name, images) in enumerate(files.items(), start=1):
            def step(f: float, what: str, j=j, k=k, u=u, name=name) -> None:
                progress((j + (u + f) / units) / len(finished), f"round {k} · {name.replace('_', ' ')} · {what}")
            try:
                acc[name] = cifar_c_accuracy(model, images, data.test.y, data.test.transform, progress=step)
            except OSError as e:  # the disk failed mid-file: this corruption only
                bad[name] = f"{folder.path / f'{name}.npy'}: read failed ({e.strerror or e})"
        read = [acc[c] for c in CIFAR_C if c in acc]
        out.append(RoundRobustness(
            round=k, clean=clean, accuracy=acc, mean_corrupted=sum(map(sum, read)) / (len(read) * len(SEVERITIES)),
            source="cifar-c", problems=bad, folder=str(folder.path), files=stamp))
    return out


def _rank(order: tuple[str, ...]) -> Callable[[str], tuple[int, str]]:
    return lambda name: (order.index(name) if name in order else len(order), name)


def _load(rows: list[dict[str, Any]]) -> list[RoundRobustness]:
    """The cached rounds; ValueError (stale: recompute) once the CIFAR-C files they were read from have changed.
    A folder that is gone keeps its results: nothing newer could be computed from it."""
    out = []
    for row in rows:  # the record's keys are sorted: back to the benchmark's order (tables and charts follow it)
        order = CIFAR_C + CIFAR_C_EXTRA if row.get("source") == "cifar-c" else CORRUPTIONS
        acc = row["accuracy"]
        out.append(RoundRobustness(**{**row, "accuracy": {n: acc[n] for n in sorted(acc, key=_rank(order))}}))
    for r in out:
        if r.source == "cifar-c" and Path(r.folder).is_dir() and fingerprint(Path(r.folder)) != r.files:
            raise ValueError(f"the files in {r.folder} changed since round {r.round} was evaluated")
    return out


@dataclass(frozen=True)
class AlphaCurve:
    label: str  # config_label of the group (its α replaced by "α=*")
    method: str
    curves: dict[int, tuple[list[float], list[float], list[float]]]  # round -> (alphas, clean %, corrupted %)
    seeds: dict[float, int]  # runs pooled per alpha


def alpha_tradeoff(members: list[tuple[Any, list[RoundRobustness]]]) -> list[AlphaCurve]:
    """Group (config, results) pairs by everything but alpha and the seed; for every group with at
    least two alphas, per round the mean (over seeds) clean and corrupted accuracy at each alpha."""
    groups: dict[str, list[tuple[Any, list[RoundRobustness]]]] = {}
    for cfg, results in members:
        groups.setdefault(group_key(cfg.replace(alpha=0.0)), []).append((cfg, results))
    out = []
    for items in groups.values():
        alphas = sorted({cfg.alpha for cfg, _ in items})
        if len(alphas) < 2:
            continue
        rounds = sorted({r.round for _, results in items for r in results})
        curves = {}
        for k in rounds:
            xs, clean, ood = [], [], []
            for a in alphas:
                rs = [r for cfg, results in items if cfg.alpha == a for r in results if r.round == k]
                if rs:
                    xs.append(a)
                    clean.append(sum(r.clean for r in rs) / len(rs))
                    ood.append(sum(r.mean_corrupted for r in rs) / len(rs))
            if len(xs) >= 2:
                curves[k] = (xs, clean, ood)
        cfg0 = items[0][0]
        label = config_label(cfg0).replace(f"α={cfg0.alpha:g}", "α=*")
        out.append(AlphaCurve(label=label, method=cfg0.method, curves=curves,
                              seeds={a: sum(cfg.alpha == a for cfg, _ in items) for a in alphas}))
    return out


NOT_IMAGES = ("mnist1d",)  # datasets the image corruptions do not apply to (1-D signals, not pixels in [0, 1])


register(AnalysisKind(
    name="robustness", label="robustness (corrupted test sets)", settings=RobustnessSettings, compute=_compute,
    dump=dump_list, load=_load, version=3,
    applies=lambda run: bool(run.finished_rounds()) and run.config().data.name not in NOT_IMAGES, empty=[]))
