"""What changes from a teacher to its student? Logit distance, divergence, agreement, per-class
accuracy and the test images one gets right and the other wrong (Pham et al. Sec. 4, Fig. 6).

    pairs = round_pairs(run)            # one RoundPair per student round k >= 1, cached in the run

Pham et al. (Fig. 6) measure the mean squared error between the logits of each round's student and
its own teacher (round k - 1) and find it shrinks with every round: the students grow alike, which
is why an ensemble of BAN rounds gains less than an ensemble of independently trained models. Here
every number is on the test split (Pham used the training split for Fig. 6):

* ``logit_mse``: mean over examples and classes of (z_k - z_{k-1})^2, raw logits;
* ``kl``: mean over examples of KL(p_{k-1} || p_k) at temperature 1 (nats), how far student k's
  predictive distribution moved from its teacher's;
* agreement: % of examples with the same top-1 class, with its own teacher and with round 0;
* per-class accuracy of round k and its difference from round 0's (percentage points);
* ``fixed``/``broken``: test indices that round k gets right and round 0 wrong, and the reverse.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sdcore import terms
from sdcore.analysis.registry import AnalysisKind, get_or_compute, register
from sdcore.config import ConfigError
from sdcore.data import load
from sdcore.engine import resolve_device
from sdcore.runs import Run


def logit_mse(a: Tensor, b: Tensor) -> float:
    """Mean over all entries of (a - b)^2 for logits [N, C] of two models on the same examples."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"logits must both be [N, C] of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return float(((a.double() - b.double()) ** 2).mean())


def mean_kl(teacher_logits: Tensor, student_logits: Tensor) -> float:
    """Mean over examples of KL(softmax(teacher) || softmax(student)), natural log."""
    if teacher_logits.shape != student_logits.shape or teacher_logits.ndim != 2:
        raise ValueError(f"logits must both be [N, C] of one shape, got {tuple(teacher_logits.shape)} "
                         f"and {tuple(student_logits.shape)}")
    log_p = F.log_softmax(teacher_logits.double(), 1)
    log_q = F.log_softmax(student_logits.double(), 1)
    return float((log_p.exp() * (log_p - log_q)).sum(1).mean())


def per_class_accuracy(pred: Tensor, targets: Tensor, num_classes: int) -> list[float | None]:
    """% correct among the examples of each class (None for a class with no example)."""
    hits = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, targets, (pred == targets).double())
    count = torch.bincount(targets, minlength=num_classes)
    return [100.0 * float(h) / int(c) if c else None for h, c in zip(hits, count)]


@dataclass(frozen=True)
class RoundPair:
    round: int  # student round k >= 1
    logit_mse: float  # to its own teacher, round k - 1
    kl: float  # KL(p_{k-1} || p_k), nats
    agreement_prev: float  # % same top-1 class as round k - 1
    agreement_teacher: float  # % same top-1 class as round 0
    test_acc: float  # %
    class_acc: list[float | None]  # % per class, round k
    class_delta: list[float | None]  # round k minus round 0, percentage points
    fixed: list[int]  # test indices: round k right, round 0 wrong
    broken: list[int]  # test indices: round k wrong, round 0 right


@dataclass(frozen=True)
class TeacherStudent:
    class_names: list[str]
    teacher_class_acc: list[float | None]  # round 0, % per class
    predictions: list[list[int]]  # per finished round, the predicted class of every test example
    targets: list[int]  # the test labels
    pairs: list[RoundPair]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TeacherStudent":
        return cls(**{**d, "pairs": [RoundPair(**p) for p in d["pairs"]]})


def compare_logits(logits: Sequence[Tensor], targets: Tensor, class_names: list[str]) -> TeacherStudent:
    """Everything of the module doc from each round's test logits (round 0 first) and the labels."""
    if len(logits) < 2:
        raise ValueError("teacher-student comparison needs the teacher and at least one student")
    y = targets.cpu()
    preds = [z.argmax(1).cpu() for z in logits]
    num_classes = logits[0].shape[1]
    teacher_acc = per_class_accuracy(preds[0], y, num_classes)
    pairs = []
    for k in range(1, len(logits)):
        right, teacher_right = preds[k] == y, preds[0] == y
        acc = per_class_accuracy(preds[k], y, num_classes)
        pairs.append(RoundPair(
            round=k, logit_mse=logit_mse(logits[k].cpu(), logits[k - 1].cpu()),
            kl=mean_kl(logits[k - 1].cpu(), logits[k].cpu()),
            agreement_prev=_percent(preds[k] == preds[k - 1]), agreement_teacher=_percent(preds[k] == preds[0]),
            test_acc=_percent(right), class_acc=acc,
            class_delta=[None if a is None or t is None else a - t for a, t in zip(acc, teacher_acc)],
            fixed=torch.nonzero(right & ~teacher_right).flatten().tolist(),
            broken=torch.nonzero(~right & teacher_right).flatten().tolist()))
    return TeacherStudent(class_names=list(class_names), teacher_class_acc=teacher_acc,
                          predictions=[p.tolist() for p in preds], targets=y.tolist(), pairs=pairs)


