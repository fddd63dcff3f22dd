"""What every test shares: one torch thread, no global torch state leaked from one test into the next,
`gpu` tests skipped without a GPU, the browser tier's skip said once at the end (above pytest's count line),
and the files ordered for xdist.

Tiers (markers registered in pyproject.toml): `slow` (over ~5 s), `browser` (Chromium), `gpu` (CUDA).
"""
from __future__ import annotations

import collections
import sys

import pytest
import torch

BROWSER_SKIPPED = "browser tests skipped:"  # the start of every browser-tier skip reason (tests/browser)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny nets: a second intra-op thread buys nothing, and on a busy 2-core machine threads spin-waiting
    for each other made modules ~10x slower. Session-scoped so module fixtures (trained runs) get it too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)  # allowed once, before any inter-op work; later, torch refuses
    except RuntimeError:
        pass
    yield
    torch.set_num_threads(before)


CLEAN = {"default dtype": torch.float32, "grad mode": True, "anomaly detection": False,
         "deterministic algorithms": False, "intra-op threads": 1}  # what every test starts from and leaves


def _global_torch_state() -> dict[str, object]:
    return {"default dtype": torch.get_default_dtype(), "grad mode": torch.is_grad_enabled(),
            "anomaly detection": torch.is_anomaly_enabled(),
            "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
            "intra-op threads": torch.get_num_threads()}


_RESTORE = {"default dtype": torch.set_default_dtype, "grad mode": torch.set_grad_enabled,
            "anomaly detection": torch.set_anomaly_enabled,
            "deterministic algorithms": torch.use_deterministic_algorithms,
            "intra-op threads": torch.set_num_threads}


@pytest.fixture(autouse=True)
def no_leaked_torch_state(one_torch_thread):
    """Fails a test that leaves torch's process-wide state changed, and restores it, so that one leak cannot
    poison the tests after it (a float64 default dtype once failed seven later tests). The global RNG is
    not checked: tests seed it on purpose; code under test forks it (engine.new_model, PyHessian)."""
    yield
    now = _global_torch_state()
    leaked = {k: (v, now[k]) for k, v in CLEAN.items() if now[k] != v}
    for key, (v, _) in leaked.items():
        _RESTORE[key](v)
    if leaked:
        pytest.fail("the test left torch's global state changed (restored): "
                    + "; ".join(f"{k} {was} -> {then}" for k, (was, then) in leaked.items()), pytrace=False)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """trained(preset, **changes) -> Run: that preset with those config changes ("data.subset" etc.), trained to
    the end in a fresh runs folder; module fixtures build their tiny runs with it."""
    from sdcore.config import preset as named
    from sdcore.training import train

    def make(preset: str = "demo", *, root=None, **changes):
        return train(named(preset).replace(**changes), runs_dir=root or tmp_path_factory.mktemp("runs"))[0]
    return make


# `python -m sdcore ...` whose training holds at the first step of its EPOCH-th epoch (counted across rounds),
# says "held" on stdout and waits there until the run is cancelled (Ctrl-C) or the process is killed.
_HELD = """
import os, runpy, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as sdcore/__main__.py does, before torch loads
from sdcore import engine

epochs, train_epoch = [0], engine.train_epoch

def held(*args, on_step=None, should_stop, **kw):
    epochs[0] += 1
    hold = epochs[0] == EPOCH

    def step(s):
        nonlocal hold
        if on_step is not None:
            on_step(s)
        if hold:
            hold = False
            print("held", flush=True)
            deadline = time.monotonic() + 600  # a hang guard only: the test acts within seconds
            while not should_stop() and time.monotonic() < deadline:
                time.sleep(0.01)
    return train_epoch(*args, on_step=step, should_stop=should_stop, **kw)

engine.train_epoch = held
runpy.run_module("sdcore", run_name="__main__", alter_sys=True)
"""


@pytest.fixture
def held_sdcore():
    """argv of ``python -m sdcore`` whose training holds mid-epoch, at the first step of epoch ``n`` (over all
    rounds), printing "held" on stdout, until cancelled or killed: a test that interrupts a run (Ctrl-C,
    SIGKILL) never races its end, however busy the machine."""
    return lambda n: [sys.executable, "-c", _HELD.replace("EPOCH", str(n))]


def pytest_collection_modifyitems(config, items):
    """The browser files first (in their order: test_browser.py's demo starts from an empty server), then files by
    their number of `slow` tests, each file's tests together and in order: xdist hands out whole files (--dist
    loadfile, pyproject.toml), and a long file handed out last would run alone at the end. Every worker
    collects the same order. Then `gpu` tests skipped without a GPU."""
    browser = {item.path for item in items if item.get_closest_marker("browser")}  # the longest: ~100 s a file
    slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: (item.path not in browser, -slow[item.path]))  # stable: files whole, in order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter):
    """The browser tier's skip as one line after the short summary (not once per test or module there);
    the skips still count in the final line."""
    stats = terminalreporter.stats
    skipped = stats.get("skipped", [])
    browser = [r for r in skipped if BROWSER_SKIPPED in str(r.longrepr)]
    if browser:
        stats["skipped"] = [r for r in skipped if r not in browser]
    try:
        return (yield)
    finally:
        if browser:
            reason = browser[0].longrepr[2] if isinstance(browser[0].longrepr, tuple) else str(browser[0].longrepr)
            terminalreporter.write_line(reason[reason.index(BROWSER_SKIPPED):], yellow=True, bold=True)
            stats["skipped"] = skipped
