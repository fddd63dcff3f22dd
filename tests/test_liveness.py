"""Run liveness on shared filesystems, by simulation: a lock file written by "another host" (its record, as a node of
a cluster writes it), a filesystem whose flock is per node (Lustre ``localflock``: every flock succeeds) or absent
(``noflock``: flock fails with ENOLCK). A run another host trains is never taken, recovered or resumed here; once
that host's heartbeat is older than STALE_S its run is interrupted and resumes normally."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import threading

import pytest

from sdcore import liveness
from sdcore.config import preset
from sdcore.jobs import JobManager
from sdcore.liveness import STALE_S, Owner
from sdcore.runs import RunError, RunLock, RunStore
from tests.helpers import in_process

NOW = 1_800_000_000.0  # the simulated wall clock (monkeypatched; no test reads the real one)
HERE = liveness.this_host()


@pytest.fixture
def clock(monkeypatch):
    """A settable wall clock for sdcore.liveness: clock.now = ..."""
    class Clock:
        now = NOW

        def __call__(self) -> float:
            return self.now
    c = Clock()
    monkeypatch.setattr(liveness, "clock", c)
    return c


def alive(pid: int) -> bool:
    return pid == 4242


# ---------------------------------------------------------------- the rule, as a table

@pytest.mark.parametrize("owner, flock, expected", [
    (None, True, False),  # empty record, flock free: released
    (None, False, True),  # someone holds the flock: held, whatever the record says
    (Owner(HERE, 4242, NOW), True, False),  # this host, flock free: its writer is gone (pid reuse irrelevant)
    (Owner(HERE, 4242, NOW), None, True),  # this host, no flock: its pid lives
    (Owner(HERE, 999, NOW), None, False),  # this host, no flock: its pid is dead
    (Owner("node-b", 1, NOW - 10), True, True),  # another host, fresh beat: held though flock was free (localflock)
    (Owner("node-b", 1, NOW - 10), None, True),  # ... and on a noflock mount
    (Owner("node-b", 1, NOW - STALE_S - 1), True, False),  # another host, stale beat: its owner died
    (Owner("node-b", 1, NOW + STALE_S + 1), True, False),  # a beat far in the future is no evidence of life
])
def test_the_liveness_rule(owner, flock, expected):
    assert liveness.held(owner, flock, now=NOW, host=HERE, alive=alive) is expected


def test_the_longest_host_name_in_the_widest_characters_fits_the_record():
    host = "\U0001F600" * 64  # 64 characters, each escaped by JSON as a 12-byte surrogate pair
    o = Owner(host, 2**22, NOW, since="2026-12-08T00:00:00+0000", nonce="f" * 16)
    assert len(o.record()) == liveness.RECORD_BYTES
    assert Owner.parse(o.record(), mtime=0) == Owner(host, 2**22, NOW, o.since, o.nonce)


def test_a_record_reads_back_and_damage_reads_as_no_owner():
    o = Owner("node-b", 17, NOW, since="2026-12-08T00:00:00+0000", nonce="ab12")
    data = o.record()
    assert len(data) == liveness.RECORD_BYTES
    assert Owner.parse(data, mtime=0.0) == Owner("node-b", 17, round(NOW, 3), o.since, "ab12")
    legacy = json.dumps({"pid": 17, "host": "node-b", "since": "x"}).encode()  # sdlab before heartbeats
    assert Owner.parse(legacy, mtime=NOW - 5).beat == NOW - 5
    for bad in (b"", b"   ", b"\xff\xfe", b"[1, 2]", b'{"host": 3, "pid": 1}', b'{"host": "a", "pid": "x"}',
                b'{"host": "a", "pid": 1, "beat": "soon"}', b'{"host": "a", "pid": 1, "beat": true}', b"{" * 5000):
        assert Owner.parse(bad, mtime=NOW) is None, bad


# ---------------------------------------------------------------- run folders, another host simulated

def _running_on(run, host: str, beat: float) -> None:
    """``run`` as a node ``host`` training it leaves it: status running, its lock record there (no flock here)."""
    run.set_status("running", started="2026-12-08T00:00:00+0000", host=host)
    (run.path / "lock").write_bytes(Owner(host, 31337, beat, nonce="n0de").record())


@pytest.fixture
def foreign_run(tmp_path, clock):
    store = RunStore(tmp_path / "runs")
    run = store.create(preset("demo").replace(**{"epochs": 2, "rounds": 0, "data.subset": 200, "name": "shared"}))
    _running_on(run, "node-b", beat=NOW - 30)
    return store, run


def test_a_run_another_host_trains_is_never_taken_recovered_or_resumed_here(foreign_run, clock):
    store, run = foreign_run
    assert run.is_live()
    with pytest.raises(RunError, match=r"in use on host node-b \(pid 31337, heartbeat 30 s ago\)") as e:
        RunLock(run.path / "lock")
    assert "\n" not in str(e.value)
    assert store.recover() == [] and run.status() == "running"
    code, _, err = in_process("resume", run.id, "--runs-dir", str(store.root))
    assert code == 2 and "node-b" in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(RunError, match="node-b"):
        JobManager(store.root).resume(run.id)
    assert json.loads((run.path / "status.json").read_text())["status"] == "running"
    assert Owner.parse((run.path / "lock").read_bytes(), mtime=0).host == "node-b"  # its record untouched


def test_once_the_other_hosts_heartbeat_is_stale_the_run_is_interrupted_and_resumes(foreign_run, clock):
    store, run = foreign_run
    clock.now = NOW - 30 + STALE_S + 1  # node-b went silent: its last beat is now older than STALE_S
    assert not run.is_live()
    assert store.recover() == [run.id] and run.status() == "interrupted"
    code, _, err = in_process("resume", run.id, "--runs-dir", str(store.root))
    assert code == 0, err
    assert run.status() == "done" and not run.is_live()
    assert (run.path / "lock").read_bytes() == b""  # released: an empty record reads as free on every host


def test_localflock_a_lock_held_on_another_node_is_seen_through_its_record(tmp_path, clock, monkeypatch):
    """Lustre ``localflock``: node B's flock always succeeds, whatever node A holds. The record still tells."""
    store = RunStore(tmp_path / "runs")
    run = store.create(preset("demo").replace(name="lustre"))
    lock = RunLock(run.path / "lock")  # held by this process, "node A"
    try:
        monkeypatch.setattr(liveness, "this_host", lambda: "node-b")  # look at it from node B
        monkeypatch.setattr(liveness, "try_flock", lambda fd: True)  # whose flock sees nothing
        assert run.is_live()
        with pytest.raises(RunError, match=f"in use on host {HERE}"):
            RunLock(run.path / "lock")
    finally:
        monkeypatch.undo()
        lock.release()
    assert not run.is_live()


