"""Sweeps: one base config × a grid of overrides, every trial a normal run folder, executed on Ray (or as a
SLURM job array: sdcore.slurm).

    python -m sdcore sweep --preset demo --grid alpha=0.2,0.5,0.8 --grid seed=0,1,2 [--address ray://head:10001]

The grid expands to the product of its values (the last ``--grid`` varies fastest). Each trial is
the base config with that trial's overrides, run by ``methods.execute`` in a Ray task, written as
``<runs-dir>/<run-id>/`` like any run (so Compare groups the seeds of one setting into mean ± std
with no extra code); its status.json carries ``"sweep": <sweep id>, "trial": <index>``.

    <runs-dir>/.sweeps/<sweep-id>/sweep.json   the spec: base config, grid, trials, resources
    <runs-dir>/.sweeps/<sweep-id>/lock         flock held by the driver while the sweep runs
    <runs-dir>/.sweeps/<sweep-id>/driver.log   the driver's output when the dashboard launched it

The run folders are the only record of progress, so a sweep resumes from them: a trial whose run
is done is skipped, a failed / cancelled / interrupted one is resumed in its own folder from its
last epoch checkpoint, one with no run yet is started. Starting the same sweep again (same base
config and grid) resumes it; so does ``--resume <sweep-id>``.

Why plain Ray tasks and not Ray Tune: a grid sweep needs no search algorithm, trial scheduler or
early stopping, which is what Tune adds; what it would also add is its own experiment folder,
checkpoints and result log, a second copy of what sdlab's run folders already hold (and resume
from, exactly). A task per trial with ``num_gpus`` / ``num_cpus`` resources gives Ray's placement,
queueing on a busy cluster and fault isolation (a trial that raises or whose worker dies is just
that trial), and the run folder stays the one contract every page and command reads.

Ray is optional (``requirements-sweep.txt``): nothing but ``run_sweep`` imports it, and everything
else here (spec, status) works without it, so the dashboard can show sweeps on a machine without Ray.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

import sdcore
from sdcore import files, liveness, terms
from sdcore.config import ConfigError, RunConfig, apply_overrides, parse_override, show_value
from sdcore.data import check_available
from sdcore.engine import Cancelled
from sdcore.runs import (
    ACTIVE,
    RESUMABLE,
    Run,
    RunError,
    RunLock,
    RunStore,
    atomic_write_json,
    new_folder,
    slug,
    timestamp,
)
from sdcore.training import execute, failure_message, prepare

SWEEPS_DIR = ".sweeps"  # under the runs dir; the leading dot keeps it out of the run library
JOB_STATES = ("submitted", "started", "failed")  # a trial's job before its run folder exists (sdcore.slurm)
MAX_TRIALS = 1000


def ray_available() -> bool:
    try:
        import ray  # noqa: F401, PLC0415 - optional (requirements-sweep.txt)
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- the spec

def parse_grid(items: Iterable[str]) -> list[tuple[str, list[str]]]:
    """``["alpha=0.2,0.5", "seed=0,1"]`` -> [("alpha", ["0.2", "0.5"]), ("seed", ["0", "1"])].

    Keys are checked (unknown or ambiguous keys raise ConfigError), values kept as typed so a trial's
    override reads like the command line. A key may appear once. The product of the value counts is
    refused past MAX_TRIALS as each key comes in, before anything is expanded (4 keys of 200 values
    would be 1.6 billion trials).
    """
    grid: list[tuple[str, list[str]]] = []
    seen: dict[str, str] = {}
    trials = 1
    for item in items:
        shown = show_value(item)
        if "=" not in item:
            raise ConfigError(f"--grid {shown} must look like key=v1,v2,...")
        key, raw = (s.strip() for s in item.split("=", 1))
        trials *= raw.count(",") + 1  # counted before the values are split out
        if trials > MAX_TRIALS:
            raise ConfigError(f"the grid makes at least {trials} trials; at most {MAX_TRIALS} per sweep")
        values = [v.strip() for v in raw.split(",")]
        if not key or not raw or any(v == "" for v in values):
            raise ConfigError(f"--grid {shown} needs a key and comma-separated values, like alpha=0.2,0.5")
        full = parse_override(f"{key}={values[0]}")[0]
        for v in values:  # each value on its own: a bad one (too long, unreadable) is named before any trial
            parse_override(f"{key}={v}")
        if full in seen:
            raise ConfigError(f"--grid names {full} twice ({seen[full]!r} and {key!r}): give one list of values")
        if len(set(values)) != len(values):
            raise ConfigError(f"--grid {shown} repeats a value")
        seen[full] = key
        grid.append((key, values))
    if not grid:
        raise ConfigError("a sweep needs at least one --grid key=v1,v2,...")
    return grid


def expand(grid: list[tuple[str, list[str]]]) -> list[tuple[str, ...]]:
    """Every trial's overrides ("key=value"), the last key varying fastest."""
    return [tuple(f"{k}={v}" for (k, _), v in zip(grid, combo))
            for combo in itertools.product(*(values for _, values in grid))]


