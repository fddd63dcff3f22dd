"""analyze(): results equal a direct computation, are cached per (kind, round, settings), run as jobs."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdcore.analysis import hessian, landscape
from sdcore.analysis.runner import AnalysisSpec, analyze, result_path
from sdcore.config import ConfigError
from sdcore.data import load
from sdcore.jobs import JobManager
from sdcore.models import create
from sdcore.runs import RunError

ROOT = Path(__file__).resolve().parents[1]
SPEC = dict(top_k=2, trace_samples=8, density=False, subset=64, steps=5, device="cpu")


@pytest.fixture(scope="module")
def run(trained):
    return trained(epochs=2, rounds=1, **{"data.subset": 200, "model.width": 0.25})


def direct_model(run, r):
    cfg = run.config()
    m = create(cfg.model.arch, num_classes=10, in_channels=1, image_size=8, width=cfg.model.width)
    m.load_state_dict(run.load_state_dict(r))
    return m.eval()


def test_results_equal_a_direct_computation_and_are_cached(run, monkeypatch):
    spec = AnalysisSpec(rounds=(0, 1), landscape="1d", **SPEC)
    first = analyze(run, spec)
    cfg = run.config()
    batches = hessian.training_batches(load(cfg.data, seed=cfg.seed).train, 64,
                                       generator=torch.Generator().manual_seed(0))
    for r in (0, 1):
        want = hessian.top_eigenvalues(direct_model(run, r), batches, k=2, generator=torch.Generator().manual_seed(0))
        assert first[("eigen", r)].values == pytest.approx(want, rel=1e-6)
        line = landscape.line(direct_model(run, r), batches, steps=11, generator=torch.Generator().manual_seed(0))
        assert first[("line", r)].loss == pytest.approx(line.to_dict()["loss"], rel=1e-6)
    path = result_path(run, "eigen", 1, {"subset": 64, "seed": 0, "k": 2})
    assert json.loads(path.read_text())["result"] == first[("eigen", 1)].to_dict()

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
        assert (list((run.path / "analysis").glob("interp-1-*.json"))
                and list((run.path / "analysis").glob("flatness-1-*.json")))
        with pytest.raises(RunError, match="no finished round 3"):
            manager.submit_analysis(run.id, AnalysisSpec(rounds=(3,), **SPEC))
    finally:
        manager.shutdown(timeout=60)


@pytest.mark.slow
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


# ---------------------------------------------------------------- progress within stages, cost estimates

def test_progress_moves_within_every_stage_names_it_and_its_round(run):
    """Step events per HVP / grid point: the job's fraction never steps back and ends at 1, each stage's own
    fraction runs 0 -> 1 where its count is exact, and a JobHandle shows label, round, stage and time left."""
    from sdcore.analysis.runner import progress_text, stage_label, stages
    from sdcore.jobs import JobHandle

    spec = AnalysisSpec(rounds=(0, 1), landscape="2d", flatness=True, interpolate=True, **{**SPEC, "seed": 11})
    plan = stages(spec)
    events = []
    analyze(run, spec, on_event=events.append)
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) > 3 * len(plan)  # moving inside stages, not once per stage
    fractions = [e.metrics["fraction"] for e in events]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and events[-1].kind == "done"
    assert all(a <= b for a, b in zip(fractions, fractions[1:]))
    for i, stage in enumerate(plan):
        mine = [e for e in steps if e.metrics["stage"] == i + 1]
        assert {(e.metrics["analysis"], e.metrics["round"], e.round, e.stage - 1, e.stages) for e in mine} == \
            {(stage_label(stage.kind, stage.settings), stage.round, stage.round, i, len(plan))}
        own = [e.metrics["stage_fraction"] for e in mine]
        assert own[0] == 0.0 and all(a <= b for a, b in zip(own, own[1:]))
        if stage.kind not in ("eigen", "trace"):  # exact counts: the stage's own fraction reaches 1
            assert own[-1] == 1.0
    assert {s.label for s in plan} >= {"λ_max and top 2 eigenvalues (Lanczos)", "trace (Hutchinson)",
                                       "2D loss surface", "weight-noise flatness", "teacher→student line"}

    h = JobHandle(run, None, "cpu", None, kind="analysis", work=lambda h: None)
    h._start()
    assert progress_text(h.progress()) == "starting"
    for e in events[: len(events) // 2]:
        h._event(e)
    p = h.progress()
    last = events[len(events) // 2 - 1]
    assert p.fraction == last.metrics["fraction"] and p.round == last.metrics["round"]
    text = progress_text(p, run.config().method)
    assert text.startswith(f"{last.metrics['analysis']} of ") and f"stage {last.metrics['stage']}/{len(plan)}" in text
    assert ("left" in text) and "…" not in text


def test_stage_counts_are_what_the_analyses_take(run):
    from sdcore.analysis.runner import stages

    for landscape_kind in ("1d", "2d"):
        spec = AnalysisSpec(rounds=(0, 1), landscape=landscape_kind, flatness=True, interpolate=True,
                            **{**SPEC, "density": True, "seed": 11})
        results = analyze(run, spec)
        for s in stages(spec):
            got = results[(s.kind, s.round)]
            if s.unit == "point":
                assert got.points == s.count, s
            elif s.kind == "density":
                assert got.hvps == s.count
            else:  # Lanczos and Hutchinson stop early: the count is their limit
                assert 0 < got.hvps <= s.count, s


def test_estimate_from_earlier_timings_and_counts_before_any(run, tmp_path):
    import shutil

    from sdcore.analysis.runner import estimate_seconds
    from sdcore.runs import RunStore

    spec = AnalysisSpec(rounds=(0, 1), landscape="2d", flatness=True, **{**SPEC, "seed": 12, "subset": 32})
    analyze(run, AnalysisSpec(rounds=(0,), landscape="2d", flatness=True, **SPEC))  # timings to estimate from
    est = estimate_seconds(run, spec)
    assert est.records > 0 and set(est.unit_seconds) == {"hvp", "point"}
    assert all(s is not None and 0 < s < math.inf for s in est.seconds) and 0 < est.total < math.inf
    assert "per round on this machine, measured by" in est.text()

    shutil.copytree(run.path, tmp_path / "alone" / run.id, ignore=shutil.ignore_patterns("analysis"))
    fresh = estimate_seconds(RunStore(tmp_path / "alone").get(run.id), spec)
    assert fresh.records == 0 and fresh.total is None and fresh.seconds == (None,) * len(fresh.stages)
    hvps = sum(s.count for s in fresh.stages if s.unit == "hvp") // 2
    assert fresh.text().startswith(f"up to {hvps} Hessian-vector products and ")
    assert "32 training examples" in fresh.text()


def test_cancel_stops_inside_a_stage(run):
    from sdcore.engine import Cancelled

    checks = []
    spec = AnalysisSpec(rounds=(0,), **{**SPEC, "density": True, "seed": 13})
    with pytest.raises(Cancelled):
        analyze(run, spec, should_stop=lambda: checks.append(1) or len(checks) > 5)  # 5 HVPs into the first stage
    assert not list((run.path / "analysis").glob("eigen-0-*.json")) or \
        all(json.loads(p.read_text())["settings"]["seed"] != 13 for p in (run.path / "analysis").glob("eigen-0-*.json"))
