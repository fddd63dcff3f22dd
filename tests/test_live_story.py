"""What Live shows: comparable loss curves with kept epochs marked, and the demo's two answers (accuracy, curvature)."""
import pytest

from sdcore.analysis.hessian import EigenResult, TraceResult
from sdcore.analysis.story import Verdict, curvature_spec, run_verdicts, verdicts
from sdcore.config import preset
from sdcore.jobs import JobManager
from sdcore.plots import LOSS_QUANTITIES, loss_quantities, round_style, sharpness_curves, training_curves
from sdcore.runs import RunSummary


def records(rounds=2, epochs=3, *, ce=True, sharp=False):
    out = []
    for r in range(rounds):
        for e in range(1, epochs + 1):
            m = {"round": r, "epoch": e, "train_loss": 1.0 + r + e, "test_acc": 80.0 + 5 * r + e, "val_acc": 79.0 + e}
            if ce:
                m.update(train_ce=0.5 + 0.1 * r + 0.01 * e, train_ce_clean=0.9 - 0.1 * r - 0.01 * e)
            if sharp:
                m["sharpness"] = 10.0 * (3 - r) + e
            out.append(m)
    return out


def traces(fig, name):
    return [t for t in fig.data if t.name == name]


@pytest.mark.parametrize("loss", list(LOSS_QUANTITIES))
def test_every_round_plots_the_chosen_quantity_with_a_truthful_axis(loss):
    ms = records()
    fig = training_curves(ms, method="kd", loss=loss, kept={0: 1, 1: 3})
    assert fig.layout.yaxis.title.text == LOSS_QUANTITIES[loss][1]
    left = [t for t in fig.data if t.xaxis == "x" and t.mode != "markers"]
    assert [list(t.y) for t in left] == [[m[loss] for m in ms if m["round"] == r] for r in (0, 1)]
    assert left[0].line.dash != left[1].line.dash and left[0].marker.symbol != left[1].marker.symbol


def test_kept_epochs_are_starred_on_both_panels_at_the_kept_values():
    ms = records()
    fig = training_curves(ms, method="kd", kept={0: 1, 1: 3})
    stars = [t for t in fig.data if t.mode == "markers" and t.marker.symbol == "star"]
    assert len(stars) == 4 and sum(bool(t.showlegend) for t in stars) == 1
    acc = {(t.x[0], t.y[0]) for t in stars if t.yaxis == "y2"}
    assert acc == {(1, 81.0), (3, 88.0)}  # the table's kept test accuracy sits on the curve
    loss = sorted((t.x[0], t.y[0]) for t in stars if t.yaxis == "y")
    assert loss == [(1, pytest.approx(0.51)), (3, pytest.approx(0.63))]


def test_runs_logged_before_train_ce_fall_back_to_their_objective_and_say_so():
    ms = records(ce=False)
    assert loss_quantities(ms) == ["train_loss"]
    fig = training_curves(ms, loss="train_ce")
    assert fig.layout.yaxis.title.text == LOSS_QUANTITIES["train_loss"][1]
    with pytest.raises(ValueError, match="loss must be one of"):
        training_curves(ms, loss="nats")


def test_round_styles_differ_for_the_first_rounds():
    assert len({round_style(k) for k in range(6)}) == 6


def test_sharpness_curves_per_round_or_none():
    assert sharpness_curves(records()) is None
    fig = sharpness_curves(records(sharp=True), kept={0: 2})
    lines = [t for t in fig.data if t.mode != "markers" and t.yaxis == "y"]
    assert [list(t.y) for t in lines] == [[31.0, 32.0, 33.0], [21.0, 22.0, 23.0]]
    beside = [t for t in fig.data if t.mode != "markers" and t.yaxis == "y2"]
    assert [list(t.y) for t in beside] == [[81.0, 82.0, 83.0], [86.0, 87.0, 88.0]]  # test accuracy
    assert sorted(t.y[0] for t in fig.data if t.mode == "markers") == [32.0, 82.0]


def result(lam, trace):
    return (EigenResult(values=[lam], hvps=1, seconds=0.0, k=1, tol=1e-3, iterations=1),
            TraceResult(trace=trace, stderr=1.0, samples=2, hvps=2, seconds=0.0))


def test_verdicts_compare_each_student_with_the_teacher_on_all_three():
    summary = RunSummary.from_dict({"rounds": [{"round": k, "test_acc": a} for k, a in
                                               enumerate((90.0, 92.0, 89.0, 95.0))]}).rounds
    res = {}
    for k, (lam, tr) in {0: (50.0, 400.0), 1: (40.0, 300.0), 2: (60.0, 450.0)}.items():  # round 3 not computed
        res[("eigen", k)], res[("trace", k)] = result(lam, tr)
    got = verdicts(summary, res)
    assert [v.round for v in got] == [1, 2]
    assert (got[0].more_accurate, got[0].flatter) == (True, True)
    assert (got[1].more_accurate, got[1].flatter) == (False, False)
    assert "more accurate" in got[0].sentence("student 1") and "flatter" in got[0].sentence("student 1")
    assert "sharper" in got[1].sentence("student 2")
    mixed = Verdict(1, 91.0, 40.0, 500.0, 90.0, 50.0, 400.0)  # smaller λ_max, larger trace: not flatter
    assert not mixed.flatter and "neither" in mixed.sentence("s")
    assert verdicts(summary, {}) == []


def test_curvature_spec_shares_the_hessian_pages_cached_settings():
    import torch

    from sdcore.analysis.runner import AnalysisSpec, _plan
    page = AnalysisSpec(rounds=(0, 1))  # the Hessian page's defaults (top-20, 512 examples)
    ours = {(k, r): s for k, r, s in _plan(curvature_spec([0, 1]), torch.device("cpu"))}
    theirs = {(k, r): s for k, r, s in _plan(page, torch.device("cpu")) if k != "density"}
    assert ours == theirs


def test_a_run_with_curvature_queues_its_analysis_after_training_and_cancel_cancels_both(tmp_path):
    cfg = preset("demo").replace(**{"epochs": 1, "rounds": 1, "data.subset": 200, "model.width": 0.25,
                                    "curvature": True}).validate()
    manager = JobManager(tmp_path / "runs")
    try:
        handle = manager.submit(cfg)
        assert handle.then is not None and handle.then.kind == "analysis"
        assert handle.wait(300) and handle.then.wait(300)
        assert handle.progress().status == "done" and handle.then.progress().status == "done"
        found, results, missing = run_verdicts(handle.run)
        assert missing == 0 and [v.round for v in found] == [1]
        assert found[0].teacher_lam == results[("eigen", 0)].values[0]
        second = manager.submit(cfg.replace(name="cancelled"))
        second.cancel()
        assert second.wait(300) and second.then.wait(300)
        assert second.then.progress().status == "cancelled"
    finally:
        manager.shutdown(cancel=True, timeout=300)
