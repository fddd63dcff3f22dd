"""RunStore: atomic files, tolerant listing, safe names, rename/delete, liveness by lock."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sdcore import runs as runs_module
from sdcore.config import preset
from sdcore.runs import Run, RunError, RunStore, atomic_write_bytes, slug

ROOT = Path(__file__).resolve().parents[1]


def make_run(store: RunStore, name="demo", rounds=2) -> Run:
    """A finished-looking run folder with real files, written the way the engine writes them."""
    run = store.create(preset("demo").replace(name=name))
    for r in range(rounds):
        run.append_metrics({"round": r, "epoch": 1, "test_acc": 50.0 + r})
        run.save_model(r, {"w": torch.ones(3) * r})
    run.write_summary({"method": "kd", "complete": True,
                       "rounds": [{"round": r, "test_acc": 50.0 + r, "best_epoch": 1} for r in range(rounds)]})
    run.set_status("done")
    return run


def test_atomic_write_never_leaves_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    atomic_write_bytes(target, b"old")

    def boom(fd):
        raise OSError("disk full")
    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(RunError, match="cannot write .*x.json: disk full"):
        atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # the temp file is cleaned up


def test_listing_survives_each_kind_of_damage(tmp_path):
    store = RunStore(tmp_path)
    good = make_run(store, "good")
    torn = make_run(store, "torn")
    text = (torn.path / "metrics.jsonl").read_text()
    (torn.path / "metrics.jsonl").write_text(text[:-7])  # a truncated last line
    noconf = make_run(store, "noconf")
    (noconf.path / "config.json").unlink()
    garbage = make_run(store, "garbage")
    garbage.model_path(1).write_bytes(b"\x00not a checkpoint")
    badstatus = make_run(store, "badstatus")
    (badstatus.path / "status.json").write_text("{")

    infos = {i.id: i for i in store.list()}
    assert len(infos) == 5
    assert infos[good.id].status == "done" and infos[good.id].test_acc == (50.0, 51.0)
    assert infos[torn.id].status == "unreadable" and "metrics.jsonl: line 2 is truncated" in infos[torn.id].problem
    assert infos[noconf.id].problem == "config.json: is missing"
    assert "rounds/1/model.pt: is not a PyTorch file" in infos[garbage.id].problem
    assert "status.json: is not valid JSON" in infos[badstatus.id].problem


@pytest.mark.parametrize("name,expected", [
    ("../../etc/x", "etc-x"), ("a/b\\c", "a-b-c"), ("..", "run"), ("", "run"), (".hidden", "hidden"),
    ("ok-name_1.2", "ok-name_1.2"), ("x" * 300, "x" * 40), ("a..b", "a.b"),
])
def test_names_are_sanitized(name, expected):
    assert slug(name) == expected


def test_a_hostile_name_stays_inside_the_runs_dir(tmp_path):
    store = RunStore(tmp_path / "runs")
    run = store.create(preset("demo").replace(name="../../etc/x"))
    assert run.path.parent == store.root and run.id.endswith("-etc-x")
    with pytest.raises(RunError, match="no run"):
        store.get("../runs")


def test_rename_and_delete(tmp_path, monkeypatch):
    real = time.strftime
    stopped = time.localtime(1_700_000_000)  # ids carry the second they were made: make every run in the same one
    monkeypatch.setattr(time, "strftime", lambda fmt, t=None: real(fmt, stopped if t is None else t))
    store = RunStore(tmp_path)
    run = make_run(store, "first")
    moved = store.rename(run.id, "second try")
    assert moved.id == run.id.replace("first", "second-try") and not run.path.exists()
    assert moved.config().name == "second try" and moved.info().test_acc == (50.0, 51.0)
    with pytest.raises(RunError, match="already exists"):
        store.rename(make_run(store, "other").id, "second try")
    store.delete(moved.id)
    assert not moved.path.exists()
    with pytest.raises(RunError, match="no run"):
        store.delete(moved.id)


def test_a_run_locked_by_a_live_process_is_left_alone_and_a_dead_ones_is_interrupted(tmp_path):
    store = RunStore(tmp_path)
    run = make_run(store, "live")
    run.set_status("running")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from sdcore.runs import Run
        lock = Run(Path({str(run.path)!r})).lock()
        print("locked", flush=True)
        sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run.is_live()
        with pytest.raises(RunError, match="in use"):
            run.lock()
        with pytest.raises(RunError, match="queued or running"):
            store.delete(run.id)
        assert store.recover() == [] and run.status() == "running"
    finally:
        holder.kill()
        holder.wait()
    assert not run.is_live()  # the OS dropped the lock with the process
    assert store.recover() == [run.id]
    rec = run.status_record()
    assert rec["status"] == "interrupted" and "stopped" in rec["error"]


def test_recover_removes_only_temp_files_whose_writer_is_dead(tmp_path):
    """A temp file names its writer (host, pid): recover() removes it only when that process is gone, never
    one a live writer (a run being created or analysed) is filling, nor one of another host."""
    store = RunStore(tmp_path)
    run = make_run(store)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = runs_module._host()
    orphan = run.path / f".summary.json~{host}~{int(dead.stdout)}~abc.tmp"
    writing = run.path / f".config.json~{host}~{os.getpid()}~abc.tmp"  # this process: alive
    elsewhere = run.path / f".status.json~other-host~{int(dead.stdout)}~abc.tmp"
    unknown = run.path / ".metrics.jsonl.abc.tmp"  # not a name sdlab writes: left alone
    for p in (orphan, writing, elsewhere, unknown):
        p.write_text("half")
    store.recover()
    assert not orphan.exists() and writing.exists() and elsewhere.exists() and unknown.exists()
    assert json.loads((run.path / "summary.json").read_text())["complete"]


def test_summary_is_typed_and_writes_back_the_same_file(tmp_path):
    """summary.json read as RunSummary (accuracies, kept epochs, exits, peers by name), written back unchanged."""
    raw = {"method": "byot", "complete": False, "noisy_train_labels": 7,
           "rounds": [{"round": 0, "best_epoch": 4, "test_acc": 76.0, "test_loss": 0.9, "val_acc": 75.0,
                       "test_acc_exits": [60.0, 70.0, 76.0], "test_acc_ensemble": 77.0}]}
    run = RunStore(tmp_path).create(preset("demo"))
    run.write_summary(raw)
    s = run.summary()
    assert (s.method, s.complete, s.noisy_train_labels, s.finished_rounds()) == ("byot", False, 7, [0])
    r = s.rounds[0]
    assert (r.test_acc, r.best_epoch, r.exit_accs, r.ensemble_acc, r.peer_accs) == (76.0, 4, (60.0, 70.0, 76.0),
                                                                                    77.0, ())
    assert (r.test["loss"], r.val) == (0.9, {"acc": 75.0})
    assert s.to_dict() == raw and run.finished_rounds() == [0]
    run.write_summary(s)
    assert json.loads((run.path / "summary.json").read_text()) == raw
    (run.path / "summary.json").unlink()
    assert run.summary() is None and run.finished_rounds() == []


def test_unreadable_names_each_file_that_does_not_read_back_whole(tmp_path):
    from sdcore.files import unreadable

    run = make_run(RunStore(tmp_path))
    assert unreadable(run.path) == []
    (run.path / "metrics.jsonl").write_text('{"round": 0}\n{"round": ')
    pt = run.model_path(1)
    pt.write_bytes(pt.read_bytes()[:20])
    (run.path / ".status.json.host.1.tmp").write_text("{}")
    found = unreadable(run.path)
    assert [f.split(":")[0] for f in found] == [".status.json.host.1.tmp", "metrics.jsonl", "rounds/1/model.pt"]
    assert "temp file" in found[0] and all(len(f.split(": ", 1)[1]) > 0 for f in found)
