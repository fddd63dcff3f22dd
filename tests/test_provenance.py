"""Reproducibility and provenance (sdcore.provenance): the deterministic switch sets and restores torch's process-wide
state, counted across overlapping runs; every run records what trained it (status.json's provenance, packages.txt);
two deterministic runs with one seed give the same weights; the Train and Runs pages show it."""
import html
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from sdcore import files, provenance
from sdcore.config import ConfigError, preset
from sdcore.provenance import CUBLAS_DETERMINISTIC, CUBLAS_ENV, deterministic, git_commit
from sdcore.report import run_report
from sdcore.runs import RunStore
from sdcore.training import execute, train
from tests.helpers import in_process

ROOT = Path(__file__).resolve().parents[1]
TINY = {"rounds": 0, "epochs": 1, "data.subset": 200, "model.width": 0.5}


def state() -> dict:
    """Everything ``deterministic`` touches, as it is now."""
    return {"algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "benchmark": torch.backends.cudnn.benchmark, "cudnn": torch.backends.cudnn.deterministic,
            "env": os.environ.get(CUBLAS_ENV)}


ON = {"algorithms": True, "warn_only": False, "benchmark": False, "cudnn": True}


@pytest.fixture
def clean_state():
    """The state before the test, put back after it whatever happened (the env var included)."""
    before = state()
    yield before
    torch.use_deterministic_algorithms(before["algorithms"], warn_only=before["warn_only"])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before["benchmark"], before["cudnn"]
    if before["env"] is None:
        os.environ.pop(CUBLAS_ENV, None)
    else:
        os.environ[CUBLAS_ENV] = before["env"]
    provenance._users = 0
    provenance._saved.clear()


def test_deterministic_sets_the_four_things_and_restores_them_exactly(clean_state, monkeypatch):
    monkeypatch.delenv(CUBLAS_ENV, raising=False)
    torch.backends.cudnn.benchmark = True  # a state different from every value the block sets
    before = state()
    with deterministic(True):
        assert state() == {**ON, "env": CUBLAS_DETERMINISTIC}
    assert state() == before and CUBLAS_ENV not in os.environ  # unset before: removed again


def test_deterministic_keeps_a_cublas_setting_and_a_warn_only_mode_it_found(clean_state, monkeypatch):
    monkeypatch.setenv(CUBLAS_ENV, ":16:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    before = state()
    with deterministic(True):
        assert state() == {**ON, "env": ":16:8"}
    assert state() == before


def test_deterministic_off_changes_nothing(clean_state, monkeypatch):
    monkeypatch.delenv(CUBLAS_ENV, raising=False)
    before = state()
    with deterministic(False):
        assert state() == before


def test_an_exception_inside_restores_the_state(clean_state, monkeypatch):
    monkeypatch.delenv(CUBLAS_ENV, raising=False)
    before = state()
    with pytest.raises(ValueError, match="inside"), deterministic(True):
        raise ValueError("inside")
    assert state() == before and provenance._users == 0


def test_overlapping_runs_keep_it_on_until_the_last_one_ends(clean_state, monkeypatch):
    """Two runs in two threads: A starts, B starts, A ends (B still trains deterministically), B ends (restored)."""
    monkeypatch.delenv(CUBLAS_ENV, raising=False)
    before = state()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def run_a():
        with deterministic(True):
            a_in.set()
            b_in.wait(10)
        seen["after A"] = state()
        a_out.set()

    thread = threading.Thread(target=run_a)
    thread.start()
    try:
        assert a_in.wait(10)
        with deterministic(True):
            b_in.set()
            assert a_out.wait(10)
            seen["B alone"] = state()
        thread.join(10)
    finally:
        b_in.set()
        thread.join(10)
    assert seen["after A"] == seen["B alone"] == {**ON, "env": CUBLAS_DETERMINISTIC}
    assert state() == before and provenance._users == 0


def test_nested_blocks_in_one_thread_restore_only_at_the_outermost(clean_state, monkeypatch):
    monkeypatch.delenv(CUBLAS_ENV, raising=False)
    before = state()
    outer, inner = deterministic(True), deterministic(True)
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # the first to start ends first, as two overlapping runs may
    assert state() == {**ON, "env": CUBLAS_DETERMINISTIC}
    inner.__exit__(None, None, None)
    assert state() == before


# ---------------------------------------------------------------- git

def git(folder, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args],
                          cwd=folder, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_of_a_checkout_and_its_dirty_mark(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-q", "-m", "one")
    head = git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "untracked.txt").write_text("not ours\n")  # untracked files do not make it dirty
    assert git_commit(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == head + "-dirty"
    (tmp_path / "sub").mkdir()
    assert git_commit(tmp_path / "sub") is None  # inside a checkout, but not its root: not that checkout's code


def test_git_commit_is_none_outside_a_checkout_and_when_git_is_missing(tmp_path, monkeypatch):
    assert git_commit(tmp_path) is None
    assert git_commit(tmp_path / "gone") is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on the path
    assert git_commit(ROOT) is None

    def hangs(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], provenance.GIT_TIMEOUT_S)
    monkeypatch.setattr(subprocess, "run", hangs)
    assert git_commit(ROOT) is None


def test_packages_pins_every_distribution_once_sorted_without_case():
    lines = provenance.packages().splitlines()
    names = [line.split("==")[0] for line in lines]
    assert all(line.count("==") == 1 for line in lines)
    assert names == sorted(names, key=str.lower) and len({n.lower() for n in names}) == len(names)
    assert f"torch=={importlib.metadata.version('torch')}" in lines


# ---------------------------------------------------------------- runs

@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory):
    """Two deterministic runs with one seed; whether training ran with deterministic algorithms on, per event."""
    root = tmp_path_factory.mktemp("runs")
    on = []
    cfg = preset("demo").replace(**TINY, deterministic=True)
    runs = [train(cfg, runs_dir=root, on_event=lambda e: on.append(torch.are_deterministic_algorithms_enabled()))[0]
            for _ in range(2)]
    return runs, on