def test_noflock_this_hosts_pid_decides(tmp_path, clock, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    store = RunStore(tmp_path / "runs")
    run = store.create(preset("demo").replace(name="noflock"))
    monkeypatch.setattr(fcntl, "flock", no_flock)
    lock = RunLock(run.path / "lock")
    assert run.is_live()
    with pytest.raises(RunError, match="in use by another job or process"):
        RunLock(run.path / "lock")  # this process again, through another lock: its pid is alive
    lock.release()
    assert not run.is_live()
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    (run.path / "lock").write_bytes(Owner(HERE, gone, NOW).record())  # a process of this host that died
    assert not run.is_live()
    RunLock(run.path / "lock").release()


def test_a_requeued_job_waits_out_a_dead_nodes_heartbeat(foreign_run, clock, monkeypatch):
    store, run = foreign_run
    waited: list[float] = []

    def sleep(s: float) -> None:  # each wait lets the simulated clock run on
        waited.append(s)
        clock.now += s * 20
    monkeypatch.setattr("sdcore.runs.time.sleep", sleep)
    monkeypatch.setattr("sdcore.runs.time.monotonic", lambda: clock.now / 20)
    lock = RunLock(run.path / "lock", wait_s=STALE_S)
    try:
        assert waited and Owner.parse((run.path / "lock").read_bytes(), mtime=0).host == HERE
    finally:
        lock.release()
    with pytest.raises(RunError, match="in use by another job"):  # a lock of this host is never waited for
        held = RunLock(run.path / "lock")
        try:
            RunLock(run.path / "lock", wait_s=STALE_S)
        finally:
            held.release()


# ---------------------------------------------------------------- the heartbeat

def test_a_heartbeat_moves_the_beat_and_never_overwrites_a_new_owner(tmp_path, clock):
    path = tmp_path / "lock"
    lock = RunLock(path)
    try:
        assert Owner.parse(path.read_bytes(), mtime=0).beat == pytest.approx(NOW)
        clock.now = NOW + 60
        lock.beat()
        assert Owner.parse(path.read_bytes(), mtime=0).beat == pytest.approx(NOW + 60)
        other = Owner("node-b", 7, NOW + 61, nonce="other").record()
        os.pwrite(os.open(path, os.O_WRONLY), other, 0)  # node-b took it over while this process looked dead
        lock.beat()
        assert lock.lost and path.read_bytes() == other
    finally:
        lock.release()
    assert path.read_bytes() == other  # release leaves the new owner's record too


def test_the_heartbeat_thread_beats_every_held_lock(monkeypatch):
    monkeypatch.setattr(liveness, "HEARTBEAT_S", 0.01)
    beats = threading.Event()

    class Probe:
        def beat(self):
            beats.set()
    probe = Probe()
    heart = liveness.Heartbeat()
    heart.add(probe)
    assert beats.wait(30), "no beat"
    heart.discard(probe)


def test_a_sweep_trial_another_host_trains_is_not_submitted_again(tmp_path, clock, monkeypatch):
    """``sweep --resume --backend slurm`` on the login node while node-b trains trial 0: trial 0 is left to it."""
    pytest.importorskip("submitit")
    from sdcore import sweep as sw
    from sdcore.training import prepare

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho Submitted batch job 9\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    store = RunStore(tmp_path / "runs")
    spec = sw.SweepSpec.build(preset("demo").replace(**{"rounds": 0, "data.subset": 200}), ["seed=0,1"])
    sweep = sw.create_sweep(store, spec)
    run = prepare(spec.trial_config(0), store, status_fields={"sweep": sweep.id, "trial": 0})
    run.lock().release()
    _running_on(run, "node-b", beat=NOW - 5)
    code, _, err = in_process("sweep", "--resume", sweep.id, "--backend", "slurm", "--runs-dir", str(store.root))
    assert code == 0, err
    assert "trial 0 (seed=0) is running; left to it" in err and "submitted 1 trial(s)" in err, err
    states = sw.trial_states(store, sweep)
    assert [s.state for s in states] == ["running", "queued"] and states[1].job == "9"  # one trial: a plain job
    assert run.status() == "running" and Owner.parse((run.path / "lock").read_bytes(), mtime=0).host == "node-b"