@dataclass(frozen=True)
class SweepSpec:
    base: RunConfig  # the preset / config with the --set overrides applied
    grid: tuple[tuple[str, tuple[str, ...]], ...]
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: 1 when the Ray cluster has GPUs, else 0

    @staticmethod
    def build(base: RunConfig, grid_items: Iterable[str], *, cpus_per_trial: float = 1.0,
              gpus_per_trial: float | None = None) -> "SweepSpec":
        grid = parse_grid(grid_items)
        check_resources(cpus_per_trial, gpus_per_trial)
        spec = SweepSpec(base=base.validate(), grid=tuple((k, tuple(v)) for k, v in grid),
                         cpus_per_trial=float(cpus_per_trial),
                         gpus_per_trial=None if gpus_per_trial is None else float(gpus_per_trial))
        for i in range(len(spec.trials())):  # parse_grid kept them to MAX_TRIALS
            spec.trial_config(i)  # every trial's config is valid, or nothing starts
        return spec

    def trials(self) -> list[tuple[str, ...]]:
        return self._trials

    @functools.cached_property
    def _trials(self) -> list[tuple[str, ...]]:  # computed once: trial_config indexes it per trial
        return expand([(k, list(v)) for k, v in self.grid])

    def trial_config(self, index: int) -> RunConfig:
        overrides = self.trials()[index]
        try:
            cfg = apply_overrides(self.base, list(overrides))
        except ConfigError as e:
            raise ConfigError(f"trial {index} ({' '.join(overrides)}): {e}") from None
        name = f"{self.base.name} {' '.join(overrides)}"[:64]
        try:
            return cfg.replace(name=name).validate()
        except ConfigError as e:
            raise ConfigError(f"trial {index} ({' '.join(overrides)}): {e}") from None

    def identity(self) -> dict[str, Any]:
        """What makes two sweeps the same sweep (resources and device are how, not what)."""
        base = self.base.to_dict()
        base.pop("device", None)
        return {"base": base, "grid": [[k, list(v)] for k, v in self.grid]}

    def to_dict(self) -> dict[str, Any]:
        return {**self.identity(), "base": self.base.to_dict(), "cpus_per_trial": self.cpus_per_trial,
                "gpus_per_trial": self.gpus_per_trial, "trials": [list(t) for t in self.trials()]}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "SweepSpec":
        return SweepSpec(base=RunConfig.from_dict(d["base"]), grid=tuple((k, tuple(v)) for k, v in d["grid"]),
                         cpus_per_trial=float(d.get("cpus_per_trial", 1.0)), gpus_per_trial=d.get("gpus_per_trial"))


