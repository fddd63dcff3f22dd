"""`python -m sdcore train|resume|analyze|report|export|sweep|sweeps|presets|runs|rm|rename`.

Bad input is one line on stderr and exit code 2, never a traceback; a run that fails while
training exits 1 with its message; Ctrl-C cancels cleanly (exit 130) and the run can be resumed.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import NoReturn, Sequence, TextIO

from sdcore import slurm, terms
from sdcore import sweep as sw
from sdcore.analysis.calibration import CONVENTIONS, describe, run_calibration
from sdcore.analysis.robustness import CIFAR_C, CIFAR_C_EXTRA, RobustnessSettings, cifar_c_folder, run_robustness
from sdcore.analysis.runner import AnalysisSpec, analyze
from sdcore.analysis.story import run_verdicts
from sdcore.config import (
    PRESETS,
    ConfigError,
    RunConfig,
    apply_overrides,
    check_device,
    check_name,
    check_seed,
    preset,
    show_value,
)
from sdcore.data import DataError
from sdcore.engine import Cancelled, Event, describe_device, resolve_device
from sdcore.export import (
    analysis_document,
    analysis_sections,
    calibration_section,
    export_sweep_tensorboard,
    export_tensorboard,
    runs_document,
    sweep_document,
    sweeps_document,
    to_json,
)
from sdcore.figures import FORMATS, PNG_SCALE, ExportError, run_caption, run_figures, unavailable, write_figures
from sdcore.jobs import JobManager
from sdcore.plots import round_name
from sdcore.profiling import StepProfiler
from sdcore.report import write_report
from sdcore.runs import RUNS_DIR_ENV, RunError, RunStore, RunSummary, default_runs_dir
from sdcore.sweep import trial_rows
from sdcore.training import execute, failure_message, prepare

EXIT_USAGE = 2
MESSAGE_LIMIT = 2000  # characters of an error line (a list of presets is about 1500)
VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")  # file systems of the kernel, never a place for run folders


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with sdlab's contract for bad input: one ``error:`` line and exit code 2, not the usage text.

    ``add_subparsers`` makes the subcommands' parsers of this class too (its default ``parser_class``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {one_line(message, 300)} (see {self.prog} --help)\n")


def one_line(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` as one printable line: control characters escaped (a newline in a path stays visible
    as \\n), and at most ``limit`` characters."""
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in message)
    return text if len(text) <= limit else f"{text[:limit - 1]}…"


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m sdcore", description="sdlab: self-distillation lab (training core)")
    sub = p.add_subparsers(dest="cmd", required=True)
    runs_dir = dict(help="where run folders are (default: $SDLAB_RUNS_DIR or ./runs)")
    t = sub.add_parser("train", help="train a run: a teacher and its self-distilled students")
    t.add_argument("--preset", help="start from a preset (see `presets`); default: demo")
    t.add_argument("--config", help="start from a config JSON file (e.g. a run's config.json)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set alpha=0.5 --set data.label_noise=0.2 (repeatable)")
    t.add_argument("--runs-dir", **runs_dir)
    t.add_argument("--quiet", action="store_true", help="no progress output, only the final table")
    t.add_argument("--profile", action="store_true", help="write a torch.profiler trace of 10 training steps of "
                   "each round (after 3 warm-up steps) to <run>/profile/")
    r = sub.add_parser("resume", help="continue an interrupted, cancelled or failed run from its last epoch")
    r.add_argument("run", help="run id (see `runs`)")
    r.add_argument("--restart-round", action="store_true", help="drop the checkpoint and train the unfinished "
                   "round again from its first epoch, after the finished rounds (when checkpoint.pt is damaged)")
    r.add_argument("--runs-dir", **runs_dir)
    r.add_argument("--quiet", action="store_true", help="no progress output, only the final table")
    a = sub.add_parser("analyze", help="Hessian eigenvalues/trace/density and loss surfaces of a run's rounds")
    a.add_argument("run", help="run id (see `runs`)")
    a.add_argument("--rounds", help="comma-separated rounds, e.g. 0,1 (default: every finished round)")
    a.add_argument("--hessian", action="store_true", help="top-k eigenvalues, trace, spectral density "
                   "(the default when no analysis is named)")
    a.add_argument("--landscape", choices=("1d", "2d"), help="filter-normalized loss line or surface (Li et al.)")
    a.add_argument("--interpolate", action="store_true", help="loss along the line teacher -> each student")
    a.add_argument("--flatness", action="store_true", help="loss under Gaussian weight noise (BYOT Fig. 4)")
    a.add_argument("--calibration", action="store_true", help="ECE, NLL, Brier, AURC, top-1/top-5 error on the "
                   "test split, per round (and per BYOT exit)")
    a.add_argument("--calibration-convention", choices=tuple(CONVENTIONS), default="pskd",
                   help="with --calibration, ECE's bins and E-AURC's optimum: "
                   + "; ".join(f"{k} = {c.label}" for k, c in CONVENTIONS.items()) + " (default pskd)")
    a.add_argument("--robustness", action="store_true", help="test accuracy under corruptions, per round: sdlab's "
                   "25 synthetic corrupted test sets, or with --cifar-c the official CIFAR-10-C / CIFAR-100-C files")
    a.add_argument("--cifar-c", nargs="?", const="", metavar="ROOT", help="robustness on Hendrycks & Dietterich's "
                   "files in ROOT/CIFAR-10-C (or CIFAR-100-C; default ROOT: the run's data.root): mean corruption "
                   "error (mCE) and per-corruption error; implies --robustness")
    a.add_argument("--no-density", action="store_true", help="with --hessian: skip the spectral density")
    a.add_argument("--top-k", type=int, default=20, help="eigenvalues to compute (default 20)")
    a.add_argument("--trace-samples", type=int, default=100,
                   help="at most this many Hutchinson samples, after 20 exact Lanczos steps (default 100)")
    a.add_argument("--trace-tol", type=float, default=0.02,
                   help="stop the trace once its standard error is below this fraction of it (default 0.02)")
    a.add_argument("--subset", type=int, default=512, help="training examples used (default 512)")
    a.add_argument("--steps", type=int, help="landscape grid points per axis (default 21 on CPU, 51 on GPU)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--device", default="auto")
    a.add_argument("--figures", choices=tuple(FORMATS), help="also write every figure of what was analyzed, and the "
                   "training curves, to <run>/figures/<run-id>-<figure>.<format> (white background; png at "
                   f"{PNG_SCALE}x, {96 * PNG_SCALE} dpi); needs kaleido and Chromium")
    a.add_argument("--runs-dir", **runs_dir)
    a.add_argument("--json", action="store_true", help="print one JSON document instead of tables: {run, method, "
                   "rounds, analysis_dir, analyses: {hessian|landscape|interpolate|flatness|calibration: [one row per "
                   "round]}} (progress stays on stderr)")
    sw = sub.add_parser("sweep", help="a preset x a grid of overrides, one run per trial, executed on Ray or as a "
                        "SLURM job array (pip install -r requirements-sweep.txt)")
    sw.add_argument("--preset", help="start from a preset (see `presets`); default: demo")
    sw.add_argument("--config", help="start from a config JSON file (e.g. a run's config.json)")
    sw.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field for every trial (repeatable)")
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                    help="values of one field to sweep, e.g. --grid alpha=0.2,0.5,0.8 --grid seed=0,1,2 "
                    "(repeatable; trials are the product)")
    sw.add_argument("--backend", choices=("ray", "slurm", "submitit-local"), default="ray",
                    help="ray (default): trials as Ray tasks, this command waits for them; slurm: one SLURM job "
                    "array task per trial through submitit, this command submits and returns (no driver to keep "
                    "alive); submitit-local: the same jobs as processes on this machine")
    sw.add_argument("--address", help="ray: a running Ray cluster (ray://head:10001, or auto on a node); "
                    "default: start Ray on this machine")
    sw.add_argument("--cpus-per-trial", type=float, help="CPUs each trial reserves (default 1)")
    sw.add_argument("--gpus-per-trial", type=float,
                    help="GPUs each trial reserves (ray: default 1 when the cluster has GPUs, else 0, fractions "
                    "pack trials on one GPU; slurm: whole GPUs, default 0)")
    sw.add_argument("--partition", help="slurm: the partition to submit to (default: the cluster's)")
    sw.add_argument("--time", help="slurm: each trial's time limit, minutes or [days-]hours:minutes:seconds "
                    "(default 60); a trial stopped by it is requeued and continues from its last epoch")
    sw.add_argument("--max-parallel", type=int, help="slurm: at most this many of the sweep's jobs run at once")
    sw.add_argument("--slurm", dest="slurm_params", action="append", default=[], metavar="KEY=VALUE",
                    help="slurm: another submitit slurm_<key> parameter, e.g. --slurm account=proj42 --slurm "
                    "qos=high (repeatable)")
    sw.add_argument("--resume", metavar="SWEEP_ID", help="continue a sweep: done trials are kept, the rest run")
    sw.add_argument("--new", action="store_true", help="start a new sweep even if the same one exists "
                    "(by default the same preset, overrides and grid continue the existing sweep)")
    sw.add_argument("--runs-dir", **runs_dir)
    sws = sub.add_parser("sweeps", help="list sweeps, or one sweep's trials")
    sws.add_argument("sweep", nargs="?", help="a sweep id: show its trials")
    sws.add_argument("--runs-dir", **runs_dir)
    sws.add_argument("--json", action="store_true", help="print one JSON document: {runs_dir, sweeps: [...]}, or "
                     "with a sweep id {id, running, grid, states, trials: [...]}")
    sub.add_parser("presets", help="list the presets and the paper settings they mirror")
    ls = sub.add_parser("runs", help="list runs: status and per-round test accuracy")
    ls.add_argument("--runs-dir", **runs_dir)
    ls.add_argument("--json", action="store_true", help="print one JSON document: {runs_dir, runs: [{id, status, "
                    "name, method, created, rounds_done, test_acc, error, problem}]}")
    ex = sub.add_parser("export", help="write a run's or a sweep's metrics as TensorBoard runs, one per round "
                        "(pip install tensorboard)")
    ex.add_argument("source", metavar="run-or-sweep", help="a run id (see `runs`) or a sweep id (see `sweeps`)")
    ex.add_argument("--tensorboard", metavar="DIR", required=True, help="folder of TensorBoard runs: writes "
                    "DIR/<id>/round-<k>..., replacing an earlier export of the same run or sweep")
    ex.add_argument("--runs-dir", **runs_dir)
    rm = sub.add_parser("rm", help="delete a run folder (not while it is queued or running)")
    rm.add_argument("run", nargs="+", help="run id(s)")
    rm.add_argument("--runs-dir", **runs_dir)
    mv = sub.add_parser("rename", help="give a run a new name (its id keeps the timestamp)")
    mv.add_argument("run", help="run id")
    mv.add_argument("name", help="the new name")
    mv.add_argument("--runs-dir", **runs_dir)
    rp = sub.add_parser("report", help="one self-contained HTML file of a run or a sweep: config, loss, curves, "
                        "rounds, cached analyses, the paper's finding beside the run's (opens offline)")
    rp.add_argument("source", metavar="run-or-sweep", help="a run id (see `runs`) or a sweep id (see `sweeps`)")
    rp.add_argument("--out", metavar="FILE", help="where to write it (default: report.html, or report.pdf, in the "
                    "run's or the sweep's folder)")
    rp.add_argument("--pdf", action="store_true", help="print it to PDF with headless Chromium instead")
    rp.add_argument("--runs-dir", **runs_dir)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse printed usage (exit 2) or --help (exit 0)
        return int(e.code or 0)
    commands = {"train": cmd_train, "resume": cmd_resume, "analyze": cmd_analyze, "presets": cmd_presets,
                "sweep": cmd_sweep, "sweeps": cmd_sweeps, "runs": cmd_runs, "rm": cmd_rm, "rename": cmd_rename,
                "export": cmd_export, "report": cmd_report}
    try:
        return commands[args.cmd](args)
    except (ConfigError, DataError, UsageError, RunError) as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # the file system refused what the checks let through (a race, a full disk)
        print(f"error: {one_line(f'{e.filename}: {e.strerror}' if e.filename and e.strerror else str(e))}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before a job existed (start-up): nothing to keep
        print("interrupted", file=sys.stderr)
        return 130


def build_config(args: argparse.Namespace) -> RunConfig:
    if args.preset is not None and args.config is not None:
        raise UsageError("give --preset or --config, not both")
    if args.preset is not None and not args.preset.strip():
        raise UsageError("--preset must name a preset: see `python -m sdcore presets` (default: demo)")
    if args.config is not None and not args.config.strip():
        raise UsageError("--config must name a config JSON file (e.g. a run's config.json)")
    cfg = RunConfig.load(args.config) if args.config is not None else preset(args.preset or "demo")
    return apply_overrides(cfg, args.overrides).validate()


def runs_store(args: argparse.Namespace, *, write: bool = False) -> RunStore:
    """The runs folder of --runs-dir ($SDLAB_RUNS_DIR, ./runs) as a RunStore, or a UsageError naming it and why
    it cannot be one: a file, under a file, under /proc, /sys or /dev, or (``write``) not writable.

    Nothing is created here: a folder that does not exist yet reads as empty, and the first run or sweep
    makes it (RunStore.create), once the request is known to be good."""
    given = args.runs_dir
    what = "--runs-dir" if given is not None else f"${RUNS_DIR_ENV}" if os.environ.get(RUNS_DIR_ENV) else "runs folder"
    text = given if given is not None else str(default_runs_dir())
    if not text.strip() or "\0" in text:
        raise UsageError(f"{what} must be a folder path, got {show_value(text)}")
    shown = show_value(text, 200)
    real = Path(os.path.realpath(text))
    virtual = [v for v in VIRTUAL_ROOTS if real == Path(v) or Path(v) in real.parents]
    if virtual:
        raise UsageError(f"{what} {shown} is under {virtual[0]}, the kernel's virtual file system: give a folder "
                         "on a disk")
    for folder in (real, *real.parents):  # the nearest part of the path that exists must be a folder
        try:
            if folder.exists():
                break
        except OSError as e:  # a name too long, a permission on the way
            raise UsageError(f"{what} {shown} cannot be used: {e.strerror or e}") from None
    if not folder.is_dir():
        raise UsageError(f"{what} {shown} is a file, not a folder" if folder == real else
                         f"{what} {shown} is under {folder}, which is a file, not a folder")
    if not os.access(folder, os.R_OK | os.X_OK) or (write and not os.access(folder, os.W_OK)):
        raise UsageError(f"{what} {shown} cannot be {'written' if write else 'read'}: permission denied on {folder}")
    return RunStore(text)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = build_config(args)  # refuses bad input before anything is written
    store = runs_store(args, write=True)
    if args.profile:
        return _train_profiled(store, cfg, quiet=args.quiet)
    manager = JobManager(store.root)
    progress = None if args.quiet else ProgressPrinter(sys.stderr)
    handle = manager.submit(cfg, on_event=progress)  # refuses a missing dataset or GPU before anything runs
    _say_device(handle.run.config(), args.quiet)
    return _follow(manager, handle, progress)


def _say_device(cfg: RunConfig, quiet: bool) -> None:
    if not quiet:
        print(f"training on {describe_device(resolve_device(cfg.device))}", file=sys.stderr)


def _train_profiled(store: RunStore, cfg: RunConfig, *, quiet: bool) -> int:
    """Train in this (main) thread, where the profiler's backend was initialised, with a StepProfiler."""
    store.recover()
    run = prepare(cfg, store)
    _say_device(run.config(), quiet)
    profiler, progress = StepProfiler(run.path / "profile"), None if quiet else ProgressPrinter(sys.stderr)
    lock = run.lock()
    status, error = "done", ""
    try:
        execute(run, on_event=lambda e: [sink(e) for sink in (profiler, progress) if sink is not None])
    except (Cancelled, KeyboardInterrupt):
        status = "cancelled"
    except Exception as e:
        status, error = "failed", failure_message(e)
    finally:
        lock.release()
        profiler.close()
        if progress is not None:
            progress.close()
    for k, steps, ops in profiler.written:
        print(f"profile of round {k} ({steps} steps): {ops.with_name(f'round{k}.trace.json')} (open in "
              f"https://ui.perfetto.dev); operators by time: {ops}", file=sys.stderr)
    return _report(run, status, error)


def cmd_resume(args: argparse.Namespace) -> int:
    manager = JobManager(runs_store(args, write=True).root)
    progress = None if args.quiet else ProgressPrinter(sys.stderr)
    handle = manager.resume(args.run, on_event=progress, restart_round=args.restart_round)
    _say_device(handle.run.config(), args.quiet)
    return _follow(manager, handle, progress)


def _follow(manager, handle, progress: "ProgressPrinter | None") -> int:
    """Wait for the job; Ctrl-C cancels it cleanly (finished rounds and the last epoch are kept)."""
    try:
        while not handle.wait(0.25):
            pass
        if handle.then is not None and handle.progress().status == "done":  # curvature=True: its analysis
            if progress is not None:
                progress.close()
                print("computing λ_max and trace of every round (curvature=true)", file=sys.stderr)
            while not handle.then.wait(0.25):
                pass
    except KeyboardInterrupt:
        handle.cancel()
        handle.wait()
    finally:
        if progress is not None:
            progress.close()
        manager.shutdown(cancel=True)
    p = handle.progress()
    code = _report(handle.run, p.status, p.error)
    if code == 0 and handle.then is not None:
        print(_curvature_report(handle.run, handle.then.progress()))
    return code


def _curvature_report(run, p) -> str:
    """The curvature=True answers: per student, more accurate and flatter than the teacher or not."""
    if p.status != "done":
        return f"curvature: {p.status}" + (f" — {p.error}" if p.error else "")
    found, _, _ = run_verdicts(run)
    return "\n".join(v.sentence(round_name(v.round, run.config().method)).replace("**", "") for v in found)


def _report(run, status: str, error: str) -> int:
    if status == "cancelled":
        print(f"cancelled: finished rounds are kept; continue with `python -m sdcore resume {run.id}`",
              file=sys.stderr)
        return 130
    if status == "failed":
        print(f"error: run {run.id} failed: {error}", file=sys.stderr)
        return 1
    print(f"run {run.id}  ({run.path})")
    print(format_summary(run.config(), run.summary()))
    return 0


def _rounds(text: str | None, finished: list[int]) -> tuple[int, ...]:
    """The rounds of --rounds ("0,1"; every finished round when not given), each a finished one."""
    if text is None:
        return tuple(finished)
    try:
        rounds = tuple(dict.fromkeys(int(x) for x in text.split(",")))  # in the order given, once each
    except ValueError:  # an empty or non-integer part, or one past Python's 4300 digits
        raise UsageError(f"--rounds must be comma-separated integers like 0,1, got {show_value(text)}") from None
    missing = [r for r in rounds if r not in finished]
    if missing:
        raise UsageError(f"--rounds names round {show_value(missing[0])}, which is not a finished round of the run "
                         f"(finished: {', '.join(map(str, finished)) or 'none'})")
    return rounds


def cmd_analyze(args: argparse.Namespace) -> int:
    check_device(args.device, "--device")
    check_seed(args.seed, "--seed")
    run = runs_store(args).get(args.run)
    finished = run.finished_rounds()
    if not finished:
        raise RunError(f"run {run.id} has no finished round to analyze yet")
    named = args.hessian or args.landscape or args.interpolate or args.flatness
    spec = AnalysisSpec(rounds=_rounds(args.rounds, finished), hessian=args.hessian or not named,
                        density=not args.no_density,
                        top_k=args.top_k, trace_samples=args.trace_samples, trace_tol=args.trace_tol,
                        landscape=args.landscape,
                        steps=args.steps, interpolate=args.interpolate, flatness=args.flatness,
                        subset=args.subset, seed=args.seed, device=args.device)
    spec.validate()  # every option, before anything is computed or cached (--calibration writes its own cache)
    resolve_device(args.device)  # a GPU asked for where there is none
    if args.figures and (missing := unavailable()):  # said before minutes of computing, not after
        raise UsageError(missing)
    robust = _robustness_settings(args, run)  # None without --robustness / --cifar-c; its files checked first
    out = AnalyzeOutput(run, spec.rounds, as_json=args.json)
    if args.calibration:
        results = [m for m in run_calibration(run, device=args.device, convention=args.calibration_convention)
                   if m.round in spec.rounds]
        out.add(format_calibration(run.config().method, results), calibration_section(run.config().method, results))
    if robust is not None:
        results = [r for r in run_robustness(run, robust, device=args.device, progress=_robustness_progress())
                   if r.round in spec.rounds]
        out.add(format_robustness(run.config().method, results), robustness_section(run.config().method, results))
    if (args.calibration or robust is not None) and not named:
        return _with_figures(args, run, spec.rounds, out)
    try:
        results = analyze(run, spec, on_event=lambda e: print(  # one line as each stage starts (events come per HVP)
            f"  computing {e.metrics['analysis']} of round {e.round} ({e.stage}/{e.stages})",
            file=sys.stderr, flush=True) if e.kind == "step" and e.metrics["stage_fraction"] == 0 else None)
    except KeyboardInterrupt:
        print("interrupted: finished analyses are cached in the run's analysis/ folder", file=sys.stderr)
        return 130
    out.add(format_analysis(run.config().method, spec, results),
            analysis_sections(run.config().method, spec.rounds, results))
    return _with_figures(args, run, spec.rounds, out, analyses=results)


def _with_figures(args: argparse.Namespace, run, rounds: Sequence[int], out: "AnalyzeOutput", *,
                  analyses: dict | None = None) -> int:
    """``out.done()``, then with --figures every figure of what was analyzed (calibration read back from its cache)
    and the training curves, written to <run>/figures/; their paths on stdout (stderr with --json). A figure that
    cannot be drawn is one line and exit 1: the results stay cached."""
    code = out.done()
    if not args.figures:
        return code
    calibration = [m for m in run_calibration(run, device=args.device, convention=args.calibration_convention)
                   if m.round in rounds] if args.calibration else None
    try:
        paths = write_figures(run_figures(run, analyses=analyses, calibration=calibration), run.path / "figures",
                              args.figures, caption=run_caption(run.id, run.config()))
    except ExportError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 1
    for path in paths:
        print(path, file=sys.stderr if out.as_json else sys.stdout)
    return code


class AnalyzeOutput:
    """What `analyze` prints on stdout: each analysis's table as it is ready, then where the results are cached; with
    --json instead one document at the end (``export.analysis_document``), each analysis a section of its
    "analyses", so stdout holds nothing else (progress and errors go to stderr)."""

    def __init__(self, run, rounds: Sequence[int], *, as_json: bool):
        self.run, self.rounds, self.as_json = run, rounds, as_json
        self.sections: dict[str, object] = {}

    def add(self, text: str, sections: dict[str, object]) -> None:
        """One analysis's table, and its rows for the JSON document by section name ("calibration", ...)."""
        if self.as_json:
            self.sections.update(sections)
        else:
            print(text, flush=True)

    def done(self) -> int:
        if self.as_json:
            print(to_json(analysis_document(self.run, self.run.config().method, self.rounds, self.sections)))
        else:
            print(f"(results cached in {self.run.path / 'analysis'})")
        return 0


def format_analysis(method: str, spec, results: dict) -> str:
    rows = []
    for r in spec.rounds:
        row = [str(r), round_name(r, method)]
        if spec.hessian:
            eig, tr = results[("eigen", r)], results[("trace", r)]
            row += [f"{eig.values[0]:.4g}", f"{tr.trace:.4g} ± {tr.stderr:.2g}"]
        for kind in ("line", "surface"):
            if (kind, r) in results:
                loss = results[(kind, r)].loss
                flat = [v for row_ in loss for v in row_] if kind == "surface" else loss
                row += [f"{min(flat):.3g} → {max(flat):.3g}"]
        if ("flatness", r) in results:
            f = results[("flatness", r)]
            row += [f"{f.loss_mean[0]:.3g} → {f.loss_mean[-1]:.3g}"]
        rows.append(row)
    header = ["round", "model"] + (["λ_max", "trace ± stderr"] if spec.hessian else [])
    header += [f"{spec.landscape} surface loss min → max"] if spec.landscape else []
    header += ["loss: no noise → largest σ"] if spec.flatness else []
    return _table(header, rows)


def format_calibration(method: str, results: list) -> str:
    rows = [[str(m.round), m.label if m.label != "deepest" else round_name(m.round, method),
             f"{m.report.top1_err:.2f}", f"{m.report.top5_err:.2f}", f"{m.report.nll:.3f}", f"{100 * m.report.ece:.2f}",
             f"{m.report.brier:.3f}", f"{1000 * m.report.aurc:.2f}", f"{1000 * m.report.eaurc:.2f}"] for m in results]
    table = _table(["round", "model", "top-1 err %", "top-5 err %", "NLL", "ECE %", "Brier", "AURC ×10³",
                    "E-AURC ×10³"], rows)
    return table + (f"\n{describe(results[0].report.convention, results[0].report.n_bins)}" if results else "")


def _robustness_settings(args: argparse.Namespace, run) -> RobustnessSettings | None:
    """--robustness / --cifar-c [ROOT] as settings, the CIFAR-C folder checked (names only) before any compute."""
    if args.cifar_c is None:
        return RobustnessSettings().validate() if args.robustness else None
    settings = RobustnessSettings(source="cifar-c", root=args.cifar_c or None).validate()
    line = cifar_c_folder(run.config(), settings).problem()  # ConfigError for a run on another dataset
    if line is not None:
        raise DataError(line)
    return settings


def _robustness_progress():
    """A progress callback printing one stderr line as each round's corruption starts (not per batch)."""
    last = [""]

    def progress(fraction: float, what: str) -> None:
        head = what.split(" · severity")[0]
        if head and head != last[0]:
            last[0] = head
            print(f"  computing robustness · {head} ({100 * fraction:.0f}%)", file=sys.stderr, flush=True)
    return progress


def robustness_section(method: str, results: list) -> dict[str, list[dict]]:
    """``run_robustness``'s results as an ``analyze --json`` section: {"robustness": [{"round", "model", "source",
    "clean" (accuracy %), "mean_corrupted" (accuracy %), "mce", "relative_mce" (error %, null for synthetic),
    "complete", "errors" (corruption -> error %), "accuracy" (corruption -> accuracy % at severities 1..5),
    "problems" (corruption -> why its file was left out)}]}."""
    return {"robustness": [{"round": r.round, "model": round_name(r.round, method), "source": r.source,
                            "clean": r.clean, "mean_corrupted": r.mean_corrupted, "mce": r.mce,
                            "relative_mce": r.relative_mce, "complete": r.complete, "errors": r.errors,
                            "accuracy": r.accuracy, "problems": r.problems} for r in results]}


def format_robustness(method: str, results: list) -> str:
    """One column per round; rows: clean accuracy, the mean error under corruption (CIFAR-C: mCE and relative mCE),
    then each corruption's error % (mean over its 5 severities). The files left out follow the table."""
    if not results:
        return "(no finished round)"
    cifar_c = results[0].source == "cifar-c"
    names = list(dict.fromkeys(n for r in results for n in r.accuracy))
    errors = [r.errors for r in results]
    rows = [["clean acc %", *(f"{r.clean:.2f}" for r in results)]]
    if cifar_c:
        rows += [["mCE %", *(f"{r.mce:.2f}" + ("" if r.complete else " †") for r in results)],
                 ["relative mCE %", *(f"{r.relative_mce:.2f}" for r in results)]]
    else:
        rows += [["mean corrupted err %", *(f"{100 - r.mean_corrupted:.2f}" for r in results)]]
    rows += [[f"{n.replace('_', ' ')}{' *' if cifar_c and n in CIFAR_C_EXTRA else ''} err %",
              *(f"{e[n]:.2f}" if n in e else "—" for e in errors)] for n in names]
    lines = [_table(["", *(round_name(r.round, method) for r in results)], rows)]
    if cifar_c:
        lines.append("mCE: unnormalized mean corruption error over the 15 CIFAR-C corruptions (as AugMix reports it); "
                     "relative mCE = mCE - clean error; * = extra corruption, not in the mCE")
        read = sum(n in results[0].accuracy for n in CIFAR_C)
        if read < len(CIFAR_C):
            lines.append(f"† over {read} of the 15 corruptions: not comparable with published mCE")
        lines += [f"left out: {line}" for line in dict.fromkeys(v for r in results for v in r.problems.values())]
    else:
        lines.append("sdlab's synthetic corruptions (5 families x 5 severities), not CIFAR-C: --cifar-c gives numbers "
                     "comparable with the literature")
    return "\n".join(lines)


def cmd_sweep(args: argparse.Namespace) -> int:
    store = runs_store(args, write=True)
    sweep = spec = None
    if args.resume is not None:
        if args.preset is not None or args.config is not None or args.overrides or args.grid or args.new:
            raise UsageError("--resume continues a sweep with its own settings: give no --preset, --config, "
                             "--set, --grid or --new")
        sweep = sw.get_sweep(store, args.resume)
        sweep.spec()
    else:
        spec = sw.SweepSpec.build(build_config(args), args.grid,
                                  cpus_per_trial=1.0 if args.cpus_per_trial is None else args.cpus_per_trial,
                                  gpus_per_trial=args.gpus_per_trial)
    if args.backend != "ray":
        return _submit_sweep(args, store, sweep, spec)
    if args.partition or args.time or args.max_parallel or args.slurm_params:
        raise UsageError("--partition, --time, --max-parallel and --slurm are for --backend slurm")
    if not sw.ray_available():
        raise UsageError("sweeps run on Ray, which is not installed: .venv/bin/pip install -r requirements-sweep.txt")
    if args.resume is None:
        sweep, continuing = sw.open_sweep(store, spec, new=args.new, check_data=args.address is None)
        if continuing:
            print(f"continuing sweep {sweep.id} (same settings and grid; --new starts a separate one)",
                  file=sys.stderr)
    # The dashboard's Stop sends SIGINT (Ray's core takes SIGTERM over): make sure it raises KeyboardInterrupt
    # even when this process was started with SIGINT ignored (a background job of a shell script).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        outcome = sw.run_sweep(store, sweep, address=args.address, cpus_per_trial=args.cpus_per_trial,
                               gpus_per_trial=args.gpus_per_trial)
    finally:
        signal.signal(signal.SIGINT, previous)
    print(f"sweep {sweep.id}  ({sw.describe(outcome.states)})")
    print(_trials_table(outcome.states))
    if outcome.ok:
        return 0
    print(f"continue it with `python -m sdcore sweep --resume {sweep.id}` (done trials are kept)", file=sys.stderr)
    return 130 if outcome.cancelled else 1


