"""Is a round's confidence worth trusting? Calibration and selective-prediction metrics (PS-KD, Table 1).

    report = calibration_report(logits, targets)         # top-1/top-5 error, NLL, ECE, Brier, AURC, E-AURC
    ece = expected_calibration_error(probs, targets)     # probs: [N, C] softmax, targets: [N]
    per_round = run_calibration(run)                     # every round (and BYOT exit) of a run, cached (registry)

Two conventions for ECE's bins and E-AURC's optimum (``convention=``, default "pskd"):

* **"pskd"**: what PS-KD's authors' code computes (lgcnsai/PS-KD-Pytorch, ``utils/metric.py``,
  ``metric_ece_aurc_eaurc``), so the numbers compare with PS-KD's Table 1. Bin width 1/n_bins
  (n_bins 10 by default: the reference's ``bin_size=0.1``); bin i is (upper_i - width, upper_i] with
  upper = ``np.arange(width, 1 + width, width)``, float quirks and all: upper_2 is 0.30000000000000004
  and 0.7 falls in (0.6000000000000001, 0.7000000000000001]; a lower bound can sit one ulp above the
  previous upper one, so a float64 confidence of exactly 0.20000000000000004 or 0.6000000000000001 is
  in no bin (no float32 value is); for a few n_bins (e.g. 49) ``np.arange`` gives n_bins + 1 bins.
  ECE divides by N, all examples. E-AURC's optimum is the exact one for N examples with r errors.
* **"guo"**: Guo et al.'s equal-width bins (i/M, (i+1)/M] over [0, 1] (M = n_bins, 15 by default;
  a confidence of 0 goes to the first bin) and Geifman et al.'s continuous optimum for E-AURC.

Definitions:

* **ECE** (Guo et al. 2017, "On calibration of modern neural networks"): confidence = max softmax
  probability; ECE = sum over bins B of |B|/N * |accuracy(B) - mean confidence(B)|, a fraction
  (PS-KD prints it in %). Empty bins contribute nothing.
* **NLL**: mean -log p(y | x), natural log. **Brier**: mean over examples of sum_c (p_c - 1[c = y])^2
  (in [0, 2]).
* **AURC** (Geifman et al. 2019, "Bias-reduced uncertainty estimation for deep neural classifiers"):
  sort the examples by confidence, most confident first; the risk at coverage k/N is the error rate
  among the first k; AURC is the mean of that risk over k = 1..N (PS-KD prints it x 10^3). With tied
  confidences AURC depends on the order of the tied examples: sdlab sorts stably, so ties keep the
  data order. The reference does not: it reverses ``np.argsort``, an unstable sort, so its tie order
  is numpy's business (quicksort, or a SIMD sort on some CPUs). On tie-free confidences both agree.
  **E-AURC** = AURC - AURC*, AURC* the AURC of a perfect ranking (every error least confident) with
  the same error rate r = R/N: "pskd" takes it exactly, (1/N) sum_{i=1..R} i / (N - R + i), so a
  perfect ranking scores 0; "guo" takes Geifman's continuous r + (1 - r) ln(1 - r) (0 when r = 0,
  1 when r = 1), a little below the exact one, so a perfect ranking scores slightly above 0.
* **Top-k error**: % of examples whose target is not among the k highest logits (k capped at C).

All functions take CPU or GPU tensors and compute in float64 on the CPU; ``calibration_report`` takes
the softmax in float64 too (PS-KD's code feeds a float32 GPU softmax, which saturates at 1.0 and so
ties more often).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sdcore.analysis.registry import AnalysisKind, get_or_compute, register
from sdcore.data import load
from sdcore.engine import predict_logits, resolve_device
from sdcore.models import has_exits
from sdcore.runs import Run


@dataclass(frozen=True)
class Convention:
    """How ECE bins confidences and which optimum E-AURC subtracts (module doc)."""
    label: str  # for pickers
    n_bins: int  # default number of bins
    bins: str  # the bins, with {n_bins} and {width} to fill in
    optimum: str  # E-AURC's AURC*


CONVENTIONS = {
    "pskd": Convention(label="PS-KD's reference code (10 bins of width 0.1, exact E-AURC optimum)", n_bins=10,
                       bins="{n_bins} bins (upper - {width:.3g}, upper] with PS-KD's float edges "
                            "np.arange({width:.3g}, 1 + {width:.3g}, {width:.3g})",
                       optimum="the exact optimum for N examples, as PS-KD's utils/metric.py"),
    "guo": Convention(label="Guo et al. (15 equal-width bins, Geifman's continuous E-AURC optimum)", n_bins=15,
                      bins="{n_bins} equal-width bins (i/{n_bins}, (i+1)/{n_bins}] (Guo et al. 2017)",
                      optimum="Geifman et al.'s continuous optimum r + (1 - r) ln(1 - r)"),
}


def describe(convention: str, n_bins: int) -> str:
    """One sentence for captions: ECE's bins and E-AURC's optimum under this convention."""
    c = CONVENTIONS[convention]
    return (f"ECE over {c.bins.format(n_bins=n_bins, width=1 / n_bins)}; E-AURC against {c.optimum}"
            f" ({convention!r} convention)")


def _check(probs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    if probs.ndim != 2 or targets.ndim != 1 or len(probs) != len(targets):
        raise ValueError(f"probs must be [N, C] and targets [N], got {tuple(probs.shape)} and {tuple(targets.shape)}")
    if len(targets) == 0:
        raise ValueError("no examples: calibration needs at least one")
    return probs.detach().to("cpu", torch.float64), targets.detach().to("cpu", torch.int64)


def _check_convention(convention: str, n_bins: int | None = None) -> int:
    """n_bins, or the convention's default when None."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    n_bins = CONVENTIONS[convention].n_bins if n_bins is None else n_bins
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    return n_bins


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram's numbers, per confidence bin i = (edges[i], edges[i + 1]] (module doc).
    "pskd": bin i is exactly (edges[i + 1] - 1/n_bins, edges[i + 1]], as the reference computes it;
    that lower bound can differ from edges[i] by one ulp, and the counts can sum to less than N."""
    edges: list[float]  # bins + 1 edges, 0 .. 1 (pskd: its last edge can exceed 1)
    count: list[int]  # examples per bin
    confidence: list[float | None]  # mean confidence in the bin (None: empty)
    accuracy: list[float | None]  # fraction correct in the bin (None: empty)


def _bin_sums(conf: Tensor, correct: Tensor, n_bins: int,
              convention: str) -> tuple[list[float], Tensor, Tensor, Tensor]:
    """(edges, count [B], sum of conf [B], sum of correct [B]) from conf and correct [N], float64."""
    if convention == "guo":
        # Bin i holds conf in (i/M, (i+1)/M]; ceil(conf * M) - 1, with conf = 0 put in bin 0.
        idx = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
        zeros = torch.zeros(n_bins, dtype=torch.float64)
        return ([i / n_bins for i in range(n_bins + 1)], torch.bincount(idx, minlength=n_bins),
                zeros.index_add(0, idx, conf), zeros.index_add(0, idx, correct))
    # The reference's edges and its membership test, conf in (upper - width, upper], one bin at a time:
    # its float bins can leave one-ulp gaps, so an example may be in no bin.
    width = 1 / n_bins
    upper = np.arange(width, 1 + width, width)
    member = ((conf[:, None] > torch.from_numpy(upper - width))
              & (conf[:, None] <= torch.from_numpy(upper))).double()  # [N, B]
    return [0.0, *upper.tolist()], member.sum(0).long(), conf @ member, correct @ member


def reliability(probs: Tensor, targets: Tensor, n_bins: int | None = None, *,
                convention: str = "pskd") -> Reliability:
    """Per-bin count, mean confidence and accuracy of the max-probability prediction; n_bins None:
    the convention's default (pskd 10, guo 15)."""
    probs, targets = _check(probs, targets)
    n_bins = _check_convention(convention, n_bins)
    conf, pred = probs.max(1)
    edges, count, conf_sum, acc_sum = _bin_sums(conf, (pred == targets).double(), n_bins, convention)
    mean = lambda s: [float(a / c) if c else None for a, c in zip(s.tolist(), count.tolist())]  # noqa: E731
    return Reliability(edges=edges, count=count.tolist(), confidence=mean(conf_sum), accuracy=mean(acc_sum))