def check_resources(cpus_per_trial: float, gpus_per_trial: float | None) -> None:
    if not 0 < cpus_per_trial <= 1024:
        raise ConfigError(f"--cpus-per-trial must be in (0, 1024], got {cpus_per_trial}")
    if gpus_per_trial is not None and not 0 <= gpus_per_trial <= 64:
        raise ConfigError(f"--gpus-per-trial must be in [0, 64], got {gpus_per_trial}")


# ---------------------------------------------------------------- sweeps on disk

@dataclass(frozen=True)
class Sweep:
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    def spec(self) -> SweepSpec:
        try:
            return SweepSpec.from_dict(files.read_json_object(self.path / "sweep.json"))
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as e:
            raise RunError(f"sweep {self.id} is unreadable: {e}") from None

    def is_live(self) -> bool:
        return RunLock.held(self.path / "lock")

    def log_path(self) -> Path:
        return self.path / "driver.log"

    def job_record(self, index: int) -> dict[str, Any] | None:
        """What the scheduler was told about trial ``index`` (sdcore.slurm writes it): {"job", "state": submitted |
        started | failed, "error", "backend", "host"}; None when the trial never went through one, or the record
        is unreadable (the trial then shows as pending, and a resume submits it again)."""
        try:
            rec = files.read_json_object(self.path / "jobs" / f"{index}.json", limit=65536)
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec.get("job"), str) and rec.get("state") in JOB_STATES else None


@dataclass(frozen=True)
class TrialState:
    index: int
    overrides: tuple[str, ...]
    state: str  # pending | queued | running | done | failed | cancelled | interrupted
    run_id: str = ""
    fraction: float = 0.0  # epochs logged / epochs the trial trains
    test_acc: tuple[float, ...] = ()
    error: str = ""
    job: str = ""  # the scheduler's job id (SLURM "4242_3") of a trial submitted through sdcore.slurm


def sweeps_root(store: RunStore) -> Path:
    return store.root / SWEEPS_DIR


def create_sweep(store: RunStore, spec: SweepSpec) -> Sweep:
    path = new_folder(sweeps_root(store), spec.base.name)
    atomic_write_json(path / "sweep.json", {**spec.to_dict(), "created": timestamp()})
    return Sweep(path)


def open_sweep(store: RunStore, spec: SweepSpec, *, new: bool = False, check_data: bool = True
               ) -> tuple[Sweep, bool]:
    """The sweep to run for ``spec``: the newest one with the same settings and grid (continued; True),
    or a new one (False) when there is none or ``new``. ``check_data``: refuse now (DataError, nothing
    written) when a trial's dataset is missing here; off for a cluster, whose nodes hold the data."""
    if check_data:
        datas = [spec.trial_config(i).data for i in range(len(spec.trials()))]
        for data in {json.dumps(dataclasses.asdict(d), sort_keys=True): d for d in datas}.values():
            check_available(data)
    same = None if new else find_same(store, spec)
    return (same, True) if same is not None else (create_sweep(store, spec), False)


def driver_pid(sweep: Sweep) -> int | None:
    """The pid of the process running the sweep, when one on this host holds its lock."""
    if not sweep.is_live():
        return None
    owner = RunLock.owner(sweep.path / "lock")
    return owner.pid if owner is not None and owner.host == liveness.this_host() else None


def stop(sweep: Sweep) -> bool:
    """Ask the sweep's driver to cancel its trials: SIGINT, as Ctrl-C; False if no driver runs here."""
    pid = driver_pid(sweep)
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)
    return True


def list_sweeps(store: RunStore) -> list[Sweep]:
    root = sweeps_root(store)
    if not root.is_dir():
        return []
    return [Sweep(p) for p in sorted(root.iterdir()) if (p / "sweep.json").is_file()]


def get_sweep(store: RunStore, sweep_id: str) -> Sweep:
    path = sweeps_root(store) / sweep_id
    if slug(sweep_id, max_len=200) != sweep_id or not (path / "sweep.json").is_file():
        known = ", ".join(s.id for s in list_sweeps(store)) or "none"
        raise RunError(f"no sweep {sweep_id!r} in {store.root.resolve()} (sweeps: {known})")
    return Sweep(path)


