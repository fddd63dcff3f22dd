"""Sweeps on SLURM through submitit: options, the sbatch file submitit writes (a stand-in ``sbatch`` on PATH), and a
real 4-trial sweep on submitit's local executor with one trial preempted (requeued by submitit, continued from its
checkpoint) and one killed outright (then submitted again by ``sweep --resume``), no trial redone."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from sdcore import liveness, slurm
from sdcore import sweep as sw
from sdcore.config import ConfigError, preset
from sdcore.runs import RunError, RunStore
from tests.helpers import in_process

submitit = pytest.importorskip("submitit")

TINY = {"rounds": 1, "data.subset": 300}


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("text, minutes", [("90", 90), ("30:30", 30.5), ("12:00:00", 720), ("1-00", 1440),
                                           ("2-06:30", 2 * 1440 + 6 * 60 + 30), ("1-01:02:30", 1440 + 62.5)])
def test_slurm_time_formats_are_read_as_sbatch_reads_them(text, minutes):
    assert slurm.parse_time(text) == pytest.approx(minutes)


@pytest.mark.parametrize("kwargs, message", [
    ({"time": "soon"}, "--time 'soon' must be minutes"),
    ({"time": "0"}, "at least a minute"),
    ({"gpus_per_trial": 0.5}, "SLURM gives whole GPUs"),
    ({"cpus_per_trial": 0}, "SLURM gives whole CPUs"),
    ({"max_parallel": 0}, "--max-parallel 0"),
    ({"extra": ["account"]}, "must look like key=value"),
    ({"backend": "pbs"}, "unknown submitit backend"),
    ({"extra": ["account=x\nrm -rf ~"]}, "must be one line of printable text"),  # would be a line of the job script
    ({"partition": "gpu\n#SBATCH --nodes=99"}, "must be one line of printable text"),
])
def test_bad_slurm_options_are_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message) as e:
        slurm.SlurmOptions.build(**kwargs)
    assert "\n" not in str(e.value)


def _sweep(store: RunStore, grid: list[str], **changes) -> sw.Sweep:
    spec = sw.SweepSpec.build(preset("demo").replace(**{**TINY, **changes}), grid)
    return sw.open_sweep(store, spec)[0]


def test_the_sbatch_file_is_one_array_with_the_asked_resources(tmp_path, monkeypatch):
    """submitit's real SlurmExecutor, with a stand-in sbatch that keeps the file it is given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path}/sbatch.sh\necho Submitted batch job 4242\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit looks for it to know it is on a cluster
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    store = RunStore(tmp_path / "runs")
    sweep = _sweep(store, ["alpha=0.2,0.5", "seed=0,1"])
    code, out, err = in_process("sweep", "--resume", sweep.id, "--backend", "slurm", "--partition", "gpu",
                                "--time", "12:00:00", "--gpus-per-trial", "1", "--cpus-per-trial", "4",
                                "--max-parallel", "2", "--slurm", "account=proj42", "--runs-dir", str(store.root))
    assert code == 0, err
    sbatch = (tmp_path / "sbatch.sh").read_text()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu", "#SBATCH --time=720",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=4", "#SBATCH --account=proj42",
                 "#SBATCH --signal=USR2@90"):  # the signal submitit turns into checkpoint-and-requeue
        assert line in sbatch.splitlines(), (line, sbatch)
    states = sw.trial_states(store, sweep)
    assert [s.state for s in states] == ["queued"] * 4 and [s.job for s in states] == [f"4242_{i}" for i in range(4)]
    submitted = submitit.helpers.DelayedSubmission.load(sweep.path / "slurm" / "4242_2" / "4242_2_submitted.pkl")
    assert (submitted.function.index, submitted.function.sweep_id) == (2, sweep.id)
    assert submitted._timeout_countdown == slurm.MAX_TIME_LIMITS  # requeued at each time limit, not only 3 times
    assert "queued (job 4242_3)" in out and "job array 4242" in err
    code, doc, _ = in_process("sweeps", sweep.id, "--json", "--runs-dir", str(store.root))
    assert code == 0 and [t["job"] for t in json.loads(doc)["trials"]] == [f"4242_{i}" for i in range(4)]
    record = json.loads((sweep.path / "slurm.json").read_text())
    assert record["partition"] == "gpu" and record["submissions"][0]["jobs"] == {str(i): f"4242_{i}" for i in range(4)}
    code, _, err = in_process("sweep", "--resume", sweep.id, "--backend", "slurm", "--runs-dir", str(store.root))
    assert code == 0 and "left to it" in err  # queued jobs the scheduler may still run are not submitted twice