def expected_calibration_error(probs: Tensor, targets: Tensor, n_bins: int | None = None, *,
                               convention: str = "pskd") -> float:
    """ECE as a fraction in [0, 1] (module doc: x100 is PS-KD's %); probs [N, C] softmax, targets [N]."""
    r = reliability(probs, targets, n_bins, convention=convention)
    n = len(targets)  # all examples, binned or not (pskd's gaps)
    return float(sum(c / n * abs(a - f) for c, a, f in zip(r.count, r.accuracy, r.confidence) if c))


def negative_log_likelihood(probs: Tensor, targets: Tensor) -> float:
    """Mean -log p(target); a zero probability gives inf."""
    probs, targets = _check(probs, targets)
    return float(-torch.log(probs.gather(1, targets[:, None])).mean())


def brier_score(probs: Tensor, targets: Tensor) -> float:
    """Mean over examples of the squared distance between probs and the one-hot target (0 .. 2)."""
    probs, targets = _check(probs, targets)
    onehot = torch.zeros_like(probs).scatter_(1, targets[:, None], 1.0)
    return float(((probs - onehot) ** 2).sum(1).mean())


def topk_error(probs: Tensor, targets: Tensor, k: int = 1) -> float:
    """% of examples whose target is not among the k most probable classes (k capped at C)."""
    probs, targets = _check(probs, targets)
    k = min(k, probs.shape[1])
    top = probs.topk(k, dim=1).indices
    return 100.0 * float((top != targets[:, None]).all(1).double().mean())