def test_a_deterministic_run_records_what_trained_it(twin_runs):
    import torchvision

    (run, _), on = twin_runs
    assert on and all(on)  # training ran deterministically; the fixture's end left it off (conftest checks)
    p = run.status_record()["provenance"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    if head.returncode:  # the source is not a git checkout (an unpacked archive)
        assert p["commit"] is None
    else:
        assert p["commit"] == head.stdout.strip() + "-dirty" * bool(dirty)
    assert p["torch"] == torch.__version__ == run.status_record()["torch"]
    # torchvision's installed version (importing it to ask would cost seconds): the module's, less its local tag
    assert p["torchvision"] == importlib.metadata.version("torchvision")
    assert torchvision.__version__.split("+")[0] == p["torchvision"].split("+")[0]
    assert p["python"] == ".".join(map(str, sys.version_info[:3]))
    assert p["cuda"] == torch.version.cuda and p["cudnn"] == torch.backends.cudnn.version()
    assert p["gpu"] is None  # trained on the CPU
    assert run.config().deterministic is True and json.loads((run.path / "config.json").read_text())["deterministic"]
    packages = (run.path / "packages.txt").read_text().splitlines()
    assert f"torch=={importlib.metadata.version('torch')}" in packages  # pip's pin (no +cu tag where pip has none)
    assert files.unreadable(run.path) == [] and run.info().status == "done"
    line = provenance.describe(run.status_record(), deterministic=True)
    assert html.escape(line) in run_report(run) and "· deterministic" in line  # the report's header says it too


def test_two_deterministic_runs_with_one_seed_have_identical_weights(twin_runs):
    (a, b), _ = twin_runs
    wa, wb = (torch.load(r.model_path(0), weights_only=True) for r in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_restart_rewrites_packages_and_renaming_and_deleting_still_work(twin_runs, tmp_path):
    (run, _), _ = twin_runs
    shutil.copytree(run.path, tmp_path / run.id)
    store = RunStore(tmp_path)
    copy = store.get(run.id)
    (copy.path / "packages.txt").write_text("stale==0\n")
    lock = copy.lock()
    try:
        execute(copy)  # every round saved: only the status (and the provenance) written anew
    finally:
        lock.release()
    assert "stale==0" not in (copy.path / "packages.txt").read_text()
    moved = store.rename(copy.id, "renamed")
    assert (moved.path / "packages.txt").exists() and moved.info().status == "done"
    store.delete(moved.id)
    assert not moved.path.exists()


def test_deterministic_must_be_true_or_false():
    code, _, err = in_process("train", "--preset", "demo", "--set", "deterministic=maybe", "--runs-dir", "/nonexistent")
    assert code == 2 and err.strip().splitlines() == ["error: deterministic must be true or false, got 'maybe'"]
    with pytest.raises(ConfigError, match="^deterministic must be true or false") as e:
        preset("demo").replace(deterministic="yes").validate()
    assert e.value.field == "deterministic"
    assert preset("demo").replace(deterministic=True).validate().deterministic is True


# ---------------------------------------------------------------- the pages

def test_describe_says_what_trained_a_run_and_what_an_old_run_lacks():
    status = {"device": "cuda:0", "torch": "2.5.1", "provenance": {
        "commit": "0123456789abcdef0123456789abcdef01234567-dirty", "torch": "2.5.1", "cuda": "12.4", "cudnn": 90100,
        "gpu": "NVIDIA H100", "python": "3.12.1", "torchvision": "0.20.1"}}
    assert provenance.describe(status, deterministic=True) == (
        "cuda:0 (NVIDIA H100) · commit 0123456789ab-dirty · torch 2.5.1 · CUDA 12.4 · cuDNN 90100 · deterministic")
    cpu = {"device": "cpu", "provenance": {"commit": None, "torch": "2.5.1", "cuda": None, "cudnn": None}}
    assert provenance.describe(cpu, deterministic=False) == (
        "cpu · commit unknown · torch 2.5.1 · no CUDA · no cuDNN · not deterministic")
    assert provenance.describe({"device": "cpu", "torch": "2.1.0"}, deterministic=False) == (
        "cpu · torch 2.1.0 · no provenance recorded · not deterministic")


def test_the_pages_show_and_set_it(twin_runs, monkeypatch):
    from streamlit.testing.v1 import AppTest

    (run, _), _ = twin_runs
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(run.path.parent))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=120).run()
    at = at.switch_page("../pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [c.value for c in at.caption if c.value.startswith("Trained with:")]
    commit = run.status_record()["provenance"]["commit"]
    assert len(shown) == 1 and commit[:12] in shown[0] and shown[0].endswith("deterministic")
    at = at.switch_page("../pages/train.py").run()
    assert at.toggle(key="cfg.deterministic").value is False
    at.toggle(key="cfg.deterministic").set_value(True).run()
    assert not at.exception and at.session_state["train.config"].deterministic is True
