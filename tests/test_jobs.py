"""JobManager faults, each one a test: cancel, resume equality, SIGKILL, divergence, crashes, queueing."""
import dataclasses
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sdcore.config import ConfigError, preset
from sdcore.files import unreadable
from sdcore.jobs import JobManager
from sdcore.methods import kd_rounds
from sdcore.runs import RunError
from sdcore.training import train

ROOT = Path(__file__).resolve().parents[1]
WAIT = 120  # generous upper bound for any single job on a slow CI machine; never slept, only waited on


def tiny(**changes):
    base = {"epochs": 3, "rounds": 2, "data.subset": 300, "model.width": 0.5, "name": "tiny"}
    return preset("demo").replace(**{**base, **changes}).validate()


def comparable(run):
    """Everything a run reports except wall-clock times."""
    metrics = [{k: v for k, v in m.items() if k != "epoch_time"} for m in run.metrics()]
    return metrics, run.summary().rounds


@pytest.fixture
def manager(tmp_path):
    m = JobManager(tmp_path / "runs")
    yield m
    m.shutdown(cancel=True, timeout=WAIT)


def submit_and_cancel_at(manager, cfg, *, round_idx, epoch):
    """Submit; when the job is inside (round, epoch) — `epoch` epochs of that round finished — hold
    the worker in its event callback, cancel from the test thread, release it. Deterministic cut."""
    reached, proceed = threading.Event(), threading.Event()

    def watch(e):
        if e.round == round_idx and e.kind == "step" and e.epoch == epoch and not reached.is_set():
            reached.set()
            proceed.wait(WAIT)
    handle = manager.submit(cfg, on_event=watch)
    assert reached.wait(WAIT)
    t0 = time.perf_counter()
    handle.cancel()
    proceed.set()
    assert handle.wait(WAIT)
    assert handle.progress().status == "cancelled"
    ckpt = handle.run.checkpoint()
    assert (ckpt["round"], ckpt["epoch"]) == (round_idx, epoch)
    return handle, time.perf_counter() - t0


def test_cancel_in_round_2_keeps_rounds_0_and_1(manager):
    handle, stop_s = submit_and_cancel_at(manager, tiny(), round_idx=2, epoch=1)
    assert stop_s < 2.0
    run = handle.run
    assert run.status() == "cancelled"
    assert run.finished_rounds() == [0, 1]
    for r in (0, 1):
        assert set(torch.load(run.model_path(r), weights_only=True)) == set(run.load_state_dict(0))
    assert not run.model_path(2).exists()


@pytest.mark.parametrize("method,cut", [("kd", (1, 2)), ("pskd", (0, 2))])
def test_resume_after_cancel_equals_an_uninterrupted_run(manager, method, cut):
    cfg = tiny(method=method, rounds=2 if method == "kd" else 0)
    whole = manager.submit(cfg)
    assert whole.wait(WAIT) and whole.progress().status == "done"
    cut_handle, _ = submit_and_cancel_at(manager, cfg, round_idx=cut[0], epoch=cut[1])
    resumed = manager.resume(cut_handle.run_id)
    assert resumed.wait(WAIT) and resumed.progress().status == "done"
    assert resumed.run.status() == "done" and resumed.run.checkpoint() is None
    assert comparable(resumed.run) == comparable(whole.run)


# Fields that config.json files written before the term registry (issue 13) do not have.
PRE_TERMS = ("byot_style", "pskd_alpha", "pskd_exits", "dmfl_weight", "dmfl_temperature")


