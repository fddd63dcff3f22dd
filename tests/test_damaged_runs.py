"""Damaged run folders (tests/faults.py): one bad file never takes down the other runs, the CLI or a page.

For each damage, in a runs folder holding the damaged run and an intact one: `runs` lists both (the
damaged one as `unreadable: <file>: <reason>`, or readable when the damage is harmless); `analyze` and
`resume` refuse it with one `error:` line and exit 2 (or work); never a traceback, a hang on a FIFO,
or a side effect outside the run folder. A few damages also go through `train` beside them and the
Runs, Live and Compare pages. Then the hazards below the folder: recover() racing creations, no
flock, no disk space. benchmarks/fault_injection.py runs every damage on every surface.
"""
import json
import threading
import time

import pytest
import torch

from tests import faults
from tests.faults import DAMAGES, Case, cli

damages = [pytest.param(d, id=d.id, marks=[pytest.mark.slow] if d.slow else []) for d in DAMAGES]


@pytest.fixture(autouse=True)
def hang_report():
    """A test stuck (a FIFO opened somewhere unwatched) prints every thread's stack after 120 s."""
    import faulthandler
    faulthandler.dump_traceback_later(120)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """A finished 2-round kd run (analysis cached) and an interrupted one with checkpoint.pt, trained once."""
    return faults.build_bases(tmp_path_factory.mktemp("bases"))


@pytest.fixture
def case(request, bases, tmp_path) -> Case:
    return faults.stage(bases, request.param, tmp_path)


def clean(problems):
    assert not problems, "; ".join(problems)


@pytest.mark.parametrize("case", damages, indirect=True)
def test_runs_lists_the_damaged_run_beside_the_intact_one(case):
    o = cli(["runs", "--runs-dir", str(case.runs)], watch=case.dir)
    clean(faults.check_listing(case, o))


@pytest.mark.parametrize("case", damages, indirect=True)
def test_analyze_refuses_damage_in_one_line(case):
    o = cli(faults.analyze_argv(case), watch=case.dir)
    clean(faults.check_analyze(case, o))


@pytest.mark.parametrize("case", damages, indirect=True)
def test_resume_refuses_damage_in_one_line_or_resumes(case):
    o = cli(faults.resume_argv(case), watch=case.dir)
    clean(faults.check_resume(case, o))


BESIDE = ["status.json: non-UTF-8 bytes", "status.json: nested 100000 deep", "status.json: a FIFO", "lock: a folder",
          "summary.json: nested 100000 deep", "metrics.jsonl: a line that is a JSON list", "config.json: a FIFO"]


@pytest.mark.parametrize("case", [faults.damage(n) for n in BESIDE], ids=lambda d: d.id, indirect=True)
def test_train_works_beside_a_damaged_run(case):
    o = cli(faults.train_argv(case), watch=case.dir)
    clean(faults.check_train(case, o))


ON_PAGES = ["status.json: non-UTF-8 bytes", "summary.json: nested 100000 deep", "lock: a folder",
            "metrics.jsonl: a line that is a JSON list", "rounds/1/model.pt: another architecture's weights",
            "rounds/1/model.pt: truncated (half)"]


@pytest.mark.parametrize("case", [faults.damage(n) for n in ON_PAGES], ids=lambda d: d.id, indirect=True)
def test_pages_show_the_damaged_run_and_keep_the_intact_one(case):
    found = faults.check_pages(case)
    clean([f"{page}: {p}" for page, problems in found.items() for p in problems])


