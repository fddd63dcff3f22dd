"""What the Compare page shows: runs grouped by config, per-round test accuracy mean ± std over seeds
(Pham et al. Table 2: rows are configs, columns teacher, student 1..k), and how often each student
agrees with its teacher on the test split.

Everything is rebuilt from run folders. ``compare_table`` reads only config.json and summary.json;
``agreement`` loads the saved round models once and caches its answer in <run>/analysis/ (registry kind
"agreement").
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from torch import Tensor, nn

from sdcore import terms
from sdcore.analysis.registry import AnalysisKind, dump_list, get_or_compute, register
from sdcore.config import SEED003_ROWS, ConfigError, RunConfig, seed003_method
from sdcore.data import DataBundle, load
from sdcore.engine import predict_logits, resolve_device
from sdcore.models import external
from sdcore.paper import PAPER, SEED003_COLUMNS, run_columns
from sdcore.runs import Run

# ---------------------------------------------------------------- labels and grouping

def config_label(cfg: RunConfig) -> str:
    """A short label of what distinguishes a config, e.g. "kd · cnn ×0.5 · digits, 30% noise · α=0.2 τ=4 · 30 ep".

    Optimizer settings are left out to keep it short; ``group_key`` tells configs apart exactly.
    """
    return " · ".join([cfg.method, _arch_label(cfg), _data_label(cfg), _loss_label(cfg), f"{cfg.epochs} ep"])


def config_summary(cfg: RunConfig) -> str:
    """One run's config for a figure's caption, e.g. "demo · kd α=0.2 τ=4 · cnn · digits, 30% noise ·
    2 students · 30 epochs": its name, terms and their weights, network, data, networks trained, epochs."""
    if terms.is_multi_round(cfg):
        trained = f"{cfg.rounds} student{'' if cfg.rounds == 1 else 's'}" if cfg.rounds else "teacher only"
        if cfg.model.teachers > 1:
            trained = f"{cfg.model.teachers} teachers · {trained}"
    elif terms.uses(cfg, "peers"):
        trained = f"{cfg.model.peers} peers"
    else:
        trained = "one network"
    sam = [f"SAM ρ={cfg.optim.sam_rho:g}"] if cfg.optim.sam_rho is not None else []
    return " · ".join([cfg.name, f"{cfg.method} {_loss_label(cfg)}", _arch_label(cfg), *sam, _data_label(cfg), trained,
                       f"{cfg.epochs} epoch{'' if cfg.epochs == 1 else 's'}"])


def _arch_label(cfg: RunConfig) -> str:
    m = cfg.model
    return external.describe(m.arch) + (f" ×{m.width:g}" if m.width != 1 else "") \
        + (" no-skip" if not m.skip else "") + (" +exits" if m.exits else "") \
        + (f" at {','.join(m.exit_nodes)}" if m.exit_nodes else "") \
        + (f" · teacher {Path(m.teacher_weights).name}" if m.teacher_weights else "")


def _data_label(cfg: RunConfig) -> str:
    d = cfg.data
    data = [d.name]
    if d.label_noise > 0:
        data.append(f"{round(100 * d.label_noise, 1):g}% noise")
    if d.subset is not None:
        data.append(f"n={d.subset}")
    if d.augment:
        data.append("+autoaug+cutout" if d.augment_policy == "autoaugment" else "+aug")
    return ", ".join(data)


def _loss_label(cfg: RunConfig) -> str:
    loss = f"α={cfg.alpha:g}"
    used = terms.terms_of(cfg)
    if {"kd", "dml", "byot"} & set(used):  # PS-KD and DMFL alone have no logit temperature
        loss += f" τ={cfg.temperature:g}"
    if "byot" in used:
        loss += f" β={cfg.hint_weight:g} ({cfg.byot_style})"
    if "pskd" in used and cfg.pskd_alpha is not None:
        loss += f" α_pskd={cfg.pskd_alpha:g}"
    if "dmfl" in used:
        loss += f" λ_dmfl={cfg.dmfl_weight:g} T_f={cfg.dmfl_temperature:g}"
    return loss


def group_key(cfg: RunConfig) -> str:
    """Canonical JSON of the config without seed, name and device: runs differing only in those share it."""
    d = cfg.to_dict()
    for k in ("seed", "name", "device"):
        d.pop(k)
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def round_name(k: int) -> str:
    return "teacher" if k == 0 else f"student {k}"


