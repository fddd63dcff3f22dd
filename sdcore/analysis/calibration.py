"""Is a round's confidence worth trusting? Calibration and selective-prediction metrics (PS-KD, Table 1).

    report = calibration_report(logits, targets)         # top-1/top-5 error, NLL, ECE, Brier, AURC, E-AURC
    ece = expected_calibration_error(probs, targets)     # probs: [N, C] softmax, targets: [N]
    per_round = run_calibration(run)                     # every round (and BYOT exit) of a run, cached

Definitions (the ones PS-KD's Table 1 reports, with their references):

* **ECE** (Guo et al. 2017, "On calibration of modern neural networks"): confidence = max softmax
  probability; the confidences are split into ``n_bins`` equal-width bins (i/M, (i+1)/M] over
  [0, 1] (15 by default, as PS-KD); ECE = sum over bins of |B|/N * |accuracy(B) - mean
  confidence(B)|, a fraction (PS-KD prints it in %). Empty bins contribute nothing.
* **NLL**: mean -log p(y | x), natural log. **Brier**: mean over examples of sum_c (p_c - 1[c = y])^2
  (in [0, 2]).
* **AURC** (Geifman et al. 2019, "Bias-reduced uncertainty estimation for deep neural classifiers"):
  sort the examples by confidence, most confident first (ties keep the data order, like PS-KD's
  reference code); the risk at coverage k/N is the error rate among the first k; AURC is the mean
  of that risk over k = 1..N (PS-KD prints it x 10^3). **E-AURC** = AURC - AURC*, where AURC* =
  r + (1 - r) ln(1 - r) is the AURC of a perfect ranking with the same error rate r (0 when r = 0).
* **Top-k error**: % of examples whose target is not among the k highest logits (k capped at C).

All functions take CPU or GPU tensors and compute in float64 on the CPU.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from sdcore.runs import Run

_FILE = "calibration.json"
_VERSION = 1  # bump when the cached format or its meaning changes


def _check(probs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    if probs.ndim != 2 or targets.ndim != 1 or len(probs) != len(targets):
        raise ValueError(f"probs must be [N, C] and targets [N], got {tuple(probs.shape)} and {tuple(targets.shape)}")
    if len(targets) == 0:
        raise ValueError("no examples: calibration needs at least one")
    return probs.detach().to("cpu", torch.float64), targets.detach().to("cpu", torch.int64)


def _check_bins(n_bins: int) -> None:
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram's numbers: per equal-width confidence bin (i/M, (i+1)/M]."""
    edges: list[float]  # n_bins + 1 bin edges, 0 .. 1
    count: list[int]  # examples per bin
    confidence: list[float | None]  # mean confidence in the bin (None: empty)
    accuracy: list[float | None]  # fraction correct in the bin (None: empty)


def reliability(probs: Tensor, targets: Tensor, n_bins: int = 15) -> Reliability:
    """Per-bin count, mean confidence and accuracy of the max-probability prediction."""
    probs, targets = _check(probs, targets)
    _check_bins(n_bins)
    conf, pred = probs.max(1)
    correct = (pred == targets).double()
    # Bin i holds conf in (i/M, (i+1)/M]; ceil(conf * M) - 1, with conf = 0 put in bin 0.
    idx = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins)
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf)
    acc_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, correct)
    mean = lambda s: [float(a / c) if c else None for a, c in zip(s.tolist(), count.tolist())]  # noqa: E731
    return Reliability(edges=[i / n_bins for i in range(n_bins + 1)], count=count.tolist(),
                       confidence=mean(conf_sum), accuracy=mean(acc_sum))


def expected_calibration_error(probs: Tensor, targets: Tensor, n_bins: int = 15) -> float:
    """ECE as a fraction in [0, 1] (module doc); probs [N, C] softmax, targets [N]."""
    r = reliability(probs, targets, n_bins)
    n = sum(r.count)
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


