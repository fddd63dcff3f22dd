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
    with pytest.raises(ConfigError, match="trace_tol must be in"):
        analyze(run, AnalysisSpec(rounds=(0,), trace_tol=0))


def test_a_setting_the_model_cannot_take_is_one_line_and_keeps_what_was_computed(run, monkeypatch):
    """A Lanczos basis beyond the memory limit: the error names the analysis and the round, and the
    results already computed stay cached."""
    from sdcore.analysis.runner import cached_results

    d = sum(p.numel() for p in direct_model(run, 0).parameters())
    monkeypatch.setattr(hessian, "BASIS_BYTES", 30 * d * 4)  # 30 float32 vectors: a top-2 fits, a top-40 not
    spec = AnalysisSpec(rounds=(0,), top_k=2, trace_samples=8, density=False, subset=64, device="cpu", seed=7)
    analyze(run, spec)
    bigger = AnalysisSpec(**{**spec.__dict__, "top_k": 40})
    with pytest.raises(ConfigError, match=r"^eigen of round 0: the top 40 eigenvalues needs at least 41 "
                                          r"Lanczos vectors .* only 30 fit in memory") as e:
        analyze(run, bigger)
    assert "\n" not in str(e.value)
    found, missing = cached_results(run, bigger)
    assert ("trace", 0) in found and missing == 1  # only the top-40 is missing


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