def test_no_slurm_here_is_one_line(tmp_path):
    store = RunStore(tmp_path / "runs")
    sweep = _sweep(store, ["seed=0,1"])
    code, _, err = in_process("sweep", "--resume", sweep.id, "--backend", "slurm", "--runs-dir", str(store.root))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no SLURM here" in err, err
    assert [s.state for s in sw.trial_states(store, sweep)] == ["pending", "pending"]


def test_without_submitit_a_slurm_sweep_says_what_to_install(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    sweep = _sweep(store, ["seed=0,1"])
    monkeypatch.setattr(slurm, "submitit_available", lambda: False)
    code, _, err = in_process("sweep", "--resume", sweep.id, "--backend", "slurm", "--runs-dir", str(store.root))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "pip install -r requirements-sweep.txt" in err, err


def test_a_hand_edited_submission_record_cannot_add_a_line_to_the_job_script(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    sweep = _sweep(store, ["seed=0,1"])
    slurm._append_submission(sweep, slurm.SlurmOptions.build(partition="gpu", time="90", extra=["qos=high"]), {})
    assert slurm.options_of(sweep) == slurm.SlurmOptions(time_min=90, partition="gpu", extra=(("qos", "high"),))
    record = json.loads((sweep.path / "slurm.json").read_text())
    for key, bad in (("partition", "gpu\nrm -rf ~"), ("extra", {"qos": "x\nrm -rf ~"}), ("time_min", 0),
                     ("gpus_per_trial", 0.5), ("backend", "pbs")):
        (sweep.path / "slurm.json").write_text(json.dumps({**record, key: bad}))
        assert slurm.options_of(sweep) is None, key  # unreadable: a resume takes its settings from the command


def test_an_unknown_slurm_parameter_is_one_line(tmp_path):
    store = RunStore(tmp_path / "runs")
    sweep = _sweep(store, ["seed=0,1"])
    code, _, err = in_process("sweep", "--resume", sweep.id, "--backend", "submitit-local", "--slurm", "colour=blue",
                              "--runs-dir", str(store.root))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "colour" in err, err
    assert not (sweep.path / "jobs").exists()
    code, _, err = in_process("sweep", "--resume", sweep.id, "--partition", "gpu", "--runs-dir", str(store.root))
    assert code == 2 and "--backend slurm" in err


def test_a_queued_trial_whose_job_is_gone_is_submitted_again(tmp_path):
    store = RunStore(tmp_path / "runs")
    sweep = _sweep(store, ["seed=0,1"])
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)  # a pid that no process has now: a local job that ended before its trial began
    slurm._record(sweep, 0, str(gone), "submitted", backend="local")
    slurm._record(sweep, 1, str(os.getpid()), "submitted", backend="local")  # still alive: left to it
    todo = [s.index for s in sw.trial_states(store, sweep)
            if s.state == "pending" or (s.state == "queued" and not slurm._job_alive(sweep, s))]
    assert todo == [0]


def test_a_trial_that_fails_before_its_run_exists_says_why(tmp_path, monkeypatch):
    """In the job (submitit's environment variables as its local executor sets them): the node lacks the data."""
    store = RunStore(tmp_path / "runs")
    spec = sw.SweepSpec.build(preset("demo").replace(**{"data.name": "cifar10", "data.root": str(tmp_path / "none"),
                                                         "model.arch": "resnet8"}), ["seed=0,1"])
    sweep = sw.create_sweep(store, spec)
    for key, value in {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "555", "SUBMITIT_FOLDER": str(tmp_path)
                       }.items():
        monkeypatch.setenv(key, value)
    out = slurm.Trial(str(store.root), sweep.id, 1, threads=1)()  # one thread, as every test runs
    assert out["status"] == "failed" and out["error"].startswith("CIFAR-10 not found")
    states = sw.trial_states(store, sweep)
    assert [s.state for s in states] == ["pending", "failed"] and states[1].job == "555"
    row = sw.trial_rows(states)[1]["status"]
    assert row.startswith("failed: ") and row.endswith("(job 555)") and "\n" not in row
    assert list(store) == []  # nothing half-made


def test_a_stopped_trial_submitted_again_shows_as_queued_until_its_new_job_starts(tmp_path):
    from sdcore.training import prepare

    store = RunStore(tmp_path / "runs")
    sweep = _sweep(store, ["seed=0,1"])
    run = prepare(sweep.spec().trial_config(0), store, status_fields={"sweep": sweep.id, "trial": 0, "job": "70_0"})
    run.lock().release()
    run.set_status("interrupted", error=slurm.PREEMPTED)
    slurm._record(sweep, 0, "70_0", "started", backend="slurm")  # the job that ran it, then stopped
    assert sw.trial_states(store, sweep)[0].state == "interrupted"
    slurm._record(sweep, 0, "71_0", "submitted", backend="slurm")  # `sweep --resume` submitted it again
    state = sw.trial_states(store, sweep)[0]
    assert (state.state, state.job, state.run_id) == ("queued", "71_0", run.id)
    assert sw.trial_rows([state])[0]["status"] == "queued (job 71_0)"


def test_stop_interrupts_a_running_trial_and_cancels_a_queued_one(tmp_path, monkeypatch):
    """A running trial's job gets SIGINT (it records "cancelled" and ends, no requeue); a queued job is scancelled."""
    from sdcore.training import prepare

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scancel").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/scancel.txt\n")
    (bin_dir / "scancel").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    store = RunStore(tmp_path / "runs")
    sweep = _sweep(store, ["seed=0,1,2"])
    run = prepare(sweep.spec().trial_config(0), store, status_fields={"sweep": sweep.id, "trial": 0, "job": "80_0"})
    lock = run.lock()  # trial 0 trains (this process stands in for its job)
    try:
        run.set_status("running")
        slurm._record(sweep, 0, "80_0", "started", backend="slurm")
        slurm._record(sweep, 1, "80_1", "submitted", backend="slurm")
        assert [s.state for s in sw.trial_states(store, sweep)] == ["running", "queued", "pending"]
        assert slurm.cancel(store, sweep) == ["80_0", "80_1"]
    finally:
        lock.release()
    assert (tmp_path / "scancel.txt").read_text().splitlines() == ["--signal=INT 80_0", "80_1"]
    (bin_dir / "scancel").write_text("#!/bin/sh\necho 'scancel: error: Invalid job id specified' >&2\nexit 1\n")
    held = run.lock()  # running again
    try:
        with pytest.raises(RunError, match="scancel --signal=INT 80_0 failed: scancel: error: Invalid job id"):
            slurm.cancel(store, sweep)
    finally:
        held.release()


