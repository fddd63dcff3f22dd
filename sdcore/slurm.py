"""Sweeps on a SLURM cluster through submitit: one job array task per trial, no driver to keep alive.

    python -m sdcore sweep --preset pham-cifar10-resnet18-a0.5 --grid seed=0,1,2 \\
        --backend slurm --partition gpu --time 12:00:00 --gpus-per-trial 1

``submit`` writes the sweep's trials not done yet as one job array (``sbatch`` through submitit) and
returns: on a cluster's login node, where long processes are killed, nothing has to stay alive. Each
array task runs ``Trial``: it makes (or reopens) the trial's run folder under the shared runs dir and
trains it with ``training.execute``; ``sweeps`` and the dashboard read the states from those folders
as for a Ray sweep.

Time limits and preemption. SLURM signals a job (USR2, 90 s ahead, as submitit asks in its sbatch
file) before killing it; submitit then calls ``Trial.checkpoint``, which marks the run interrupted
and hands submitit the same ``Trial`` to requeue. The requeued task reopens the run and continues from
its last epoch checkpoint (the epoch under way when the signal came is redone). A job killed without a
signal (node failure, a plain ``scancel``, out of memory) leaves its run "running" with a heartbeat
that stops; after ``liveness.STALE_S`` the run reads as interrupted and ``sweep --resume <id>
--backend slurm`` submits it again. Its queued trials whose job the scheduler no longer knows are
submitted again too; done trials never are.

    <runs-dir>/.sweeps/<sweep-id>/slurm.json        backend, resources, each submission (job ids by trial)
    <runs-dir>/.sweeps/<sweep-id>/jobs/<trial>.json  the trial's job: submitted | started | failed
    <runs-dir>/.sweeps/<sweep-id>/slurm/<job-id>/   submitit's pickles and each task's stdout/stderr

``backend="local"`` is submitit's LocalExecutor: the same jobs as processes on this machine (with the
same checkpoint-and-requeue on a time limit), to try a SLURM sweep on a laptop and to test it here.
The nodes run this Python (``sys.executable``) and import sdcore from it: the venv must sit on a
filesystem the nodes mount at the same path, as the runs dir must.
"""
from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from sdcore import files, liveness
from sdcore.config import ConfigError, show_value
from sdcore.runs import RESUMABLE, RunError, RunLock, RunStore, atomic_write_json, timestamp
from sdcore.sweep import Sweep, TrialState, describe, execute_trial, get_sweep, trial_states
from sdcore.training import failure_message, prepare

BACKENDS = ("slurm", "local")
ALIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD",
         "REQUEUE_FED", "UNKNOWN")  # sacct's states of a job that may still run a trial (UNKNOWN: sacct can't tell)
# How many times one trial may reach its time limit and be requeued (submitit's default, 3, would stop a 600-epoch
# run after 4 jobs); preemptions do not count. Past it the run is marked failed and `sweep --resume` submits it again.
MAX_TIME_LIMITS = 100
PREEMPTED = ("stopped by SLURM (time limit or preemption) and requeued: it continues from its last epoch")


def submitit_available() -> bool:
    try:
        import submitit  # noqa: F401, PLC0415 - optional (requirements-sweep.txt)
    except ImportError:
        return False
    return True


