"""Machine-readable exports of the run folder: TensorBoard event files, and the CLI's ``--json`` documents.

TensorBoard (``python -m sdcore export <run-id|sweep-id> --tensorboard DIR``, then ``tensorboard --logdir DIR``):

    DIR/<run-id>/round-0-teacher/events.out.tfevents.*   one TensorBoard run per round (kd: teacher, students;
    DIR/<run-id>/round-1-student/...                     a single-round method: round-0)
    DIR/<sweep-id>/<trial run-id>/round-<k>.../...       a sweep: every trial that logged an epoch

Each round's TensorBoard run holds every number of its metrics.jsonl records at step = epoch (1-based), as
float32 scalars (TensorBoard's scalar format: its default, Rust-based loader drops float64 ones, so a value reads
back as the file's number rounded to float32). Tags (``scalar_tags``):
``train/loss``, ``val/acc``, ``test/acc`` (split/metric), ``exit_1/test_acc`` (per exit, shallow first),
``peer_2/val_acc`` (per DML peer), ``train/parts/byot_ce``, ``grad_abs/<layer>``, ``lr``, ``epoch_time``,
``sharpness``; and ``summary/test_acc``, the kept model's test accuracy (summary.json's, the number the CLI
reports) at the kept epoch. The run's HParams (``hparams_of``) are its config flattened (``alpha``,
``optim.lr``, ``data.name``, ...) and ``round``; no experiment summary is written, so TensorBoard builds the
HParams table from every exported round in DIR (its metric columns: the last value of each scalar, among
them ``summary/test_acc``), and runs exported one by one into the same DIR compare in one table.

Exporting again replaces the earlier export of that run or sweep whole (written beside it, then swapped in);
a folder there that is not an sdlab export (no ``MARKER`` file) is refused, never removed.
``tensorboard`` is optional (requirements-extras.txt): imported only here, when exporting.

JSON (``runs --json``, ``sweeps [id] --json``, ``analyze ... --json``): one document on stdout (``to_json``;
strict JSON: NaN and ±inf become null), shaped by ``runs_document``, ``sweeps_document``, ``sweep_document``
and ``analysis_document``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from sdcore import sweep as sw
from sdcore import terms
from sdcore.config import RunConfig
from sdcore.plots import round_name
from sdcore.runs import Run, RunDamaged, RunError, RunInfo, RunStore, RunSummary, atomic_write_json

MARKER = ".sdlab-export.json"  # in DIR/<id>/: what a re-export may replace
MISSING = "the TensorBoard export needs `pip install tensorboard` (requirements-extras.txt)"
SPLITS = ("train", "val", "test")
PER_MODEL = {"_exits": "exit", "_peers": "peer"}  # list-valued metrics: one value per exit (shallow first) / peer
KEPT_TAG = "summary/test_acc"


# ---------------------------------------------------------------- TensorBoard: what is written

def scalar_tags(record: Mapping[str, Any]) -> dict[str, float]:
    """One metrics.jsonl record's numbers by TensorBoard tag (``round`` and ``epoch`` are the run and the step).

    ``test_acc`` -> ``test/acc``; ``test_acc_exits: [a, b]`` -> ``exit_1/test_acc``, ``exit_2/test_acc``;
    ``train_parts: {"ce": x}`` -> ``train/parts/ce``; ``grad_abs: {layer: x}`` -> ``grad_abs/<layer>``; other
    lists by index (``<tag>/0``); ``lr`` stays ``lr``. Text, flags and null are not scalars and are left out;
    NaN and ±inf are kept (TensorBoard shows them)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in ("round", "epoch"):
            continue
        suffix = next((s for s in PER_MODEL if key.endswith(s)), None)
        if suffix is not None and isinstance(value, list):
            for i, v in enumerate(value):
                _add_scalars(out, f"{PER_MODEL[suffix]}_{i + 1}/{key[:-len(suffix)]}", v)
            continue
        split, _, metric = key.partition("_")
        _add_scalars(out, f"{split}/{metric}" if split in SPLITS and metric else key, value)
    return out