# ---------------------------------------------------------------- a real sweep on submitit's local executor

def _task_pid(controller: int) -> int | None:
    """The trial's process: the child of submitit's local controller (job id = the controller's pid)."""
    try:
        kids = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


def _wait(condition, what: str, limit: float = 240.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"waited {limit:.0f} s for {what}")


def _epochs(store: RunStore, state: sw.TrialState) -> int:
    return len(store.get(state.run_id).metrics()) if state.run_id else 0


def _freeze(store: RunStore, sweep: sw.Sweep, indices: tuple[int, ...], epochs: int) -> dict[int, tuple[int, list]]:
    """Freeze each trial of ``indices`` (SIGSTOP) as soon as it has logged ``epochs`` epochs, all in one watch so
    none can finish while another is waited for: {trial: (its pid, its metrics lines then)}."""
    frozen: dict[int, tuple[int, list[str]]] = {}

    def all_frozen():
        for s in sw.trial_states(store, sweep):
            pid = _task_pid(int(s.job)) if s.index in indices and s.index not in frozen and s.job else None
            if pid and s.state == "running" and _epochs(store, s) >= epochs:
                os.kill(pid, signal.SIGSTOP)  # frozen: it cannot finish while the test looks
                frozen[s.index] = (pid, (store.get(s.run_id).path / "metrics.jsonl").read_text().splitlines())
        return len(frozen) == len(indices)
    try:
        _wait(all_frozen, f"trials {indices} to log {epochs} epochs")
    except BaseException:
        for pid, _ in frozen.values():
            os.kill(pid, signal.SIGKILL)
        raise
    return frozen