def parse_time(text: str) -> float:
    """SLURM's --time formats -> minutes: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (ConfigError otherwise)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if m is None:
        raise ConfigError(f"--time {show_value(text)} must be minutes or [days-]hours:minutes:seconds, like 720 "
                          "or 12:00:00")
    days, a, b, c = (int(g) if g is not None else None for g in m.groups())
    if days is not None:  # D-H, D-H:M, D-H:M:S
        minutes = days * 1440 + a * 60 + (b or 0) + (c or 0) / 60
    elif c is not None:  # H:M:S
        minutes = a * 60 + b + c / 60
    elif b is not None:  # M:S
        minutes = a + b / 60
    else:
        minutes = float(a)
    if not 1 <= minutes <= 366 * 1440:
        raise ConfigError(f"--time {show_value(text)} must be at least a minute and at most a year")
    return minutes


@dataclass(frozen=True)
class SlurmOptions:
    time_min: float = 60.0
    partition: str | None = None
    gpus_per_trial: int = 0
    cpus_per_trial: int = 1
    max_parallel: int | None = None  # array tasks running at once (sbatch --array=...%N); None: SLURM's limit
    extra: tuple[tuple[str, str], ...] = field(default=())  # submitit's slurm_<key> parameters: account, qos, ...
    backend: str = "slurm"

    @staticmethod
    def build(*, time: str | None = None, partition: str | None = None, gpus_per_trial: float | None = None,
              cpus_per_trial: float | None = None, max_parallel: int | None = None, extra: list[str] = (),
              backend: str = "slurm") -> "SlurmOptions":
        """From the command line's text, each problem one ConfigError line."""
        if backend not in BACKENDS:
            raise ConfigError(f"unknown submitit backend {show_value(backend)} (one of {', '.join(BACKENDS)})")
        gpus = 0.0 if gpus_per_trial is None else gpus_per_trial
        if gpus != int(gpus) or not 0 <= gpus <= 64:
            raise ConfigError(f"--gpus-per-trial {gpus:g}: SLURM gives whole GPUs, 0 to 64 (several trials on one "
                              "GPU is a Ray sweep's fractional --gpus-per-trial)")
        cpus = 1.0 if cpus_per_trial is None else cpus_per_trial
        if cpus != int(cpus) or not 1 <= cpus <= 1024:
            raise ConfigError(f"--cpus-per-trial {cpus:g}: SLURM gives whole CPUs, 1 to 1024")
        if max_parallel is not None and not 1 <= max_parallel <= 10000:
            raise ConfigError(f"--max-parallel {max_parallel} must be in [1, 10000]")
        pairs = []
        for item in extra:
            key, sep, value = item.partition("=")
            if not sep or not re.fullmatch(r"[a-z][a-z_]*", key.strip()) or not value.strip():
                raise ConfigError(f"--slurm {show_value(item)} must look like key=value, e.g. account=proj42 or "
                                  "qos=high (submitit's slurm_<key> parameters)")
            _one_line(f"--slurm {key.strip()}", value)
            pairs.append((key.strip(), value.strip()))
        if partition is not None:
            _one_line("--partition", partition)
        return SlurmOptions(time_min=parse_time(time) if time is not None else 60.0, partition=partition,
                            gpus_per_trial=int(gpus), cpus_per_trial=int(cpus), max_parallel=max_parallel,
                            extra=tuple(pairs), backend=backend)

    def parameters(self, sweep_id: str) -> dict[str, Any]:
        """submitit's AutoExecutor parameters (its slurm_ ones are ignored by the local backend)."""
        params: dict[str, Any] = {"name": f"sdlab-{sweep_id}"[:64], "timeout_min": max(1, round(self.time_min)),
                                  "cpus_per_task": self.cpus_per_trial, "gpus_per_node": self.gpus_per_trial,
                                  "tasks_per_node": 1, "nodes": 1}
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.max_parallel is not None:
            params["slurm_array_parallelism"] = self.max_parallel
        for key, value in self.extra:
            params[f"slurm_{key}"] = value
        return params

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "time_min": self.time_min, "partition": self.partition,
                "gpus_per_trial": self.gpus_per_trial, "cpus_per_trial": self.cpus_per_trial,
                "max_parallel": self.max_parallel, "extra": dict(self.extra)}


def _one_line(what: str, value: str) -> None:
    """Values land in the sbatch script, one ``#SBATCH`` line each: a line break or control character there would
    start a line of its own (a shell command in the job), so none is accepted."""
    if re.search(r"[\x00-\x1f\x7f]", value) or len(value) > 1000:
        raise ConfigError(f"{what} {show_value(value)} must be one line of printable text")


# ---------------------------------------------------------------- in the job

