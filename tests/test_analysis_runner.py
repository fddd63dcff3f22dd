"""analyze(): results equal a direct computation, are cached per (kind, round, settings), run as jobs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdcore.analysis import hessian, landscape
from sdcore.analysis.runner import AnalysisSpec, analyze, result_path
from sdcore.config import ConfigError, preset
from sdcore.data import load
from sdcore.jobs import JobManager
from sdcore.methods import train
from sdcore.models import create
from sdcore.runs import RunError

ROOT = Path(__file__).resolve().parents[1]
SPEC = dict(top_k=2, trace_samples=8, density=False, subset=64, steps=5, device="cpu")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = preset("demo").replace(epochs=2, rounds=1, **{"data.subset": 200, "model.width": 0.25})
    return train(cfg, runs_dir=tmp_path_factory.mktemp("runs"))[0]


def direct_model(run, r):
    cfg = run.config()
    m = create(cfg.model.arch, num_classes=10, in_channels=1, image_size=8, width=cfg.model.width)
    m.load_state_dict(run.load_state_dict(r))
    return m.eval()


def test_results_equal_a_direct_computation_and_are_cached(run, monkeypatch):
    spec = AnalysisSpec(rounds=(0, 1), landscape="1d", **SPEC)
    first = analyze(run, spec)
    cfg = run.config()
    batches = hessian.training_batches(load(cfg.data, seed=cfg.seed).train, 64, generator=torch.Generator().manual_seed(0))
    for r in (0, 1):
        want = hessian.top_eigenvalues(direct_model(run, r), batches, k=2, generator=torch.Generator().manual_seed(0))
        assert first[("eigen", r)]["values"] == pytest.approx(want, rel=1e-6)
        line = landscape.line(direct_model(run, r), batches, steps=11, generator=torch.Generator().manual_seed(0))
        assert first[("line", r)]["loss"] == pytest.approx(line.to_dict()["loss"], rel=1e-6)
    path = result_path(run, "eigen", 1, {"subset": 64, "seed": 0, "k": 2})
    assert json.loads(path.read_text())["result"] == first[("eigen", 1)]

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")
    monkeypatch.setattr("sdcore.analysis.runner._compute", boom)
    assert analyze(run, spec) == first


def test_bad_specs_and_unfinished_rounds(run):
    with pytest.raises(ConfigError, match="landscape must be 1d or 2d"):
        analyze(run, AnalysisSpec(rounds=(0,), landscape="3d"))
    with pytest.raises(ConfigError, match="top_k"):
        analyze(run, AnalysisSpec(rounds=(0,), top_k=0))
    with pytest.raises(RunError, match="no finished round 5"):
        analyze(run, AnalysisSpec(rounds=(5,), **SPEC))


def test_analysis_runs_as_a_background_job(run):
    manager = JobManager(run.path.parent)
    try:
        h = manager.submit_analysis(run.id, AnalysisSpec(rounds=(1,), flatness=True, interpolate=True, **SPEC))
        assert h.wait(120) and h.progress().status == "done", h.progress().error
        assert h.kind == "analysis" and run.status() == "done"  # the run itself is untouched
        assert list((run.path / "analysis").glob("interp-1-*.json")) and list((run.path / "analysis").glob("flatness-1-*.json"))
        with pytest.raises(RunError, match="no finished round 3"):
            manager.submit_analysis(run.id, AnalysisSpec(rounds=(3,), **SPEC))
    finally:
        manager.shutdown(timeout=60)


def test_cli_analyze(run):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "sdcore", "analyze", run.id, "--runs-dir", str(run.path.parent), "--top-k", "2",
            "--trace-samples", "8", "--no-density", "--subset", "64", "--device", "cpu"]
    p = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "λ_max" in p.stdout and "teacher (round 0)" in p.stdout and "student 1" in p.stdout
    bad = subprocess.run(args[:5] + ["--runs-dir", str(run.path.parent), "--rounds", "0,x"], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=300)
    assert bad.returncode == 2 and "--rounds must be comma-separated integers" in bad.stderr