def _submit_sweep(args: argparse.Namespace, store: RunStore, sweep: sw.Sweep | None, spec: sw.SweepSpec | None
                  ) -> int:
    """``sweep --backend slurm|submitit-local``: submit the trials not done as jobs and return (exit 0 once
    submitted); ``sweeps <id>`` follows them."""
    if args.address:
        raise UsageError("--address is Ray's; --backend slurm submits through sbatch")
    backend = "local" if args.backend == "submitit-local" else "slurm"
    given = (args.time, args.partition, args.gpus_per_trial, args.cpus_per_trial, args.max_parallel)
    stored = slurm.options_of(sweep) if sweep is not None else None
    if stored is not None and stored.backend == backend and all(v is None for v in given) and not args.slurm_params:
        options = stored  # a resume asks for what the sweep was submitted with, unless told otherwise
    else:
        options = slurm.SlurmOptions.build(time=args.time, partition=args.partition,
                                           gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial,
                                           max_parallel=args.max_parallel, extra=args.slurm_params, backend=backend)
    if not slurm.submitit_available():
        raise UsageError("SLURM sweeps go through submitit, which is not installed: "
                         ".venv/bin/pip install -r requirements-sweep.txt")
    if sweep is None:
        sweep, continuing = sw.open_sweep(store, spec, new=args.new, check_data=options.backend == "local")
        if continuing:
            print(f"continuing sweep {sweep.id} (same settings and grid; --new starts a separate one)",
                  file=sys.stderr)
    if sweep.is_live():
        raise UsageError(f"sweep {sweep.id} is running on Ray in another process: stop it there first")
    sub = slurm.submit(store, sweep, options, say=lambda s: print(s, file=sys.stderr, flush=True))
    print(f"sweep {sweep.id}  ({sw.describe(sub.states)})")
    print(_trials_table(sub.states))
    print(f"follow it with `python -m sdcore sweeps {sweep.id}`; after a node failure, "
          f"`python -m sdcore sweep --resume {sweep.id} --backend {args.backend}` submits what did not finish",
          file=sys.stderr)
    return 0