@pytest.mark.parametrize("method", ["byot", "pskd", "kd"])
def test_a_run_folder_from_before_the_terms_resumes_to_the_same_numbers(manager, method):
    """An old method=byot|pskd|kd run, its config.json without the new fields, cancelled mid-run: it
    loads, and resuming it with today's code ends exactly where an uninterrupted run ends."""
    cfg = tiny(method=method, rounds=1 if method == "kd" else 0, alpha=0.7, hint_weight=0.03,
               **{"model.exits": method == "byot"})
    whole = manager.submit(cfg)
    assert whole.wait(WAIT) and whole.progress().status == "done"
    cut, _ = submit_and_cancel_at(manager, cfg, round_idx=0, epoch=2)
    path = cut.run.path / "config.json"
    old = json.loads(path.read_text())
    for key in PRE_TERMS:
        del old[key]
    del old["data"]["normalize"]
    path.write_text(json.dumps(old))
    assert cut.run.config() == cfg  # the defaults are the old behaviour
    resumed = manager.resume(cut.run_id)
    assert resumed.wait(WAIT) and resumed.progress().status == "done"
    assert comparable(resumed.run) == comparable(whole.run)


@pytest.mark.parametrize("method", ["pskd+byot+dmfl", "byot"])
def test_resume_of_a_combination_equals_an_uninterrupted_run(manager, method):
    """PS-KD's memory, the zhang style's hint adapters and DMFL continue from the checkpoint exactly."""
    cfg = tiny(method=method, rounds=0, byot_style="zhang", hint_weight=0.03, alpha=0.7, **{"model.exits": True})
    whole = manager.submit(cfg)
    assert whole.wait(WAIT) and whole.progress().status == "done"
    cut, _ = submit_and_cancel_at(manager, cfg, round_idx=0, epoch=2)
    resumed = manager.resume(cut.run_id)
    assert resumed.wait(WAIT) and resumed.progress().status == "done"
    assert comparable(resumed.run) == comparable(whole.run)
    assert any(k.startswith("hint_adapters.") for k in resumed.run.load_state_dict(0))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_restart_marks_interrupted_and_resume_finishes(tmp_path, held_sdcore):
    runs = tmp_path / "runs"
    cfg = tiny(epochs=6)
    args = [*held_sdcore(9), "train", "--quiet", "--runs-dir", str(runs)]  # round 1's 3rd epoch
    for k, v in (("epochs", 6), ("rounds", 2), ("data.subset", 300), ("model.width", 0.5), ("name", "tiny")):
        args += ["--set", f"{k}={v}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline() == "held\n", "the training subprocess never reached round 1's 3rd epoch"
        (metrics,) = runs.glob("*/metrics.jsonl")
        assert len(metrics.read_text().splitlines()) == 8  # killed mid-epoch, after 8 finished ones
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    manager = JobManager(runs)
    try:
        (run_id,) = manager.recovered
        run = manager.store.get(run_id)
        assert run.status() == "interrupted"
        assert unreadable(run.path) == []
        handle = manager.resume(run_id)
        assert handle.wait(WAIT) and handle.progress().status == "done"
    finally:
        manager.shutdown(timeout=WAIT)
    reference, _ = train(cfg, runs_dir=tmp_path / "reference")
    assert comparable(run) == comparable(reference)
    assert unreadable(run.path) == []


def test_nan_loss_fails_with_where_and_keeps_earlier_rounds(manager, monkeypatch):
    def nan_students(s, teacher):
        def loss(model, x, y, idx):
            z = model(x)
            return F.cross_entropy(z, y) * float("nan"), z
        return loss
    monkeypatch.setattr(kd_rounds, "distill_loss", nan_students)
    handle = manager.submit(tiny())
    assert handle.wait(WAIT)
    p = handle.progress()
    assert p.status == "failed" and p.error.startswith("diverged at round 1 epoch 1")
    run = handle.run
    assert run.status_record()["error"].startswith("diverged at round 1 epoch 1")
    assert run.finished_rounds() == [0]
    run.load_state_dict(0)


def test_a_crash_fails_the_job_and_the_worker_takes_the_next(manager, monkeypatch):
    real = kd_rounds.label_loss
    calls = {"n": 0}

    def flaky(model, x, y, idx):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated out of memory")
        return real(model, x, y, idx)
    monkeypatch.setattr(kd_rounds, "label_loss", flaky)
    first = manager.submit(tiny(rounds=0))
    second = manager.submit(tiny(rounds=0))
    assert first.wait(WAIT) and second.wait(WAIT)
    assert first.progress().status == "failed"
    assert first.progress().error == "RuntimeError: simulated out of memory"
    assert first.run.status_record()["error"] == "RuntimeError: simulated out of memory"
    assert second.progress().status == "done"


def test_two_jobs_on_one_device_run_one_after_the_other(manager):
    log = []
    lock = threading.Lock()

    def recorder(name):
        def on_event(e):
            with lock:
                log.append(name)
        return on_event
    a = manager.submit(tiny(rounds=0), on_event=recorder("a"))
    b = manager.submit(tiny(rounds=0), on_event=recorder("b"))
    assert b.progress().status == "queued"
    assert a.wait(WAIT) and b.wait(WAIT)
    assert a.progress().status == b.progress().status == "done"
    assert log == ["a"] * log.count("a") + ["b"] * log.count("b") and log.count("b") > 0


def test_cancel_a_queued_job_is_immediate(manager):
    a = manager.submit(tiny(rounds=1))
    b = manager.submit(tiny(rounds=0))
    b.cancel()
    assert b.wait(1.0) and b.progress().status == "cancelled"
    assert b.run.status() == "cancelled" and not b.run.is_live()
    assert a.wait(WAIT) and a.progress().status == "done"


def test_bad_config_is_rejected_before_anything_is_queued(manager):
    with pytest.raises(ConfigError, match="alpha must be in"):
        manager.submit(preset("demo").replace(alpha=2.0))
    assert manager.jobs() == []
    assert not manager.store.root.exists() or not any(manager.store.root.iterdir())


def test_resume_refuses_done_and_unknown_runs(manager):
    h = manager.submit(tiny(rounds=0))
    assert h.wait(WAIT)
    with pytest.raises(RunError, match="it is done"):
        manager.resume(h.run_id)
    with pytest.raises(RunError, match="no run"):
        manager.resume("nope")


def test_progress_snapshots_are_immutable_and_move_forward(manager):
    seen = []
    h = manager.submit(tiny(rounds=1), on_event=lambda e: seen.append(h.progress()) if e.kind == "epoch" else None)
    assert h.wait(WAIT)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert all(p.eta_s is not None for p in seen[1:])
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[0].status = "x"
    with pytest.raises(TypeError):
        seen[-1].metrics["test_acc"] = 0
    final = h.progress()
    assert final.status == "done" and final.eta_s == 0.0 and "test_acc" in final.metrics


def test_a_queued_job_shows_the_runs_real_counts_before_its_first_event(manager):
    """The first snapshot already has the config's rounds, epochs and steps per epoch (never "round 0 of 0"),
    the same counts the engine's first event then reports."""
    release = threading.Event()
    blocker = manager.submit(tiny(rounds=0), on_event=lambda e: release.wait(WAIT))
    first = []
    h = manager.submit(tiny(rounds=2, epochs=3), on_event=lambda e: first or (first.append(e), h.cancel()))
    p = h.progress()
    assert p.status == "queued"
    assert (p.round, p.rounds, p.epoch, p.epochs, p.step, p.steps, p.fraction) == (0, 3, 0, 3, 0, 5, 0.0)  # 300 / 64
    release.set()
    assert blocker.wait(WAIT) and h.wait(WAIT) and h.progress().status == "cancelled"
    assert (first[0].rounds, first[0].epochs, first[0].steps) == (p.rounds, p.epochs, p.steps)


def test_a_resumed_job_starts_at_the_round_it_continues(manager):
    cut, _ = submit_and_cancel_at(manager, tiny(), round_idx=1, epoch=1)
    release = threading.Event()
    blocker = manager.submit(tiny(rounds=0), on_event=lambda e: release.wait(WAIT))
    resumed = manager.resume(cut.run_id)
    p = resumed.progress()
    assert (p.status, p.round, p.rounds, p.epochs, p.steps) == ("queued", 1, 3, 3, 5)
    assert p.fraction == pytest.approx(1 / 3)  # the teacher's round is done
    resumed.cancel()
    release.set()
    assert blocker.wait(WAIT)