def run_or_sweep(store: RunStore, ident: str) -> Run | Sweep:
    """The run ``ident`` names, else the sweep (``report`` and ``export`` take either); RunError when neither."""
    try:
        return store.get(ident)
    except RunError:
        pass
    try:
        return get_sweep(store, ident)
    except RunError:
        raise RunError(f"no run or sweep {show_value(ident)} in {store.root.resolve()} (see `python -m sdcore runs` "
                       "and `python -m sdcore sweeps`)") from None


def find_same(store: RunStore, spec: SweepSpec) -> Sweep | None:
    """The newest sweep with the same base config and grid, if any."""
    same = [s for s in list_sweeps(store) if _identity_of(s) == spec.identity()]
    return same[-1] if same else None


def _identity_of(sweep: Sweep) -> dict[str, Any] | None:
    try:
        return sweep.spec().identity()
    except RunError:
        return None


def trial_states(store: RunStore, sweep: Sweep) -> list[TrialState]:
    """Each trial's state, read from the run folders tagged with this sweep (one pass over the runs)."""
    spec = sweep.spec()
    by_trial: dict[int, list[tuple[Run, dict[str, Any]]]] = {}
    for run in store:
        try:
            st = run.status_record()
        except (OSError, ValueError, RunError):
            continue
        if st.get("sweep") == sweep.id and isinstance(st.get("trial"), int):
            by_trial.setdefault(st["trial"], []).append((run, st))
    out = []
    for i, overrides in enumerate(spec.trials()):
        runs = by_trial.get(i, [])
        job = sweep.job_record(i)
        if not runs:
            out.append(_before_run(i, overrides, job))
            continue
        ranked = [(run, st, run.is_live()) for run, st in runs]
        run, st, live = max(ranked, key=lambda r: (2 if r[1]["status"] == "done" else 1 if r[2] else 0, r[0].id))
        state, job_id = st["status"], str(st.get("job") or "")
        if state in ACTIVE and not live:
            state = "interrupted"  # its owner died; recover() would mark it so
        if state in RESUMABLE and job is not None and job["state"] == "submitted" and job["job"] != job_id:
            state, job_id = "queued", job["job"]  # submitted again (sdcore.slurm), its new job not started yet
        fraction, accs = _progress(run)
        out.append(TrialState(i, overrides, state, run.id, fraction=1.0 if state == "done" else fraction,
                              test_acc=accs, error=st.get("error") or "", job=job_id))
    return out


def _before_run(index: int, overrides: tuple[str, ...], job: dict[str, Any] | None) -> TrialState:
    """A trial with no run folder yet: pending, or queued in a scheduler, or failed before its run was made
    (e.g. its dataset is missing on the node), as its job record says."""
    if job is None:
        return TrialState(index, overrides, "pending")
    if job["state"] == "failed":
        return TrialState(index, overrides, "failed", error=str(job.get("error") or ""), job=job["job"])
    return TrialState(index, overrides, "queued", job=job["job"])


def _progress(run: Run) -> tuple[float, tuple[float, ...]]:
    """(epochs logged / epochs it trains, test accuracy of each finished round); (0, ()) if unreadable."""
    try:
        cfg, n, summary = run.config(), len(run.metrics()), run.summary()
    except (OSError, ValueError, RunError, ConfigError):
        return 0.0, ()
    total = terms.num_rounds(cfg) * cfg.epochs
    return min(1.0, n / max(1, total)), tuple(r.test_acc for r in summary.rounds) if summary else ()


def overall(states: list[TrialState]) -> float:
    """The sweep's progress in [0, 1]: the mean of its trials'."""
    return sum(s.fraction for s in states) / max(1, len(states))


