"""How does each round hold up off its training distribution? Test accuracy under synthetic corruptions.

    images01 = corrupt(x01, "gaussian_blur", severity=3, generator=g)   # [B, C, H, W] in [0, 1] -> same
    result = run_robustness(run)                                        # every round, cached in the run

Pham et al. (Sec. 7, "self-distillation transfers robustness") evaluate teacher and students out of
distribution; Hendrycks & Dietterich's CIFAR-10-C is the usual benchmark. Its files cannot be
downloaded here, so sdlab corrupts the test split itself, in torch, on the fly and seeded, with five
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
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from sdcore.analysis.compare import config_label, group_key
from sdcore.analysis.registry import AnalysisKind, dump_list, get_or_compute, register
from sdcore.data import load
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
    mean_corrupted: float  # mean over every corruption and severity: the out-of-distribution (OOD) number


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


@dataclass(frozen=True)
class RobustnessSettings:
    """No knob yet: the corruptions, severities and seeds are the module's."""

    def validate(self) -> "RobustnessSettings":
        return self


def run_robustness(run: Run, *, device: str = "cpu") -> list[RoundRobustness]:
    """Every finished round of ``run`` under every corruption (module doc), cached in <run>/analysis/
    (registry: kind "robustness") keyed by the finished rounds; [] before the first round ends."""
    return get_or_compute(run, "robustness", device=device)


def _compute(run: Run, settings: RobustnessSettings, *, device, progress, should_stop) -> list[RoundRobustness]:
    finished = run.finished_rounds()
    cfg = run.config()
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


register(AnalysisKind(
    name="robustness", label="robustness (25 corrupted test sets)", settings=RobustnessSettings, compute=_compute,
    dump=dump_list, load=lambda rs: [RoundRobustness(**r) for r in rs], version=2,
    applies=lambda run: bool(run.finished_rounds()), empty=[]))