def aurc(probs: Tensor, targets: Tensor) -> tuple[float, float]:
    """(AURC, E-AURC), both fractions (module doc)."""
    probs, targets = _check(probs, targets)
    conf, pred = probs.max(1)
    order = torch.sort(conf, descending=True, stable=True).indices
    wrong = (pred != targets)[order].double()
    risk = torch.cumsum(wrong, 0) / torch.arange(1, len(wrong) + 1, dtype=torch.float64)
    area = float(risk.mean())
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
    eaurc: float  # fraction
    examples: int
    n_bins: int
    reliability: Reliability

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CalibrationReport":
        return cls(**{**d, "reliability": Reliability(**d["reliability"])})


def calibration_report(logits: Tensor, targets: Tensor, n_bins: int = 15) -> CalibrationReport:
    """Every metric of the module doc from logits [N, C] (softmax taken here) and targets [N]."""
    probs = torch.softmax(logits.detach().to("cpu", torch.float64), dim=1)
    a, e = aurc(probs, targets)
    return CalibrationReport(top1_err=topk_error(probs, targets, 1), top5_err=topk_error(probs, targets, 5),
                             nll=negative_log_likelihood(probs, targets),
                             ece=expected_calibration_error(probs, targets, n_bins),
                             brier=brier_score(probs, targets), aurc=a, eaurc=e, examples=len(targets),
                             n_bins=n_bins, reliability=reliability(probs, targets, n_bins))


# ---------------------------------------------------------------- a run's rounds and exits

@dataclass(frozen=True)
class ModelCalibration:
    round: int
    exit: str  # "deepest" for the model's forward; BYOT: "exit 1".."exit K" (shallow to deep) and "ensemble"
    report: CalibrationReport


def run_calibration(run: Run, *, device: str = "cpu", n_bins: int = 15) -> list[ModelCalibration]:
    """Calibration on the test split of every finished round's kept model; for a model with exits, of
    every exit and of the exits' averaged softmax ("ensemble") too.

    Cached in <run>/analysis/calibration.json, keyed by the finished rounds and n_bins (a finished
    round's weights never change). Raises RunError or ConfigError for an unreadable run.
    """
    from sdcore.analysis.compare import _finished_rounds, read_run_cache, write_run_cache

    finished = _finished_rounds(run)
    if not finished:
        return []
    path = run.path / "analysis" / _FILE
    cached = read_run_cache(path, _VERSION, finished, lambda o: [
        ModelCalibration(r["round"], r["exit"], CalibrationReport.from_dict(r["report"])) for r in o["results"]],
        n_bins=n_bins)
    if cached is not None:
        return cached
    out = _compute(run, finished, device, n_bins)
    write_run_cache(path, _VERSION, finished, n_bins=n_bins,
                    results=[{"round": m.round, "exit": m.exit, "report": m.report.to_dict()} for m in out])
    return out


def _compute(run: Run, finished: list[int], device: str, n_bins: int) -> list[ModelCalibration]:
    from sdcore.analysis.compare import round_model
    from sdcore.data import load
    from sdcore.engine import resolve_device

    cfg = run.config()
    data = load(cfg.data, seed=cfg.seed, device=resolve_device(device))
    out = []
    for k in finished:
        model = round_model(run, cfg, data, k)
        for name, logits, y in _exit_logits(model, data.test):
            if name == "ensemble":
                out.append(ModelCalibration(k, name, _report_from_probs(logits, y, n_bins)))
            else:
                out.append(ModelCalibration(k, name, calibration_report(logits, y, n_bins)))
    return out


@torch.no_grad()
def _exit_logits(model, source) -> list[tuple[str, Tensor, Tensor]]:
    """[(name, logits [N, C], targets [N])]; for "ensemble" the mean softmax instead of logits."""
    from sdcore.engine import predict_logits
    from sdcore.models import has_exits

    y = source.y.cpu()
    if not has_exits(model):
        return [("deepest", predict_logits(model, source).float().cpu(), y)]
    per_exit = [z.float().cpu() for z in predict_logits(model, source, exits=True)]
    named = [(f"exit {i + 1}", z, y) for i, z in enumerate(per_exit)]
    ensemble = torch.stack([torch.softmax(z.double(), 1) for z in per_exit]).mean(0)
    return named + [("ensemble", ensemble, y)]


def _report_from_probs(probs: Tensor, targets: Tensor, n_bins: int) -> CalibrationReport:
    # log(probs) is a valid logit vector for them: softmax(log p) = p.
    return calibration_report(torch.log(probs), targets, n_bins)
