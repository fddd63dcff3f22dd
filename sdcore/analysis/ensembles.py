"""Ensembles against self-distillation: BAN's ensemble of all rounds vs an ensemble of independently
trained models of the same size (Pham et al. Sec. 4.2, Fig. 2).

    logits = test_logits(run)                       # [rounds][N, C], cached in the run folder
    table = ban_vs_ensemble(runs_of_one_config)     # per size m: BAN of rounds 0..m-1, m teachers, student m-1

An ensemble averages its members' logits (Pham et al. Sec. 3: z_ens = (1/m) sum_i z_i). BAN
(Furlanello et al. 2018) averages the rounds of one self-distillation chain; the independent
ensemble averages the teachers (round 0) of runs that differ only in their seed, i.e. models trained
from scratch with the same recipe. Pham et al. find the independent ensemble better at every size:
successive rounds grow alike (their Fig. 6), so BAN's members are less diverse.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from sdcore import terms
from sdcore.analysis.compare import group_key
from sdcore.analysis.registry import AnalysisKind, get_or_compute, register
from sdcore.data import load
from sdcore.engine import predict_logits
from sdcore.runs import Run


def ensemble_logits(logits: Sequence[Tensor]) -> Tensor:
    """The mean of the members' logits [N, C] (Pham et al.'s ensemble)."""
    if not logits:
        raise ValueError("an ensemble needs at least one member")
    return torch.stack([z.double() for z in logits]).mean(0)


def accuracy(logits: Tensor, targets: Tensor) -> float:
    """% of rows whose argmax is the target."""
    return 100.0 * float((logits.argmax(1) == targets).double().mean())


@dataclass(frozen=True)
class LogitsSettings:
    """No knob: every finished round's kept model on the whole test split."""

    def validate(self) -> "LogitsSettings":
        return self


def test_logits(run: Run, *, device: str = "cpu") -> tuple[list[Tensor], Tensor]:
    """(per finished round the [N_test, C] logits of its kept model, the test labels), on the CPU;
    cached in <run>/analysis/ (registry kind "test_logits", the tensors in a .pt beside the record)
    keyed by the finished rounds."""
    return get_or_compute(run, "test_logits", device=device)


def _compute(run: Run, settings: LogitsSettings, *, device, progress, should_stop) -> tuple[list[Tensor], Tensor]:
    cfg, finished = run.config(), run.finished_rounds()
    data = load(cfg.data, seed=cfg.seed, device=device)
    logits = []
    with torch.no_grad():
        for i, k in enumerate(finished):
            progress(i / max(1, len(finished)), f"round {k}")
            logits.append(predict_logits(run.load_model(k, **data.shapes, device=data.device), data.test).float().cpu())
    return logits, data.test.y.cpu()


def _load(obj: dict[str, Any]) -> tuple[list[Tensor], Tensor]:
    logits, targets = list(obj["logits"]), obj["targets"]
    if not all(isinstance(z, Tensor) for z in logits) or not isinstance(targets, Tensor):
        raise TypeError("test logits must be tensors")
    return logits, targets


@dataclass(frozen=True)
class SizeRow:
    size: int  # m members
    ban: tuple[float, float, int] | None  # BAN of rounds 0..m-1: (mean %, std, runs averaged); None: too few rounds
    independent: float | None  # ensemble of the first m runs' teachers, %; None: fewer than m runs
    last_student: tuple[float, float, int] | None  # round m-1 alone (the model BAN ends with): (mean, std, runs)


def ban_vs_ensemble(members: Sequence[tuple[list[Tensor], Tensor]]) -> list[SizeRow]:
    """``members``: (round logits, test labels) of runs that differ only by seed (same test split).
    One row per ensemble size m = 1 .. max(rounds, runs)."""
    if not members:
        return []
    targets = members[0][1]
    if any(not torch.equal(t, targets) for _, t in members):
        raise ValueError("the runs do not share a test split (their data settings differ)")
    rounds = min(len(z) for z, _ in members)
    size = max(rounds, len(members))
    rows = []
    for m in range(1, size + 1):
        ban = last = None
        if m <= rounds:
            ban = _stat([accuracy(ensemble_logits(z[:m]), targets) for z, _ in members])
            last = _stat([accuracy(z[m - 1], targets) for z, _ in members])
        independent = accuracy(ensemble_logits([z[0] for z, _ in members[:m]]), targets) if m <= len(members) else None
        rows.append(SizeRow(size=m, ban=ban, independent=independent, last_student=last))
    return rows


def _stat(values: list[float]) -> tuple[float, float, int]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


@dataclass(frozen=True)
class TeacherCount:
    teachers: int  # N networks in the round-0 ensemble
    teacher: tuple[float, float, int]  # the ensemble's test accuracy: (mean %, std, runs)
    student: tuple[float, float, int] | None  # student 1's, None when no run has finished it


def by_teacher_count(members: Sequence[tuple[Any, Sequence[float]]]) -> list[list[TeacherCount]]:
    """Pham et al. Fig. 3 from runs: ``members`` are (config, test accuracy per finished round); runs
    that differ only in ``model.teachers`` (and seed) form one curve; curves with at least two
    teacher counts are returned, each sorted by N."""
    groups: dict[str, list[tuple[Any, Sequence[float]]]] = {}
    for cfg, accs in members:
        if terms.is_multi_round(cfg) and accs:
            groups.setdefault(group_key(cfg.replace(**{"model.teachers": 1})), []).append((cfg, accs))
    out = []
    for items in groups.values():
        counts = sorted({cfg.model.teachers for cfg, _ in items})
        if len(counts) < 2:
            continue
        curve = []
        for n in counts:
            accs = [a for cfg, a in items if cfg.model.teachers == n]
            students = [a[1] for a in accs if len(a) > 1]
            curve.append(TeacherCount(teachers=n, teacher=_stat([a[0] for a in accs]),
                                      student=_stat(students) if students else None))
        out.append(curve)
    return out


register(AnalysisKind(
    name="test_logits", label="test-split predictions", settings=LogitsSettings, compute=_compute,
    dump=lambda r: {"logits": r[0], "targets": r[1]}, load=_load, version=2, sidecar=True))