class Trial:
    """One trial as a submitit job. ``__call__`` runs in the array task; submitit calls ``checkpoint`` there
    when SLURM signals the time limit or a preemption, and requeues what it returns."""

    def __init__(self, runs_dir: str, sweep_id: str, index: int, threads: int):
        self.runs_dir, self.sweep_id, self.index, self.threads = runs_dir, sweep_id, index, threads
        self._stopping = False

    def __call__(self) -> dict[str, Any]:
        import submitit  # noqa: PLC0415 - the job runs under submitit, which is then installed

        torch.set_num_threads(max(1, self.threads))
        job = submitit.JobEnvironment().job_id
        store = RunStore(self.runs_dir)
        sweep = get_sweep(store, self.sweep_id)
        state = trial_states(store, sweep)[self.index]
        if state.state == "done":  # requeued after it finished, or submitted twice: nothing to redo
            return {"run": state.run_id, "status": "done", "error": ""}
        _record(sweep, self.index, job, "started")
        try:
            if state.run_id:  # continue its own folder; a dead owner on another node is waited out
                run = store.get(state.run_id)
                lock = RunLock(run.path / "lock", wait_s=liveness.STALE_S + 2 * liveness.HEARTBEAT_S)
            else:
                run = prepare(sweep.spec().trial_config(self.index), store,
                              status_fields={"sweep": sweep.id, "trial": self.index, "job": job})
                lock = run.lock()
        except Exception as e:  # e.g. the dataset is missing on this node: no run folder was made
            _record(sweep, self.index, job, "failed", error=failure_message(e))
            return {"run": state.run_id, "status": "failed", "error": failure_message(e)}
        try:
            run.set_status(run.status(), job=job)
            return execute_trial(run)
        except SystemExit:
            if self._stopping:  # submitit requeued this trial and exits: say so rather than "failed: SystemExit"
                run.set_status("interrupted", finished=timestamp(), error=PREEMPTED)
            raise
        finally:
            lock.release()

    def checkpoint(self) -> Any:
        """Called by submitit in the job on SLURM's signal: the run folder is the checkpoint (execute writes one
        every epoch), so the same trial, requeued, continues it."""
        import submitit  # noqa: PLC0415

        self._stopping = True
        return submitit.helpers.DelayedSubmission(Trial(self.runs_dir, self.sweep_id, self.index, self.threads))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stopping": False}


def _record(sweep: Sweep, index: int, job: str, state: str, *, error: str = "", backend: str = "") -> None:
    old = sweep.job_record(index) or {}
    atomic_write_json(sweep.path / "jobs" / f"{index}.json",
                      {"job": job, "state": state, "error": error, "backend": backend or old.get("backend", ""),
                       "host": liveness.this_host(), "at": timestamp()})


# ---------------------------------------------------------------- on the login node

@dataclass
class Submission:
    sweep: Sweep
    jobs: dict[int, str]  # trial -> job id, of the trials submitted now
    states: list[TrialState]


def submit(store: RunStore, sweep: Sweep, options: SlurmOptions,
           say: Callable[[str], None] = lambda s: None) -> Submission:
    """Submit every trial of ``sweep`` that is not done and not already queued or running, as one job array."""
    try:
        import submitit  # noqa: PLC0415 - optional (requirements-sweep.txt)
    except ImportError:
        raise RunError("SLURM sweeps go through submitit, which is not installed: "
                       ".venv/bin/pip install -r requirements-sweep.txt") from None
    try:
        executor = submitit.AutoExecutor(folder=sweep.path / "slurm" / "%j", cluster=options.backend,
                                         slurm_max_num_timeout=MAX_TIME_LIMITS)
    except RuntimeError as e:  # no srun/sbatch on this machine
        raise RunError(f"no SLURM here ({failure_message(e)}): submit from the cluster's login node, or try it on "
                       "this machine with --backend submitit-local") from None
    try:
        executor.update_parameters(**options.parameters(sweep.id))
    except (ValueError, NameError) as e:  # an unknown --slurm key: submitit names it (NameError, oddly)
        raise ConfigError(f"--slurm: {str(e).strip().splitlines()[0]}") from None
    store.recover()
    states = trial_states(store, sweep)
    todo = [s for s in states if s.state in ("pending",) + RESUMABLE
            or (s.state == "queued" and s.job and not _job_alive(sweep, s))]
    say(f"sweep {sweep.id}: {describe(states)}")
    for s in states:
        if s.state in ("queued", "running") and s not in todo:
            say(f"  trial {s.index} ({' '.join(s.overrides)}) is {s.state}"
                + (f" as job {s.job}" if s.job else "") + "; left to it")
    if not todo:
        return Submission(sweep, {}, states)
    trials = [Trial(str(store.root.resolve()), sweep.id, s.index, options.cpus_per_trial) for s in todo]
    try:
        jobs = executor.submit_array(trials)
    except Exception as e:  # noqa: BLE001 - sbatch refused (bad partition, account): its first line
        raise RunError(f"SLURM refused the sweep's jobs: {failure_message(e)}") from None
    ids = {s.index: job.job_id for s, job in zip(todo, jobs)}
    for index, job in ids.items():
        _record(sweep, index, job, "submitted", backend=options.backend)
    _append_submission(sweep, options, ids)
    as_what = _array_id(ids) if options.backend == "slurm" else "local jobs"
    say(f"  submitted {len(ids)} trial(s) as {as_what}, {options.gpus_per_trial} GPU and "
        f"{options.cpus_per_trial} CPU per trial, {options.time_min:g} min each")
    return Submission(sweep, ids, trial_states(store, sweep))