def describe(states: list[TrialState]) -> str:
    """'4 trials: 2 done, 1 running, 1 pending' (states in a fixed order)."""
    c = Counter(s.state for s in states)
    order = ("done", "running", "queued", "pending", "failed", "interrupted", "cancelled")
    return f"{len(states)} trials: " + ", ".join(f"{c[k]} {k}" for k in order if c.get(k))


# ---------------------------------------------------------------- the Ray side

def run_trial(runs_dir: str, sweep_id: str, index: int, config: dict[str, Any], run_id: str | None,
              threads: int) -> dict[str, Any]:
    """One trial, in a Ray worker: create (or reopen) its run folder, hold its lock, execute it.

    Returns {"run", "status", "error"}; sdlab's failures come back as a value, not an exception,
    so the driver can tell "this trial failed" (recorded in its run) from "its worker died".
    """
    torch.set_num_threads(max(1, threads))
    store = RunStore(runs_dir)
    try:  # e.g. the dataset is missing on this node: nothing is written, the trial stays pending
        if run_id is None:
            run = prepare(RunConfig.from_dict(config), store, status_fields={"sweep": sweep_id, "trial": index})
        else:
            run = store.get(run_id)
        lock = run.lock()
    except Exception as e:
        return {"run": run_id or "", "status": "failed", "error": failure_message(e)}
    try:
        return execute_trial(run)
    finally:
        lock.release()


def execute_trial(run: Run) -> dict[str, Any]:
    """``execute(run)`` with how it ended as a value, {"run", "status": done | cancelled | failed, "error"} (execute
    has recorded it in status.json); anything that is not an Exception (SystemExit) goes on up."""
    try:
        execute(run)
        return {"run": run.id, "status": "done", "error": ""}
    except (Cancelled, KeyboardInterrupt):
        return {"run": run.id, "status": "cancelled", "error": "cancelled"}
    except Exception as e:  # noqa: BLE001 - execute() recorded it in status.json
        return {"run": run.id, "status": "failed", "error": failure_message(e)}


@dataclass
class SweepOutcome:
    sweep: Sweep
    states: list[TrialState]
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return all(s.state == "done" for s in self.states)