@pytest.mark.parametrize("case", [faults.damage("checkpoint.pt: truncated (half)")], ids=["truncated"], indirect=True)
def test_a_damaged_checkpoint_says_so_and_restart_round_finishes_the_run(case):
    o = cli(faults.resume_argv(case), watch=case.dir)
    clean(faults.check_resume(case, o))
    assert "--restart-round" in o.err, o.err  # the way out is named
    assert faults._status(case.damaged) == "interrupted"  # not marked failed: nothing was tried
    o = cli([*faults.resume_argv(case), "--restart-round"], watch=case.dir)
    assert o.code == 0, o.err
    summary = json.loads((case.damaged / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1] and faults._status(case.damaged) == "done"
    assert not (case.damaged / "checkpoint.pt").exists()
    assert torch.load(case.damaged / "rounds" / "1" / "model.pt", weights_only=True)  # the round was trained again
    again = cli(["runs", "--runs-dir", str(case.runs)], watch=case.dir)
    assert again.code == 0 and "unreadable" not in again.out, again.out


# ---------------------------------------------------------------- below the run folder

def _finished_looking(run, r=0):
    run.append_metrics({"round": r, "epoch": 1, "test_acc": 50.0})
    run.save_model(r, {"w": torch.ones(3)})
    run.write_summary({"method": "kd", "complete": True, "rounds": [{"round": r, "test_acc": 50.0, "best_epoch": 1}]})
    run.set_status("done")


def test_recover_in_a_loop_never_breaks_a_run_being_written(tmp_path):
    """recover() used to delete the temp file of any atomic write in a run whose lock was free: a run being
    created (or an analysis being cached) lost its file mid-write (20 of 1182 creations crashed)."""
    from sdcore.config import preset
    from sdcore.runs import RunStore, atomic_write_json
    from sdcore.training import prepare

    store = RunStore(tmp_path)
    cfg = preset("demo").replace(name="race", device="cpu")
    analysed = store.create(cfg)
    _finished_looking(analysed)
    stop, errors, created = threading.Event(), [], []

    def recoverer():
        while not stop.is_set():
            try:
                store.recover()
            except Exception as e:  # noqa: BLE001
                errors.append(f"recover: {type(e).__name__}: {e}")

    def creator():  # as a job does: prepare (RunStore.create) then the lock, the files, done, release
        for _ in range(300):
            try:
                run = prepare(cfg, store)
                created.append(run)
                lock = run.lock()
                try:
                    _finished_looking(run)
                finally:
                    lock.release()
            except Exception as e:  # noqa: BLE001
                errors.append(f"create: {type(e).__name__}: {e}")

    def analyst():
        i = 0
        while not stop.is_set():
            try:
                atomic_write_json(analysed.path / "analysis" / f"eigen-0-{i % 7}.json", {"result": {"values": [i]}})
            except Exception as e:  # noqa: BLE001
                errors.append(f"analysis: {type(e).__name__}: {e}")
            i += 1

    threads = [threading.Thread(target=f) for f in (recoverer, analyst)]
    for t in threads:
        t.start()
    try:
        creator()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, f"{len(errors)} failures, e.g. {errors[:3]}"
    flipped = {r.id: r.status() for r in created if r.status() != "done"}
    assert not flipped, (f"{len(flipped)} runs owned by a live job were marked {sorted(set(flipped.values()))} "
                         "by recover() between RunStore.create and their lock (they ended so, not done)")


def test_a_filesystem_without_flock_gives_a_clear_error_or_a_fallback(tmp_path, monkeypatch):
    import fcntl

    from sdcore.config import preset
    from sdcore.runs import RunError, RunLock, RunStore

    store = RunStore(tmp_path / "runs")
    run = store.create(preset("demo").replace(name="noflock"))
    _finished_looking(run)
    monkeypatch.setattr(fcntl, "flock", faults.no_flock)
    path = run.path / "lock"
    try:
        lock = RunLock(path)
    except RunError as e:
        assert "lock" in str(e) and "\n" not in str(e), str(e)
    else:  # a fallback (the pid in the file): it must still tell held from free
        assert RunLock.held(path) is True
        lock.release()
        assert RunLock.held(path) is False
    try:
        assert RunLock.held(path) in (True, False)
    except RunError as e:
        assert "lock" in str(e), str(e)
    o = cli(["runs", "--runs-dir", str(store.root)], watch=tmp_path)
    assert o.code == 0 and run.id in o.out and "Traceback" not in o.err, o.err
    o = cli([*faults.TRAIN, "--runs-dir", str(store.root)], watch=tmp_path)
    assert "Traceback" not in o.err and not o.crash, o.err
    assert o.code == 0 or (o.code == 2 and len(o.err.strip().splitlines()) == 1), (o.code, o.err)


@pytest.mark.parametrize("writes_before", [0, 1, 2])
def test_no_space_left_is_one_line_and_leaves_no_half_made_folder(tmp_path, monkeypatch, writes_before):
    runs = tmp_path / "runs"
    monkeypatch.setattr("os.fsync", faults.enospc_after(writes_before))
    o = cli([*faults.TRAIN, "--runs-dir", str(runs)], watch=tmp_path)
    monkeypatch.undo()
    assert not o.crash and "Traceback" not in o.err, o.err
    lines = o.err.strip().splitlines()
    assert o.code in (1, 2) and len(lines) == 1 and lines[0].startswith("error:"), (o.code, o.err)
    assert "space" in lines[0].lower(), lines[0]
    half_made = [p.name for p in runs.iterdir() if p.is_dir() and not (p / "config.json").is_file()] \
        if runs.exists() else []
    assert not half_made, half_made
    listing = cli(["runs", "--runs-dir", str(runs)], watch=tmp_path)
    assert listing.code == 0 and "Traceback" not in listing.err, listing.err


@pytest.mark.parametrize("case", [faults.damage("checkpoint.pt: truncated (half)")], ids=["truncated"], indirect=True)
def test_live_offers_restart_round_when_the_checkpoint_is_damaged(case, monkeypatch):
    """On the dashboard, Resume of a run whose checkpoint.pt is damaged names the file and offers Restart round,
    which trains the unfinished round again and opens Live on it; the run is never marked failed."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SDLAB_RUNS_DIR", str(case.runs))
    at = AppTest.from_file(str(faults.APP), default_timeout=60)
    at.session_state["live_run"] = faults.DAMAGED_ID
    at.switch_page("../pages/live.py").run()
    next(b for b in at.button if b.label == "Resume").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("checkpoint.pt" in e.value for e in at.error), [e.value for e in at.error]
    assert faults._status(case.damaged) == "interrupted"
    next(b for b in at.button if b.label.startswith("Restart round")).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Live training" and at.session_state["live_run"] == faults.DAMAGED_ID
    deadline = time.monotonic() + 120
    while faults._status(case.damaged) not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert faults._status(case.damaged) == "done"
    summary = json.loads((case.damaged / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