# ---------------------------------------------------------------- the table

@dataclass(frozen=True)
class RoundStat:
    round: int
    mean: float  # test accuracy, %, mean over the group's runs
    std: float  # sample standard deviation (ddof=1); 0 when n == 1
    n: int  # runs averaged


@dataclass(frozen=True)
class CompareRow:
    """One config. ``rounds`` has an entry per round index finished by *every* run of the group:
    a run with fewer finished rounds (still training, failed, cancelled) limits the row to its count,
    so each column averages the same runs."""
    key: str  # group_key of the config
    label: str  # config_label
    method: str
    run_ids: tuple[str, ...]  # in the order the runs were given
    seeds: tuple[int, ...]  # one per run (a seed run twice counts twice)
    rounds: tuple[RoundStat, ...]

    def delta(self, k: int) -> float:
        """Mean test-accuracy gain of round k over the teacher, percentage points."""
        return self.rounds[k].mean - self.rounds[0].mean


def compare_table(runs: Iterable[Run]) -> list[CompareRow]:
    """Group runs by ``group_key`` and summarise test accuracy per round over seeds; rows in first-seen order.

    Runs of any status count with the rounds they finished; unreadable runs (``Run.info``) and runs
    with no finished round are skipped.
    """
    groups: dict[str, list[tuple[Run, RunConfig, tuple[float, ...]]]] = {}
    for run in runs:
        info = run.info()
        if info.status == "unreadable" or info.rounds_done == 0:
            continue
        try:
            cfg = run.config()
        except (OSError, ConfigError):  # changed on disk since info() read it
            continue
        groups.setdefault(group_key(cfg), []).append((run, cfg, info.test_acc))
    return [_row(key, members) for key, members in groups.items()]


def _row(key: str, members: list[tuple[Run, RunConfig, tuple[float, ...]]]) -> CompareRow:
    cfg = members[0][1]
    accs = [acc for _, _, acc in members]
    stats = []
    for k in range(min(len(a) for a in accs)):
        values = [a[k] for a in accs]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        stats.append(RoundStat(round=k, mean=statistics.fmean(values), std=std, n=len(values)))
    return CompareRow(key=key, label=config_label(cfg), method=cfg.method,
                      run_ids=tuple(r.id for r, _, _ in members), seeds=tuple(c.seed for _, c, _ in members),
                      rounds=tuple(stats))


def compare_rows_to_csv(rows: Iterable[CompareRow]) -> str:
    """CSV: config, method, seeds (space-separated), n, then "<round> mean", "<round> std" per round.

    Rounds run to the longest row; a shorter row leaves its extra cells empty. Numbers have 4 decimals.
    """
    rows = list(rows)
    width = max((len(r.rounds) for r in rows), default=0)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["config", "method", "seeds", "n"]
               + [f"{round_name(k)} {s}" for k in range(width) for s in ("mean", "std")])
    for r in rows:
        cells = [c for s in r.rounds for c in (f"{s.mean:.4f}", f"{s.std:.4f}")]
        w.writerow([r.label, r.method, " ".join(map(str, r.seeds)), len(r.run_ids)]
                   + cells + [""] * (2 * width - len(cells)))
    return out.getvalue()


# ---------------------------------------------------------------- teacher/student agreement

@dataclass(frozen=True)
class AgreementStat:
    round: int  # student round k >= 1
    agreement: float  # % of test examples where student k and the teacher (round 0) predict the same class
    test_acc: float  # student k's test accuracy, %, from the same predictions


@dataclass(frozen=True)
class AgreementSettings:
    """No knob: every finished student against the teacher on the whole test split."""

    def validate(self) -> "AgreementSettings":
        return self


def agreement(run: Run, *, device: str = "cpu") -> list[AgreementStat]:
    """Per student round, agreement with the teacher and test accuracy; [] for BYOT/PS-KD or without a student.

    Cached in <run>/analysis/ (registry kind "agreement"), keyed by the finished rounds: the answer is
    recomputed only when a round has finished since (a finished round's weights never change). Raises
    RunError or ConfigError for an unreadable run.
    """
    return get_or_compute(run, "agreement", device=device)


def _has_students(run: Run) -> bool:
    return terms.is_multi_round(run.config()) and len(run.finished_rounds()) >= 2