def run_sweep(store: RunStore, sweep: Sweep, *, address: str | None = None,
              cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
              say: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> SweepOutcome:
    """Execute every trial not done yet on Ray; return when all have ended (or on Ctrl-C: SIGINT).

    ``address``: None starts a local Ray on this machine; otherwise ``ray.init(address)`` (``ray://host:10001``
    through Ray Client, or ``auto`` / ``host:6379`` on a cluster node). The runs dir must then be a
    shared filesystem mounted at the same path on every node; sdcore travels with the tasks.
    ``cpus_per_trial`` / ``gpus_per_trial`` override the resources stored with the sweep.
    """
    try:
        import ray  # noqa: PLC0415 - optional (requirements-sweep.txt)
    except ImportError:
        raise RunError("sweeps run on Ray, which is not installed: "
                       ".venv/bin/pip install -r requirements-sweep.txt") from None
    spec = sweep.spec()
    cpus = cpus_per_trial if cpus_per_trial is not None else spec.cpus_per_trial
    check_resources(cpus, gpus_per_trial)
    try:
        lock = RunLock(sweep.path / "lock")
    except RunError:
        raise RunError(f"sweep {sweep.id} is already running in another process") from None
    try:
        store.recover()
        states = trial_states(store, sweep)
        todo = [s for s in states if s.state in ("pending",) + RESUMABLE]
        busy = [s for s in states if s.state in ACTIVE]
        say(f"sweep {sweep.id}: {describe(states)}")
        for s in busy:
            say(f"  trial {s.index} ({' '.join(s.overrides)}) is {s.state} in another process (run {s.run_id}); "
                "left to it")
        if not todo:
            return SweepOutcome(sweep, states)
        _ray_init(ray, address)
        try:
            gpus = gpus_per_trial if gpus_per_trial is not None else spec.gpus_per_trial
            if gpus is None:
                gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
            task = ray.remote(run_trial).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
            where = f"{gpus:g} GPU" if gpus else f"{cpus:g} CPU"
            say(f"  {len(todo)} to run on Ray ({'local' if address is None else address}), {where} per trial")
            refs = {}
            for s in todo:
                cfg = spec.trial_config(s.index)
                refs[task.remote(str(store.root.resolve()), sweep.id, s.index, cfg.to_dict(),
                                 s.run_id or None, int(max(1, cpus)))] = s
            cancelled = _wait_all(ray, refs, store, say)
        finally:
            ray.shutdown()
        states = trial_states(store, sweep)
        return SweepOutcome(sweep, states, cancelled=cancelled)
    finally:
        lock.release()


def _ray_init(ray, address: str | None) -> None:
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if address is None:
        # Ray starts its workers at nice 15: beside busy processes a trial got a sliver of a core (BENCHMARKS.md,
        # "Sweeps on local Ray", issue 15). Trials are the user's work: they run at the driver's priority.
        # (Only for a cluster this call starts: with RAY_ADDRESS set, ray.init joins one and refuses _system_config.)
        if not os.environ.get("RAY_ADDRESS"):
            kwargs["_system_config"] = {"worker_niceness": os.getpriority(os.PRIO_PROCESS, 0)}
        ray.init(**kwargs)
    else:  # the cluster gets this sdcore (its nodes need requirements.txt installed, not sdlab itself)
        ray.init(address=address, runtime_env={"py_modules": [str(Path(sdcore.__file__).parent)]}, **kwargs)


def _wait_all(ray, refs: dict, store: RunStore, say) -> bool:
    """Report each trial as it ends; on Ctrl-C cancel the rest (True if so)."""
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in ready:
                s = refs[ref]
                label = f"trial {s.index} ({' '.join(s.overrides)})"
                try:
                    out = ray.get(ref)
                except Exception as e:  # the worker died (killed, out of memory, node lost)
                    say(f"  {label}: its worker stopped ({type(e).__name__}); resume the sweep to continue it")
                    continue
                if out["status"] == "done":
                    _, accs = _progress(store.get(out["run"]))
                    say(f"  {label}: done, test acc % by round {' '.join(f'{a:.2f}' for a in accs)}  "
                        f"(run {out['run']})")
                else:
                    where = f"  (run {out['run']})" if out["run"] else ""
                    say(f"  {label}: {out['status']}: {out['error']}{where}")
    except KeyboardInterrupt:
        say(f"  stopping: cancelling {len(pending)} trial(s) not finished (each keeps its last epoch)")
        for ref in pending:
            ray.cancel(ref)
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:  # let running trials write their cancelled status
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        return True
    return False


def trial_rows(states: list[TrialState]) -> list[dict[str, Any]]:
    """One row per trial, as the CLI and the Sweeps page show it (progress a fraction in [0, 1])."""
    return [{"trial": s.index, "overrides": " ".join(s.overrides),
             "status": s.state + (f": {s.error}" if s.state == "failed" and s.error else "")
             + (f" (job {s.job})" if s.job and s.state != "done" else ""),
             "progress": s.fraction, "test acc % by round": " ".join(f"{a:.2f}" for a in s.test_acc),
             "run": s.run_id} for s in states]


def launch_detached(runs_dir: Path, sweep: Sweep, *, address: str | None = None) -> int:
    """Start ``python -m sdcore sweep --resume <id>`` in its own process (the dashboard's "sweep" button);
    its output goes to the sweep's driver.log. Returns the pid."""
    cmd = [sys.executable, "-m", "sdcore", "sweep", "--resume", sweep.id, "--runs-dir", str(runs_dir)]
    if address:
        cmd += ["--address", address]
    with open(sweep.log_path(), "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    threading.Thread(target=proc.wait, name=f"sdlab-sweep-{sweep.id}", daemon=True).start()  # reap it: no zombie
    return proc.pid
