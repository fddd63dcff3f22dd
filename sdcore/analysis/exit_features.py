"""What each BYOT exit sees: its features' class separation (SSE/SSB, BYOT Table 6) and a 2D PCA
view (BYOT Fig. 6), on the test split.

    stats = separation(features, labels)        # SSE, SSB, SSE/SSB
    xy = pca_2d(features)                       # [N, 2]
    per_exit = run_exit_features(run)           # every exit of a finished BYOT run, cached

BYOT (Sec. 5, Table 6): SSE is the within-class sum of squares, sum_i ||f_i - mu_{y_i}||^2; SSB the
between-class one, sum_c n_c ||mu_c - mu||^2; the smaller SSE/SSB, the denser and farther apart the
class clusters, and it falls from the shallowest exit to the deepest. The features are each exit's
bottleneck output (the input of its classifier, the vectors BYOT's hint loss compares).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sdcore.analysis.registry import AnalysisKind, dump_list, get_or_compute, register
from sdcore.data import load
from sdcore.models import has_exits
from sdcore.runs import Run

MAX_POINTS = 2000  # PCA points kept per exit for the scatter (the statistics use every example)


@dataclass(frozen=True)
class Separation:
    sse: float  # within-class sum of squares
    ssb: float  # between-class sum of squares
    ratio: float  # sse / ssb (inf when every class has the same mean)


def separation(features: Tensor, labels: Tensor) -> Separation:
    """SSE, SSB and SSE/SSB of features [N, D] grouped by labels [N] (module doc), in float64."""
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels) or len(labels) == 0:
        raise ValueError(f"features must be [N, D] and labels [N] with N > 0, got {tuple(features.shape)} "
                         f"and {tuple(labels.shape)}")
    f = features.detach().to("cpu", torch.float64)
    y = labels.detach().cpu()
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(classes), f.shape[1], dtype=torch.float64).index_add_(0, inverse, f)
    means = sums / counts[:, None]
    sse = float(((f - means[inverse]) ** 2).sum())
    ssb = float((counts[:, None] * (means - f.mean(0)) ** 2).sum())
    return Separation(sse=sse, ssb=ssb, ratio=sse / ssb if ssb > 0 else float("inf"))


def pca_2d(features: Tensor) -> Tensor:
    """The features [N, D] projected on their top two principal components, [N, 2] float64; each
    component's sign is fixed so that its largest-magnitude loading is positive (deterministic)."""
    f = features.detach().to("cpu", torch.float64)
    centered = f - f.mean(0)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)
    comps = vh[:2]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    out = centered @ comps.T
    return out if out.shape[1] == 2 else torch.cat([out, torch.zeros(len(out), 2 - out.shape[1], dtype=out.dtype)], 1)


@dataclass(frozen=True)
class ExitFeatures:
    exit: int  # 0 = shallowest
    separation: Separation
    points: list[list[float]]  # PCA coordinates of up to MAX_POINTS test examples
    labels: list[int]  # their classes
    explained: float  # share of the variance the two components carry
    class_names: list[str]  # the dataset's, indexed by label


@dataclass(frozen=True)
class FeaturesSettings:
    """No knob: every exit of the last finished round on the whole test split."""

    def validate(self) -> "FeaturesSettings":
        return self


def run_exit_features(run: Run, *, device: str = "cpu") -> list[ExitFeatures]:
    """Every exit of a finished BYOT run's model on the test split ([] if the run has no exits or no
    finished round), cached in <run>/analysis/ (registry kind "exit_features")."""
    return get_or_compute(run, "exit_features", device=device)


def _applies(run: Run) -> bool:
    return bool(run.config().model.exits and run.finished_rounds())


def _compute(run: Run, settings: FeaturesSettings, *, device, progress, should_stop) -> list[ExitFeatures]:
    cfg, finished = run.config(), run.finished_rounds()
    data = load(cfg.data, seed=cfg.seed, device=device)
    model = run.load_model(finished[-1], **data.shapes, device=data.device)
    if not has_exits(model):
        return []
    feats: list[list[Tensor]] = []
    batches = -(-len(data.test) // 512)
    with torch.no_grad():
        for b, (_, x, _) in enumerate(data.test.batches(512, shuffle=False, augment=False)):
            progress(0.5 * b / batches, "features of every exit")
            feats.append([f.float().cpu() for f in model.forward_exits(x).features])
    y = data.test.y.cpu()
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:MAX_POINTS].sort().values
    out = []
    for i, f in enumerate(torch.cat(parts) for parts in zip(*feats)):
        progress(0.5 + 0.5 * i / len(feats[0]), f"exit {i + 1}: separation and PCA")
        xy = pca_2d(f)
        centered = f.double() - f.double().mean(0)
        total = float((centered ** 2).sum())
        out.append(ExitFeatures(exit=i, separation=separation(f, y), points=xy[keep].tolist(), labels=y[keep].tolist(),
                                explained=float((xy ** 2).sum()) / total if total > 0 else 0.0,
                                class_names=list(data.class_names)))
    return out


register(AnalysisKind(
    name="exit_features", label="exit features", settings=FeaturesSettings, compute=_compute, dump=dump_list,
    load=lambda es: [ExitFeatures(**{**e, "separation": Separation(**e["separation"])}) for e in es],
    version=2, applies=_applies, empty=[]))