def predictions(run: Run, round_idx: int, *, device: str = "cpu") -> Tensor:
    """Class predictions (int64 [N_test], CPU) of round ``round_idx``'s saved model on the test split."""
    cfg = run.config()
    data = load(cfg.data, seed=cfg.seed, device=resolve_device(device))
    return _predict(run.load_model(round_idx, **data.shapes, device=data.device), data)


def _predict(model: nn.Module, data: DataBundle) -> Tensor:
    return predict_logits(model, data.test).argmax(1).cpu()


def _compute_agreement(run: Run, settings: AgreementSettings, *, device, progress,
                       should_stop) -> list[AgreementStat]:
    cfg, finished = run.config(), run.finished_rounds()
    data = load(cfg.data, seed=cfg.seed, device=device)
    y = data.test.y.cpu()
    progress(0.0, "teacher")
    teacher = _predict(run.load_model(0, **data.shapes, device=data.device), data)
    stats = []
    for i, k in enumerate(finished):
        if k == 0:
            continue
        progress(i / len(finished), round_name(k))
        pred = _predict(run.load_model(k, **data.shapes, device=data.device), data)
        stats.append(AgreementStat(round=k, agreement=_percent(pred == teacher), test_acc=_percent(pred == y)))
    return stats


def _percent(hits: Tensor) -> float:
    return 100.0 * hits.sum().item() / hits.numel()


# ---------------------------------------------------------------- seed paper 003's grid of terms

_DEFAULTS = RunConfig()
# Every field a term reads, the method and the exits: what the rows of one grid may differ in.
_TERM_FIELDS = ("method", "model.exits", *dict.fromkeys(f for t in terms.TERMS.values() for f in t.fields))


def grid_row(method: str) -> str:
    """The seed-paper-003 row of a single-network method: "ce" -> "baseline", "pskd+byot" -> "pskd-byot"."""
    return "baseline" if method == "ce" else method.replace("+", "-")


def _shared_key(cfg: RunConfig) -> str:
    """group_key with the method, the exits and every term setting at their defaults: what the rows share."""
    return group_key(cfg.replace(**{k: getattr(_DEFAULTS.model if k.startswith("model.") else _DEFAULTS,
                                               k.split(".")[-1]) for k in _TERM_FIELDS}))


@dataclass(frozen=True)
class TermGroup:
    """Single-network runs that differ only in their terms and seed (and agree on every shared term's settings)."""
    label: str  # config_label of the shared setting, without the method
    settings: tuple[tuple[str, Any], ...]  # the term settings the runs agree on, sorted by name
    members: tuple[tuple[Run, RunConfig], ...]  # the most specific first (its settings define the grid)

    @property
    def methods(self) -> list[str]:
        return sorted({c.method for _, c in self.members}, key=lambda m: terms.all_methods().index(m))

    @property
    def seeds(self) -> list[int]:
        return sorted({c.seed for _, c in self.members})


def term_groups(runs: Iterable[tuple[Run, RunConfig]]) -> list[TermGroup]:
    """Group single-network runs (any combination of the combinable terms, the labels alone included)
    into seed paper 003 Table 1 grids; only grids with two methods or more, the most runs first.

    ``runs``: (run, its config) for runs with a finished round. Runs are grouped by their config with
    method, exits and term settings normalised; within that, a run joins every grid whose settings agree
    with its own terms' settings (a labels-only run joins all), and starts a new grid when none does.
    Runs with the most settings go first, so the full combination's settings define a grid. Pure.
    """
    cands = [(run, cfg, terms.settings(cfg), _shared_key(cfg)) for run, cfg in runs
             if not terms.uses(cfg, "alone")]  # not multi-round KD, not DML
    cands.sort(key=lambda c: (-len(c[2]), c[0].id))
    grids: list[tuple[str, dict[str, Any], list[tuple[Run, RunConfig]]]] = []
    for run, cfg, settings, shared in cands:
        fits = [g for g in grids if g[0] == shared and all(g[1].get(k, v) == v for k, v in settings.items())]
        if not fits:
            fits = [(shared, {}, [])]
            grids += fits
        for _, agreed, members in fits:
            agreed.update(settings)
            members.append((run, cfg))
    out = []
    for _, agreed, members in grids:
        cfg = members[0][1]  # the most specific run: it set the grid's settings
        shared = config_label(cfg.replace(method="ce", **{"model.exits": False})).split(" · ")[1:3]  # arch, data
        group = TermGroup(label=" · ".join(shared + [f"{cfg.epochs} ep"]), settings=tuple(sorted(agreed.items())),
                          members=tuple(members))
        if len(group.methods) > 1:
            out.append(group)
    return sorted(out, key=lambda g: -len(g.members))


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 when n == 1
    n: int