@pytest.mark.slow
def test_a_local_submitit_sweep_requeues_a_preempted_trial_and_resumes_a_killed_one(tmp_path):
    store = RunStore(tmp_path / "runs")
    sweep = _sweep(store, ["seed=0,1", "epochs=2,40"])  # trials 1 and 3 are long enough to be stopped midway
    stopped: list[int] = []
    try:
        code, _, err = in_process("sweep", "--resume", sweep.id, "--backend", "submitit-local", "--time", "30",
                                  "--runs-dir", str(store.root))
        assert code == 0 and "submitted 4 trial(s) as local jobs" in err, err
        jobs = {s.index: s.job for s in sw.trial_states(store, sweep)}
        frozen = _freeze(store, sweep, (1, 3), epochs=3)
        (preempted, before_preempt), (killed, before_kill) = frozen[1], frozen[3]
        stopped += [preempted, killed]
        # trial 1: SLURM's preemption signal (USR2). submitit calls Trial.checkpoint and requeues it; it continues.
        os.kill(preempted, signal.SIGUSR2)
        os.kill(preempted, signal.SIGCONT)
        # trial 3: killed outright (a node failure): nothing requeues it.
        os.kill(killed, signal.SIGKILL)

        def settled():
            states = sw.trial_states(store, sweep)
            return states if [s.state for s in states] == ["done", "done", "done", "interrupted"] else None
        states = _wait(settled, "trials 0-2 done and the killed trial 3 interrupted")
        runs = {s.index: s.run_id for s in states}
        finished = {i: (store.get(runs[i]).path / "status.json").read_text() for i in (0, 1, 2)}
        assert sw.trial_states(store, sweep)[1].job == jobs[1]  # requeued as the same job, by submitit itself

        code, _, err = in_process("sweep", "--resume", sweep.id, "--backend", "submitit-local",
                                  "--runs-dir", str(store.root))
        assert code == 0 and "submitted 1 trial(s)" in err, err
        assert sw.trial_states(store, sweep)[3].state in ("queued", "running")  # no longer shown as interrupted
        states = _wait(lambda: (s := sw.trial_states(store, sweep)) and all(x.state == "done" for x in s) and s,
                       "the resumed trial to finish")
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    assert {s.index: s.run_id for s in states} == runs  # every trial kept its one run folder
    assert len(list(store)) == 4
    for i in (0, 1, 2):  # finished trials untouched by the resume
        assert (store.get(runs[i]).path / "status.json").read_text() == finished[i]
    for i, before in ((1, before_preempt), (3, before_kill)):
        run = store.get(runs[i])
        status = json.loads((run.path / "status.json").read_text())
        lines = (run.path / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert [(r["round"], r["epoch"]) for r in records] == [(k, e) for k in (0, 1) for e in range(1, 41)]
        (resume,) = status["resumes"]  # continued once, from its checkpoint, not from scratch
        # stopped after its 3rd epoch was logged: its checkpoint holds that epoch, or the one before when the signal
        # came between the metrics line and the checkpoint (each written whole, metrics first)
        assert resume["round"] == 0 and 2 <= resume["epoch"] < 40
        kept = resume["epoch"]
        assert lines[:kept] == before[:kept]  # the epochs before the checkpoint were not trained again
        assert status["status"] == "done" and (run.path / "rounds" / "1" / "model.pt").is_file()
    log = (Path(sweep.path) / "slurm" / jobs[1] / f"{jobs[1]}_0_log.err").read_text()
    assert "Caught signal SIGUSR2" in log and "this job is preempted" in log
    preempted = json.loads((store.get(runs[1]).path / "status.json").read_text())
    assert preempted["job"] == jobs[1]  # continued by the same job: submitit requeued it, nobody submitted it again
    record = json.loads((sweep.path / "slurm.json").read_text())
    assert list(record["submissions"][1]["jobs"]) == ["3"]  # the resume submitted the killed trial only
    assert liveness.this_host() in record["submissions"][1]["host"]