def aurc(probs: Tensor, targets: Tensor, *, convention: str = "pskd") -> tuple[float, float]:
    """(AURC, E-AURC), both fractions (module doc: x1000 is PS-KD's table); ties in data order."""
    probs, targets = _check(probs, targets)
    _check_convention(convention)
    conf, pred = probs.max(1)
    order = torch.sort(conf, descending=True, stable=True).indices
    wrong = (pred != targets)[order].double()
    n = len(wrong)
    risk = torch.cumsum(wrong, 0) / torch.arange(1, n + 1, dtype=torch.float64)
    area = float(risk.mean())
    if convention == "pskd":  # the R errors last: risk i / (N - R + i) at coverage N - R + i
        i = torch.arange(1, int(wrong.sum()) + 1, dtype=torch.float64)
        optimal = float((i / (n - len(i) + i)).sum()) / n
    else:
        r = float(wrong.mean())
        optimal = r + (1 - r) * math.log(1 - r) if r < 1 else 1.0
    return area, area - optimal


@dataclass(frozen=True)
class CalibrationReport:
    top1_err: float  # %
    top5_err: float  # %
    nll: float
    ece: float  # fraction (x100 for PS-KD's %)
    brier: float
    aurc: float  # fraction (x1000 for PS-KD's table)
    eaurc: float  # fraction (x1000 for PS-KD's table)
    examples: int
    n_bins: int  # ECE's bins (pskd: np.arange can make one more, see Reliability)
    convention: str  # "pskd" or "guo" (module doc)
    reliability: Reliability

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CalibrationReport":
        return cls(**{**d, "reliability": Reliability(**d["reliability"])})


def calibration_report(logits: Tensor, targets: Tensor, n_bins: int | None = None, *,
                       convention: str = "pskd") -> CalibrationReport:
    """Every metric of the module doc from logits [N, C] (softmax taken here, in float64) and targets [N]."""
    n_bins = _check_convention(convention, n_bins)
    probs = torch.softmax(logits.detach().to("cpu", torch.float64), dim=1)
    a, e = aurc(probs, targets, convention=convention)
    return CalibrationReport(top1_err=topk_error(probs, targets, 1), top5_err=topk_error(probs, targets, 5),
                             nll=negative_log_likelihood(probs, targets),
                             ece=expected_calibration_error(probs, targets, n_bins, convention=convention),
                             brier=brier_score(probs, targets), aurc=a, eaurc=e, examples=len(targets),
                             n_bins=n_bins, convention=convention,
                             reliability=reliability(probs, targets, n_bins, convention=convention))


# ---------------------------------------------------------------- a run's rounds and exits