@dataclass(frozen=True)
class PairsSettings:
    """No knob: every finished student against its own teacher and round 0 on the whole test split."""

    def validate(self) -> "PairsSettings":
        return self


def round_pairs(run: Run, *, device: str = "cpu") -> TeacherStudent | None:
    """The comparison for a KD run's finished rounds (None: not KD, or no finished student yet).

    Cached in <run>/analysis/ (registry kind "teacher_student"), keyed by the finished rounds; the
    rounds' test logits come from ``ensembles.test_logits`` (cached too).
    """
    return get_or_compute(run, "teacher_student", device=device)


def _has_students(run: Run) -> bool:
    return terms.is_multi_round(run.config()) and len(run.finished_rounds()) >= 2


def _compute(run: Run, settings: PairsSettings, *, device, progress, should_stop) -> TeacherStudent:
    cfg = run.config()
    logits, targets = get_or_compute(run, "test_logits", device=str(device),
                                     progress=lambda f, what: progress(0.9 * f, what), should_stop=should_stop)
    progress(0.9, "comparing the rounds")
    return compare_logits(logits, targets, load(cfg.data, seed=cfg.seed).class_names)


def gallery_images(run: Run, indices: Sequence[int], *, device: str = "cpu") -> Tensor:
    """The test images at ``indices`` as the model sees them (unaugmented), [n, C, H, W] on the CPU."""
    cfg = run.config()
    data = load(cfg.data, seed=cfg.seed, device=resolve_device(device))
    want = torch.as_tensor(list(indices), dtype=torch.int64)
    out: dict[int, Tensor] = {}
    for idx, x, _ in data.test.batches(512, shuffle=False, augment=False):
        hit = torch.isin(idx.cpu(), want)
        for i, img in zip(idx.cpu()[hit].tolist(), x[hit.to(x.device)].cpu()):
            out[i] = img
    return torch.stack([out[i] for i in want.tolist()]) if len(want) else torch.empty(0)


def _percent(hits: Tensor) -> float:
    return 100.0 * hits.sum().item() / hits.numel()


register(AnalysisKind(
    name="teacher_student", label="teacher vs students", settings=PairsSettings, compute=_compute,
    dump=TeacherStudent.to_dict, load=TeacherStudent.from_dict, version=2, applies=_has_students, empty=None))


@dataclass(frozen=True)
class GallerySettings:
    per_side: int = 24  # images kept per student and side: the first fixed and the first broken test indices

    def validate(self) -> "GallerySettings":
        if not isinstance(self.per_side, int) or not 1 <= self.per_side <= 500:
            raise ConfigError(f"per_side must be an int in [1, 500], got {self.per_side!r}")
        return self


@dataclass(frozen=True)
class Gallery:
    """The test images the Students page shows: for each student, the first ``per_side`` it fixed and broke."""
    images: dict[int, Tensor]  # test index -> the image as the model sees it (unaugmented), [C, H, W], CPU

    def pick(self, indices: Sequence[int]) -> list[Tensor]:
        return [self.images[i] for i in indices]


def _gallery(run: Run, settings: GallerySettings, *, device, progress, should_stop) -> Gallery:
    result = get_or_compute(run, "teacher_student", device=str(device),
                            progress=lambda f, what: progress(0.8 * f, what), should_stop=should_stop)
    n = settings.per_side
    wanted = sorted({i for p in result.pairs for i in p.fixed[:n] + p.broken[:n]})
    progress(0.8, "reading the test images")
    return Gallery(dict(zip(wanted, gallery_images(run, wanted, device=str(device)))))


register(AnalysisKind(
    name="gallery", label="test images the rounds disagree on", settings=GallerySettings, compute=_gallery,
    dump=lambda g: {"indices": torch.tensor(sorted(g.images), dtype=torch.int64),
                    "images": torch.stack([g.images[i] for i in sorted(g.images)]) if g.images else torch.empty(0)},
    load=lambda t: Gallery(dict(zip(t["indices"].tolist(), t["images"]))), version=1, sidecar=True,
    applies=_has_students, empty=None))