def _array_id(ids: dict[int, str]) -> str:
    """'job array 4242' (tasks 4242_0, 4242_1, ...), or 'job 4242' (submitit submits a single trial as a plain job)."""
    first = next(iter(ids.values()))
    return f"job array {first.split('_')[0]}" if "_" in first else f"job {first}"


def _append_submission(sweep: Sweep, options: SlurmOptions, ids: dict[int, str]) -> None:
    path = sweep.path / "slurm.json"
    try:
        old = files.read_json_object(path)
        history = old["submissions"] if isinstance(old.get("submissions"), list) else []
    except (OSError, ValueError):
        history = []
    atomic_write_json(path, {**options.to_dict(), "submissions": [*history, {
        "at": timestamp(), "host": liveness.this_host(), "jobs": {str(k): v for k, v in ids.items()}}]})


def options_of(sweep: Sweep) -> SlurmOptions | None:
    """The options of the sweep's last submission (a SLURM sweep continues with them); None for a Ray sweep or an
    unreadable record."""
    try:
        d = files.read_json_object(sweep.path / "slurm.json")
        time_min = float(d["time_min"])
        if not 1 <= time_min <= 366 * 1440:
            return None
        # through build's checks: a hand-edited record must not put a line of its own into the job script
        options = SlurmOptions.build(partition=d.get("partition"), gpus_per_trial=d["gpus_per_trial"],
                                     cpus_per_trial=d["cpus_per_trial"], max_parallel=d.get("max_parallel"),
                                     extra=[f"{k}={v}" for k, v in (d.get("extra") or {}).items()],
                                     backend=d.get("backend", "slurm"))
        return dataclasses.replace(options, time_min=time_min)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # ValueError includes build's ConfigError
        return None


def activity(sweep: Sweep, states: list[TrialState]) -> str | None:
    """'on SLURM' / 'as local jobs' while jobs of this sweep are queued or running; None otherwise (a Ray sweep,
    or nothing submitted left)."""
    submitted = options_of(sweep)
    if submitted is None or not any(s.state in ("queued", "running") for s in states):
        return None
    return "on SLURM" if submitted.backend == "slurm" else "as local jobs"


def _job_alive(sweep: Sweep, state: TrialState) -> bool:
    """Might the job of a queued trial (submitted, not started yet) still run it? Asks the scheduler through
    submitit; a local job is its controller process on the host that submitted it."""
    rec = sweep.job_record(state.index)
    if rec is None:
        return False
    if rec.get("backend") == "local":
        if rec.get("host") != liveness.this_host():
            return True  # another machine's process: not ours to judge
        return rec["job"].isdigit() and liveness.process_alive(int(rec["job"]))
    import submitit  # noqa: PLC0415

    folder = sweep.path / "slurm" / "%j"
    return submitit.SlurmJob(folder=folder, job_id=rec["job"]).state.split()[0] in ALIVE


def cancel(store: RunStore, sweep: Sweep) -> list[str]:
    """Stop the sweep's unfinished trials; the job ids asked to stop. A running trial's job gets SIGINT
    (``scancel --signal=INT``): the trial stops between two batches, its run reads "cancelled" at once and keeps its
    last epoch, and the job ends without a requeue. A queued job is cancelled (``scancel``, through submitit). A
    plain ``scancel`` of a running job would not do: submitit ignores its SIGTERM and SLURM then kills the job,
    leaving the run "running" until its heartbeat is stale. A local job's controller gets SIGINT (on this host).
    A resume submits them again."""
    import submitit  # noqa: PLC0415

    done = []
    for s in trial_states(store, sweep):
        rec = sweep.job_record(s.index)
        if rec is None or s.state not in ("queued", "running"):
            continue
        job = rec["job"]
        if rec.get("backend") == "local":
            if rec.get("host") == liveness.this_host() and job.isdigit() and liveness.process_alive(int(job)):
                os.kill(int(job), signal.SIGINT)
                done.append(job)
        elif s.state == "running":
            try:
                subprocess.run(["scancel", "--signal=INT", job], check=True, capture_output=True, text=True,
                               timeout=60, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.SubprocessError) as e:
                lines = (getattr(e, "stderr", "") or str(e) or type(e).__name__).strip().splitlines()
                raise RunError(f"scancel --signal=INT {job} failed: {lines[0] if lines else e}") from None
            done.append(job)
        else:
            submitit.SlurmJob(folder=sweep.path / "slurm" / "%j", job_id=job).cancel(check=False)
            done.append(job)
    return done