@dataclass(frozen=True)
class ModelCalibration:
    round: int
    exit: int | None  # a model with exits: the 0-based exit, shallow first; None: the model's forward, or the ensemble
    report: CalibrationReport
    ensemble: bool = False  # the mean softmax of a model's exits

    @property
    def label(self) -> str:
        """"deepest" (the model's forward), "exit 1".."exit K" (shallow to deep) or "ensemble": the CLI's names."""
        return "ensemble" if self.ensemble else "deepest" if self.exit is None else f"exit {self.exit + 1}"


@dataclass(frozen=True)
class CalibrationSettings:
    n_bins: int | None = None  # ECE's bins; None: the convention's (pskd 10, guo 15)
    convention: str = "pskd"  # "pskd" or "guo" (module doc)

    def validate(self) -> "CalibrationSettings":
        """With n_bins resolved, so the default spelled out is the same cache entry; ValueError if bad."""
        return CalibrationSettings(n_bins=_check_convention(self.convention, self.n_bins), convention=self.convention)


def run_calibration(run: Run, *, device: str = "cpu", n_bins: int | None = None,
                    convention: str = "pskd") -> list[ModelCalibration]:
    """Calibration on the test split of every finished round's kept model; for a model with exits, of
    every exit and of the exits' averaged softmax ("ensemble") too. n_bins None: the convention's.

    Cached in <run>/analysis/ (registry: kind "calibration"), keyed by the finished rounds, n_bins and the
    convention (a finished round's weights never change). Raises RunError or ConfigError for an unreadable
    run, ValueError for a bad convention.
    """
    return get_or_compute(run, "calibration", CalibrationSettings(n_bins, convention), device=device)


def _compute_kind(run: Run, settings: CalibrationSettings, *, device, progress, should_stop) -> list[ModelCalibration]:
    return _compute(run, run.finished_rounds(), device, settings.n_bins, settings.convention, progress=progress)


def _compute(run: Run, finished: list[int], device, n_bins: int, convention: str, *,
             progress=None) -> list[ModelCalibration]:
    cfg = run.config()
    data = load(cfg.data, seed=cfg.seed, device=resolve_device(str(device)))
    out = []
    for i, k in enumerate(finished):
        if progress is not None:
            progress(i / len(finished), f"round {k}")
        model = run.load_model(k, **data.shapes, device=data.device)
        for exit_idx, logits, y in _exit_logits(model, data.test):
            if exit_idx == "ensemble":
                out.append(ModelCalibration(k, None, _report_from_probs(logits, y, n_bins, convention), ensemble=True))
            else:
                out.append(ModelCalibration(k, exit_idx, calibration_report(logits, y, n_bins, convention=convention)))
    return out


@torch.no_grad()
def _exit_logits(model, source) -> list[tuple[int | str | None, Tensor, Tensor]]:
    """[(exit, logits [N, C], targets [N])]: exit None for a model without exits, else its 0-based exits and
    "ensemble", for which the mean softmax stands in place of logits."""
    y = source.y.cpu()
    if not has_exits(model):
        return [(None, predict_logits(model, source).float().cpu(), y)]
    per_exit = [z.float().cpu() for z in predict_logits(model, source, exits=True)]
    named = [(i, z, y) for i, z in enumerate(per_exit)]
    ensemble = torch.stack([torch.softmax(z.double(), 1) for z in per_exit]).mean(0)
    return named + [("ensemble", ensemble, y)]


def _report_from_probs(probs: Tensor, targets: Tensor, n_bins: int, convention: str) -> CalibrationReport:
    # log(probs) is a valid logit vector for them: softmax(log p) = p.
    return calibration_report(torch.log(probs), targets, n_bins, convention=convention)


def _load(results: list[dict[str, Any]]) -> list[ModelCalibration]:
    return [ModelCalibration(r["round"], r["exit"], CalibrationReport.from_dict(r["report"]), ensemble=r["ensemble"])
            for r in results]


register(AnalysisKind(
    name="calibration", label="calibration", settings=CalibrationSettings, compute=_compute_kind,
    dump=lambda out: [{"round": m.round, "exit": m.exit, "ensemble": m.ensemble, "report": m.report.to_dict()}
                      for m in out],
    load=_load, version=4, applies=lambda run: bool(run.finished_rounds()), empty=[]))