def _add_scalars(out: dict[str, float], tag: str, value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _add_scalars(out, f"{tag}/{k}", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _add_scalars(out, f"{tag}/{i}", v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[tag] = float(value)


def hparams_of(cfg: RunConfig, round_idx: int) -> dict[str, bool | int | float | str]:
    """A round's HParams: ``round`` and the run's config flattened to dotted keys (``optim.lr``); a tuple becomes
    its JSON text. A field set to None (``data.subset``: all) is left out rather than written as text: beside
    the numbers of other runs, text would turn TensorBoard's whole column into text."""
    out: dict[str, bool | int | float | str] = {"round": round_idx}

    def flat(prefix: str, d: Mapping[str, Any]) -> None:
        for key, value in d.items():
            if isinstance(value, dict):
                flat(f"{prefix}{key}.", value)
            elif isinstance(value, (list, tuple)):
                out[prefix + key] = json.dumps(value)
            elif value is not None:
                out[prefix + key] = value
    flat("", cfg.to_dict())
    return out


def round_folder(cfg: RunConfig, round_idx: int) -> str:
    """``round-0-teacher``, ``round-1-student``, ... for kd's rounds; ``round-<k>`` for a single-round method
    (its name is in the HParams)."""
    if not terms.is_multi_round(cfg):
        return f"round-{round_idx}"
    return f"round-{round_idx}-{'teacher' if round_idx == 0 else 'student'}"


# ---------------------------------------------------------------- TensorBoard: writing

@dataclass(frozen=True)
class SweepExport:
    folders: list[Path]  # one TensorBoard run per round of every exported trial
    skipped: list[str]  # "trial 2 (alpha=0.8): <why>", a trial with nothing to export (not started, damaged)


def export_tensorboard(run: Run, folder: str | Path) -> list[Path]:
    """Write ``run``'s metrics as TensorBoard runs ``<folder>/<run-id>/round-<k>...`` (module doc); return them.

    RunError: tensorboard is not installed, the run is damaged or has no epoch yet, or ``<folder>/<run-id>``
    holds something that is not an earlier export."""
    tb = _tensorboard()
    contents = _contents(run)
    root = _export_root(folder)
    with _replacing(root / run.id, {"run": run.id, "source": str(run.path.resolve())}) as tmp:
        names = _write_run(tb, tmp, *contents)
    return [root / run.id / n for n in names]


def export_sweep_tensorboard(store: RunStore, sweep: sw.Sweep, folder: str | Path) -> SweepExport:
    """Every trial's run as ``<folder>/<sweep-id>/<run-id>/round-<k>...``; trials without a readable epoch are
    skipped and named (RunError if no trial has one)."""
    tb = _tensorboard()
    ready, skipped = [], []
    for s in sw.trial_states(store, sweep):
        label = f"trial {s.index} ({' '.join(s.overrides)})"
        if not s.run_id:
            skipped.append(f"{label}: not started")
            continue
        try:
            ready.append((s.run_id, _contents(store.get(s.run_id))))
        except RunError as e:
            skipped.append(f"{label}: {e}")
    if not ready:
        raise RunError(f"sweep {sweep.id} has no trial with an epoch to export yet")
    root = _export_root(folder)
    folders = []
    with _replacing(root / sweep.id, {"sweep": sweep.id, "source": str(sweep.path.resolve())}) as tmp:
        for run_id, contents in ready:
            folders += [root / sweep.id / run_id / n for n in _write_run(tb, tmp / run_id, *contents)]
    return SweepExport(folders=folders, skipped=skipped)


def _tensorboard() -> Any:
    """torch's SummaryWriter and tensorboard's HParams protos, or RunError(MISSING)."""
    try:
        from tensorboard.compat.proto import summary_pb2  # noqa: PLC0415 - optional (requirements-extras.txt)
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2  # noqa: PLC0415
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - imports tensorboard
    except ImportError:
        raise RunError(MISSING) from None
    return _TB(SummaryWriter, summary_pb2, metadata, plugin_data_pb2, api_pb2)


@dataclass(frozen=True)
class _TB:
    SummaryWriter: Any
    summary_pb2: Any
    metadata: Any
    plugin_data_pb2: Any
    api_pb2: Any

    def hparams_summary(self, field: str, message: Any) -> Any:
        """A Summary holding one HParams plugin record (``session_start_info`` / ``session_end_info``), as
        tensorboard's own ``hparams.summary`` builds it (which needs TensorFlow)."""
        tag = {"session_start_info": self.metadata.SESSION_START_INFO_TAG,
               "session_end_info": self.metadata.SESSION_END_INFO_TAG}[field]
        data = self.plugin_data_pb2.HParamsPluginData(**{field: message})
        return self.summary_pb2.Summary(value=[self.summary_pb2.Summary.Value(
            tag=tag, metadata=self.metadata.create_summary_metadata(data), tensor=self.metadata.NULL_TENSOR)])

    def session_start(self, hparams: Mapping[str, Any]) -> Any:
        info = self.plugin_data_pb2.SessionStartInfo()
        for name, value in hparams.items():
            if isinstance(value, bool):  # before int: a bool is one
                info.hparams[name].bool_value = value
            elif isinstance(value, (int, float)):
                info.hparams[name].number_value = value
            else:
                info.hparams[name].string_value = str(value)
        return self.hparams_summary("session_start_info", info)

    def session_end(self) -> Any:
        return self.hparams_summary("session_end_info", self.plugin_data_pb2.SessionEndInfo(
            status=self.api_pb2.STATUS_SUCCESS))


def _contents(run: Run) -> tuple[RunConfig, list[dict[str, Any]], RunSummary | None]:
    """What an export reads (config, metrics, summary), or RunError "cannot export run <id>: <file>: <reason>".

    Not ``run.readable``: a damaged model file does not keep its run's metrics from TensorBoard."""
    try:
        cfg, metrics, summary = run.config(), run.metrics(), run.summary()
    except RunDamaged as e:
        raise RunError(f"cannot export run {run.id}: {e.problem}") from None
    if not metrics and summary is None:
        raise RunError(f"run {run.id} has no epoch to export yet")
    return cfg, metrics, summary


def _write_run(tb: _TB, path: Path, cfg: RunConfig, metrics: list[dict[str, Any]],
               summary: RunSummary | None) -> list[str]:
    """One TensorBoard run per round under ``path``; their folder names."""
    by_round: dict[int, list[dict[str, Any]]] = {}
    for record in metrics:
        by_round.setdefault(record["round"], []).append(record)
    kept = {r.round: r for r in summary.rounds} if summary is not None else {}
    names = []
    for k in sorted(by_round.keys() | kept.keys()):  # a loaded teacher (teacher_weights) has no epochs, only its score
        name = round_folder(cfg, k)
        with tb.SummaryWriter(str(path / name)) as w:
            w.file_writer.add_summary(tb.session_start(hparams_of(cfg, k)))
            for record in by_round.get(k, []):
                for tag, value in scalar_tags(record).items():
                    w.add_scalar(tag, value, record["epoch"])
            if k in kept:
                w.add_scalar(KEPT_TAG, kept[k].test_acc, kept[k].best_epoch)
                w.file_writer.add_summary(tb.session_end())
        names.append(name)
    return names


def _export_root(folder: str | Path) -> Path:
    root = Path(folder)
    if root.exists() and not root.is_dir():
        raise RunError(f"{root} is a file, not a folder for TensorBoard runs")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create {root}: {e.strerror or e}") from None
    return root


@contextlib.contextmanager
def _replacing(target: Path, marker: dict[str, Any]) -> Iterator[Path]:
    """A fresh folder beside ``target`` to write an export into, put in ``target``'s place once whole: an earlier
    export there (its MARKER file) is replaced, an empty folder too; anything else is refused, untouched."""
    if target.is_symlink() or (target.exists() and not (target.is_dir() and (
            (target / MARKER).is_file() or not any(target.iterdir())))):
        raise RunError(f"{target} exists and is not an sdlab TensorBoard export: move it away or export to "
                       "another folder")
    try:
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}~export~{os.getpid()}~"))
    except OSError as e:
        raise RunError(f"cannot write in {target.parent}: {e.strerror or e}") from None
    try:
        yield tmp
        atomic_write_json(tmp / MARKER, marker)
        old = tmp.with_name(tmp.name + "~old")
        if target.exists():
            target.rename(old)
        try:
            tmp.rename(target)
        except OSError:
            if old.exists():
                old.rename(target)  # the earlier export stays
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------- JSON documents (the CLI's --json)

def json_safe(value: Any) -> Any:
    """Plain JSON types, recursively: dataclasses as dicts, tuples as lists, dict keys as text, NaN and ±inf as
    None (strict JSON has no such numbers)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(document: Any) -> str:
    return json.dumps(json_safe(document), indent=2, allow_nan=False, ensure_ascii=False)


def runs_document(root: Path, infos: Sequence[RunInfo]) -> dict[str, Any]:
    """``runs --json``: {"runs_dir", "runs": [RunInfo as a dict: id, status, name, method, created, rounds_done,
    test_acc (% per finished round), error (a failed run's), problem (an unreadable one's: "<file>: <reason>")]}."""
    return {"runs_dir": str(root.resolve()), "runs": [dataclasses.asdict(i) for i in infos]}


def _grid(spec: sw.SweepSpec) -> dict[str, list[str]]:
    return {k: list(v) for k, v in spec.grid}


def _counts(states: Sequence[sw.TrialState]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    return counts


def sweeps_document(store: RunStore) -> dict[str, Any]:
    """``sweeps --json``: {"runs_dir", "sweeps": [{id, running, grid ({key: [values as typed]}), trial_count,
    states ({state: trials}), problem}]}; an unreadable sweep has grid, trial_count and states null and its
    problem said."""
    out = []
    for sweep in sw.list_sweeps(store):
        row: dict[str, Any] = {"id": sweep.id, "running": sweep.is_live(), "grid": None, "trial_count": None,
                               "states": None, "problem": ""}
        try:
            spec, states = sweep.spec(), sw.trial_states(store, sweep)
        except RunError as e:
            row["problem"] = str(e)
        else:
            row.update(grid=_grid(spec), trial_count=len(states), states=_counts(states))
        out.append(row)
    return {"runs_dir": str(store.root.resolve()), "sweeps": out}


def sweep_document(store: RunStore, sweep: sw.Sweep) -> dict[str, Any]:
    """``sweeps <id> --json``: {id, running, grid, states, trials: [{trial, overrides ({key: value as typed}),
    status, error, progress (fraction of its epochs), test_acc (% per finished round), run (its id, null before
    it starts), job (its SLURM / submitit job id, null for a Ray trial)}]}."""
    spec, states = sweep.spec(), sw.trial_states(store, sweep)
    trials = [{"trial": s.index, "overrides": dict(o.split("=", 1) for o in s.overrides), "status": s.state,
               "error": s.error, "progress": s.fraction, "test_acc": list(s.test_acc), "run": s.run_id or None,
               "job": s.job or None} for s in states]
    return {"id": sweep.id, "running": sweep.is_live(), "grid": _grid(spec), "states": _counts(states),
            "trials": trials}


# analyze's sections: the result kinds each holds, one row per round (runner.KINDS)
ANALYSIS_SECTIONS = {"hessian": ("eigen", "trace", "density"), "landscape": ("line", "surface"),
                     "interpolate": ("interp",), "flatness": ("flatness",)}


def analysis_sections(method: str, rounds: Sequence[int],
                      results: Mapping[tuple[str, int], Any]) -> dict[str, list[dict[str, Any]]]:
    """``runner.analyze``'s results as ``analysis_document`` sections: {"hessian": [{"round", "model", "eigen",
    "trace", "density"}], "landscape": [{"round", "model", "line" | "surface"}], "interpolate": [{..., "interp"}],
    "flatness": [{..., "flatness"}]}, each result its dataclass's ``to_dict``; a section only if computed;
    "model" is the CLI's name of the round ("teacher (round 0)", "student 1", ...)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for section, kinds in ANALYSIS_SECTIONS.items():
        for r in rounds:
            found = {kind: results[(kind, r)].to_dict() for kind in kinds if (kind, r) in results}
            if found:
                out.setdefault(section, []).append({"round": r, "model": round_name(r, method), **found})
    return out


def calibration_section(method: str, results: Sequence[Any]) -> dict[str, list[dict[str, Any]]]:
    """``run_calibration``'s results as a section: {"calibration": [{"round", "model" (the round's name, or "exit
    1".. / "ensemble" for a model with exits), "exit" (0-based, null for the model's forward or the ensemble),
    "ensemble", "report" (CalibrationReport: top1_err %, top5_err %, nll, ece, brier, aurc, eaurc as fractions,
    ..., reliability)}]}."""
    return {"calibration": [{"round": m.round,
                             "model": round_name(m.round, method) if m.label == "deepest" else m.label,
                             "exit": m.exit, "ensemble": m.ensemble, "report": m.report.to_dict()} for m in results]}


def analysis_document(run: Run, method: str, rounds: Sequence[int],
                      sections: Mapping[str, Any]) -> dict[str, Any]:
    """``analyze --json``: {"run", "method", "rounds", "analysis_dir" (where results are cached), "analyses":
    {section: rows}}; sections from ``analysis_sections``, ``calibration_section`` and any other analysis (each
    adds its own key)."""
    return {"run": run.id, "method": method, "rounds": list(rounds), "analysis_dir": str(run.path / "analysis"),
            "analyses": dict(sections)}