@dataclass(frozen=True)
class GridRow:
    row: str  # a name of config.SEED003_ROWS
    method: str
    run_ids: tuple[str, ...]  # empty: no run of this row yet
    seeds: tuple[int, ...]
    values: dict[str, Stat | None]  # paper.SEED003_COLUMNS -> mean ± std over the runs (None: no value)


def term_grid(group: TermGroup, calibrations: dict[str, Any], metrics: dict[str, list[dict]]) -> list[GridRow]:
    """Seed paper 003 Table 1 for a group: one row per config.SEED003_ROWS entry, in that order (rows
    without runs have no values), each column the mean ± std over the row's runs (seeds) of the deepest
    output's top-1/top-5 error, NLL, ECE (%) and AURC (×10³) on the test split (``calibrations``: run
    id -> ``run_calibration`` result, PS-KD's conventions) and the mean training time per epoch
    (``metrics``: run id -> metrics.jsonl records). Pure."""
    numbers = PAPER["pskdml-cifar100-resnet18-baseline"]  # any row: only its columns are read
    rows = []
    for row in SEED003_ROWS:
        method = seed003_method(row)
        members = sorted(((r, c) for r, c in group.members if c.method == method), key=lambda m: (m[1].seed, m[0].id))
        values = [run_columns(numbers, c, None, calibrations.get(r.id), metrics.get(r.id)) for r, c in members]
        stats: dict[str, Stat | None] = {}
        for col in SEED003_COLUMNS:
            xs = [v[col] for v in values if v[col] is not None]
            stats[col] = Stat(statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0, len(xs)) \
                if xs else None
        rows.append(GridRow(row=row, method=method, run_ids=tuple(r.id for r, _ in members),
                            seeds=tuple(c.seed for _, c in members), values=stats))
    return rows


def order_agreement(mine: dict[str, float], paper: dict[str, float]) -> tuple[int, int]:
    """(pairs of rows in the same order in both, pairs compared) over the rows both have; ties count as disagreeing."""
    rows = [r for r in mine if r in paper]
    pairs = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]]
    same = sum((mine[a] - mine[b]) * (paper[a] - paper[b]) > 0 for a, b in pairs)
    return same, len(pairs)


def term_grid_csv(rows: Iterable[GridRow]) -> str:
    """CSV: row, method, seeds (space-separated), n, then "<column> mean", "<column> std"; empty cells where missing."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["row", "method", "seeds", "n"] + [f"{c} {s}" for c in SEED003_COLUMNS for s in ("mean", "std")])
    for r in rows:
        cells = [x for c in SEED003_COLUMNS
                 for x in ((f"{r.values[c].mean:.4f}", f"{r.values[c].std:.4f}") if r.values[c] else ("", ""))]
        w.writerow([r.row, r.method, " ".join(map(str, r.seeds)), len(r.run_ids)] + cells)
    return out.getvalue()


def missing_runs(group: TermGroup) -> list[tuple[str, int, RunConfig]]:
    """(row, seed, config) for each of config.SEED003_ROWS × the group's seeds without a run: the
    group's first config (the one that set the grid's term settings) with that row's terms and seed."""
    have = {(c.method, c.seed) for _, c in group.members}
    base = group.members[0][1]
    base_row = grid_row(base.method)
    stem = base.name[: -len(base_row)] if base.name.endswith(base_row) else f"{base.name}-"
    out = []
    for row in SEED003_ROWS:
        method = seed003_method(row)
        for seed in group.seeds:
            if (method, seed) not in have:
                cfg = base.replace(method=method, seed=seed, name=(stem + row)[:64],
                                   **{"model.exits": terms.needs_exits(method)})
                out.append((row, seed, cfg))
    return out


register(AnalysisKind(
    name="agreement", label="teacher/student agreement", settings=AgreementSettings,
    compute=lambda *a, **k: _compute_agreement(*a, **k),  # late-bound: a test replaces _compute_agreement
    dump=dump_list, load=lambda stats: [AgreementStat(**s) for s in stats], version=2,
    applies=_has_students, empty=[]))