def _trials_table(states) -> str:
    rows = trial_rows(states)
    cells = [[str(r["trial"]), r["overrides"], r["status"], f"{100 * r['progress']:.0f}%",
              r["test acc % by round"] or "-", r["run"] or "-"] for r in rows]
    return _table(["trial", "overrides", "status", "progress", "test acc % by round", "run"], cells)


def cmd_sweeps(args: argparse.Namespace) -> int:
    store = runs_store(args)
    if args.json:
        print(to_json(sweeps_document(store) if args.sweep is None else
                      sweep_document(store, sw.get_sweep(store, args.sweep))))
        return 0
    if args.sweep is not None:
        sweep = sw.get_sweep(store, args.sweep)
        states = sw.trial_states(store, sweep)
        jobs = slurm.activity(sweep, states)
        running = "running" if sweep.is_live() else f"running {jobs}" if jobs else "not running"
        print(f"sweep {sweep.id}  ({running}; {sw.describe(states)})")
        print(_trials_table(states))
        return 0
    rows = []
    for sweep in sw.list_sweeps(store):
        try:
            spec, states = sweep.spec(), sw.trial_states(store, sweep)
        except RunError as e:
            rows.append((sweep.id, "?", f"unreadable: {e}"))
            continue
        grid = " ".join(f"{k}={','.join(v)}" for k, v in spec.grid)
        rows.append((sweep.id, grid, ("running; " if sweep.is_live() else "") + sw.describe(states)))
    if not rows:
        print(f"no sweeps in {store.root.resolve()}")
        return 0
    print(_table(("sweep", "grid", "trials"), rows))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    for p in PRESETS.values():
        print(f"{p.name}\n    {p.description}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    store = runs_store(args)
    store.recover()
    infos = store.list()
    if args.json:
        print(to_json(runs_document(store.root, infos)))
        return 0
    rows = []
    for info in infos:
        if info.status == "unreadable":
            rows.append((info.id, "?", f"unreadable: {info.problem}", "-"))
            continue
        accs = " ".join(f"{a:.2f}" for a in info.test_acc) or "-"
        status = f"{info.status}: {info.error}" if info.status == "failed" else info.status
        rows.append((info.id, info.method, status, accs))
    if not rows:
        print(f"no runs in {store.root.resolve()}")
        return 0
    print(_table(("run", "method", "status", "test acc % by round"), rows))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    store = runs_store(args, write=True)
    ids = list(dict.fromkeys(args.run))
    for run_id in ids:  # every id known before any folder goes
        store.get(run_id)
    for run_id in ids:
        store.delete(run_id)
        print(f"removed {run_id}")
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    check_name(args.name.strip(), "the new name")
    run = runs_store(args, write=True).rename(args.run, args.name)
    print(f"renamed {args.run} -> {run.id}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The report written (nothing computed: analyses are read from the run's cache); its path on stdout."""
    if args.out is not None and (not args.out.strip() or "\0" in args.out):
        raise UsageError(f"--out must be a file path, got {show_value(args.out)}")
    print(write_report(runs_store(args), args.source, out=args.out, pdf=args.pdf))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """A run (or, failing that, a sweep) as TensorBoard runs: the folders written on stdout, then how to open them;
    a sweep's trials with nothing to export named on stderr."""
    if not args.tensorboard.strip() or "\0" in args.tensorboard:
        raise UsageError(f"--tensorboard must be a folder path, got {show_value(args.tensorboard)}")
    store = runs_store(args)
    found = sw.run_or_sweep(store, args.source)
    if not isinstance(found, sw.Sweep):
        folders = export_tensorboard(found, args.tensorboard)
    else:
        exported = export_sweep_tensorboard(store, found, args.tensorboard)
        for line in exported.skipped:
            print(f"skipped {line}", file=sys.stderr)
        folders = exported.folders
    for folder in folders:
        print(folder)
    print(f"open them with: tensorboard --logdir {shlex.quote(args.tensorboard)}")
    return 0


def format_summary(cfg: RunConfig, summary: RunSummary | None) -> str:
    """Teacher-vs-students table (kd), per-exit table (a model with exits), peers (dml), or the single model."""
    rounds = summary.rounds if summary is not None else ()
    if not rounds:
        return "no finished round"
    if rounds[0].exit_accs:
        r = rounds[0]
        accs = r.exit_accs
        rows = [(f"exit {i + 1}" + (" (deepest)" if i == len(accs) - 1 else ""), f"{a:.2f}")
                for i, a in enumerate(accs)]
        rows.append(("ensemble", f"{r.ensemble_acc:.2f}"))
        return _table(("classifier", "test acc %"), rows)
    if rounds[0].peer_accs:
        r = rounds[0]
        rows = [(f"peer {i + 1}" + (" (reported)" if i == 0 else ""), f"{a:.2f}") for i, a in enumerate(r.peer_accs)]
        if r.ensemble_acc is not None:
            rows.append(("ensemble of peers", f"{r.ensemble_acc:.2f}"))
        return _table(("model", "test acc %"), rows)
    teacher = rounds[0].test_acc
    rows = []
    for r in rounds:
        k, acc = r.round, r.test_acc
        name = "teacher" if k == 0 else f"student {k}"
        if not terms.is_multi_round(cfg):
            name = terms.label(cfg.method)
        delta = "" if k == 0 else f"{'↑' if acc > teacher else '↓' if acc < teacher else '='} {acc - teacher:+.2f}"
        rows.append((str(k), name, f"{acc:.2f}", delta, str(r.best_epoch)))
    return _table(("round", "model", "test acc %", "vs teacher", "best epoch"), rows)


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


class ProgressPrinter:
    """Prints training events to the terminal: a redrawn bar on a tty, one line per epoch otherwise (not
    sdcore.jobs.Progress, the snapshot a page reads)."""

    def __init__(self, out: TextIO):
        self.out, self.tty, self.t0 = out, out.isatty(), time.perf_counter()
        self._last_draw, self._open = 0.0, False  # _open: a bar line is drawn and not yet ended

    def __call__(self, e: Event) -> None:
        if e.kind == "step" and self.tty and time.perf_counter() - self._last_draw > 0.1:
            self._draw(e, "")
        elif e.kind == "epoch":
            m = e.metrics
            val = f"val {m['val_acc']:.1f}%  " if "val_acc" in m else ""
            text = f"loss {m['train_loss']:.3f}  {val}test {m['test_acc']:.1f}%"
            if self.tty:
                self._draw(e, text)
            else:
                print(f"round {e.round}/{e.rounds - 1} epoch {e.epoch}/{e.epochs}  {text}", file=self.out, flush=True)
        elif e.kind == "round" and self.tty:
            self._newline()

    def _draw(self, e: Event, text: str) -> None:
        self._last_draw, self._open = time.perf_counter(), True
        done = (e.round * e.epochs * e.steps + max(e.epoch - (e.kind != "step"), 0) * e.steps
                + (e.step if e.kind == "step" else e.steps))
        total = e.rounds * e.epochs * e.steps
        frac = done / total
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        bar = "#" * int(24 * frac)
        epoch = e.epoch + 1 if e.kind == "step" else e.epoch
        self.out.write(f"\r\x1b[2Kround {e.round}/{e.rounds - 1} epoch {epoch}/{e.epochs} "
                       f"[{bar:<24}] {100 * frac:3.0f}% eta {eta:4.0f}s  {text}")
        self.out.flush()

    def _newline(self) -> None:
        if self._open:
            self.out.write("\n")
            self._open = False

    def close(self) -> None:
        self._newline()
