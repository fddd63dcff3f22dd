"""Calibration metrics against hand-built cases with known answers and plain-loop twins."""
import math

import numpy as np
import pytest
import torch

from sdcore.analysis.calibration import (CalibrationReport, aurc, brier_score, calibration_report,
                                         expected_calibration_error, negative_log_likelihood, reliability,
                                         run_calibration, topk_error)


def two_class(confidences, correct):
    """probs [N, 2] whose max is `confidences` on class 0; target 0 where correct else 1."""
    c = torch.tensor(confidences, dtype=torch.float64)
    probs = torch.stack([c, 1 - c], 1)
    targets = torch.tensor([0 if ok else 1 for ok in correct])
    return probs, targets


def ece_loop(probs, targets, n_bins):
    """Guo et al.'s definition, one example and one bin at a time."""
    n = len(targets)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(n) if lo < float(probs[i].max()) <= hi or (b == 0 and float(probs[i].max()) == 0)]
        if not members:
            continue
        acc = sum(int(probs[i].argmax()) == int(targets[i]) for i in members) / len(members)
        conf = sum(float(probs[i].max()) for i in members) / len(members)
        total += len(members) / n * abs(acc - conf)
    return total


def test_ece_known_answers():
    # Perfectly calibrated: in the 0.8 bin, 4 of 5 right; in the 0.6 bin, 3 of 5 right.
    probs, targets = two_class([0.8] * 5 + [0.6] * 5, [1, 1, 1, 1, 0] + [1, 1, 1, 0, 0])
    assert expected_calibration_error(probs, targets) == pytest.approx(0.0, abs=1e-12)
    # Overconfident: confidence 0.9, accuracy 0.5 -> ECE 0.4.
    probs, targets = two_class([0.9] * 4, [1, 0, 1, 0])
    assert expected_calibration_error(probs, targets) == pytest.approx(0.4)
    # Two bins of unequal size: 3 at 0.95 all right (gap 0.05), 1 at 0.55 wrong (gap 0.55):
    # 3/4 * 0.05 + 1/4 * 0.55 = 0.175.
    probs, targets = two_class([0.95, 0.95, 0.95, 0.55], [1, 1, 1, 0])
    assert expected_calibration_error(probs, targets) == pytest.approx(0.175)
    # One bin: ECE = |accuracy - mean confidence|.
    probs, targets = two_class([0.95, 0.95, 0.95, 0.55], [1, 1, 1, 0])
    assert expected_calibration_error(probs, targets, n_bins=1) == pytest.approx(abs(0.75 - 0.85))


def test_ece_bin_edges_are_right_closed():
    """A confidence exactly on an edge i/M belongs to the bin that ends there."""
    probs, targets = two_class([0.6, 0.6], [1, 1])  # 0.6 = 9/15: bin 8 = (8/15, 9/15]
    r = reliability(probs, targets, n_bins=15)
    assert r.count[8] == 2 and sum(r.count) == 2
    assert r.confidence[8] == pytest.approx(0.6) and r.accuracy[8] == 1.0 and r.confidence[9] is None


def test_ece_equals_a_loop_on_random_predictions():
    g = torch.Generator().manual_seed(0)
    for n_bins in (1, 10, 15):
        logits = torch.randn(300, 7, generator=g, dtype=torch.float64) * 3
        probs = torch.softmax(logits, 1)
        targets = torch.randint(0, 7, (300,), generator=g)
        assert expected_calibration_error(probs, targets, n_bins) == pytest.approx(
            ece_loop(probs, targets, n_bins), abs=1e-12)


def test_aurc_on_a_tiny_ranked_example():
    # Ranked by confidence: right, wrong, right, wrong -> risks 0, 1/2, 1/3, 2/4.
    probs, targets = two_class([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    area, excess = aurc(probs, targets)
    want = (0 + 1 / 2 + 1 / 3 + 2 / 4) / 4
    assert area == pytest.approx(want)
    r = 0.5
    assert excess == pytest.approx(want - (r + (1 - r) * math.log(1 - r)))
    # The order comes from the confidences, not the data order.
    perm = [3, 1, 0, 2]
    assert aurc(probs[perm], targets[perm])[0] == pytest.approx(want)
    # Perfect ranking (errors least confident): E-AURC is the discretization gap only, small.
    probs, targets = two_class([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 0])
    area, excess = aurc(probs, targets)
    assert area == pytest.approx((0 + 0 + 1 / 3 + 2 / 4) / 4)
    # All right: no risk anywhere.
    probs, targets = two_class([0.9, 0.7], [1, 1])
    assert aurc(probs, targets) == (0.0, 0.0)


def test_nll_brier_topk_against_direct_computation():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 6, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 6, (50,), generator=g)
    p = torch.softmax(logits, 1).numpy()
    y = targets.numpy()
    probs = torch.from_numpy(p)
    assert negative_log_likelihood(probs, targets) == pytest.approx(-np.mean(np.log(p[np.arange(50), y])))
    onehot = np.eye(6)[y]
    assert brier_score(probs, targets) == pytest.approx(np.mean(np.sum((p - onehot) ** 2, 1)))
    for k in (1, 2, 5, 10):
        top = np.argsort(-p, 1)[:, :min(k, 6)]
        assert topk_error(probs, targets, k) == pytest.approx(100 * np.mean([yi not in t for yi, t in zip(y, top)]))
    assert topk_error(probs, targets, 6) == 0.0


def test_report_bundles_everything_and_round_trips():
    import json

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(80, 10, generator=g)
    targets = torch.randint(0, 10, (80,), generator=g)
    r = calibration_report(logits, targets)
    probs = torch.softmax(logits.double(), 1)
    assert r.ece == pytest.approx(expected_calibration_error(probs, targets))
    assert r.nll == pytest.approx(float(torch.nn.functional.cross_entropy(logits.double(), targets)))
    assert r.examples == 80 and r.n_bins == 15 and sum(r.reliability.count) == 80
    assert CalibrationReport.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match=r"probs must be \[N, C\] and targets \[N\]"):
        expected_calibration_error(torch.rand(4, 3), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="no examples"):
        aurc(torch.rand(0, 3), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="n_bins must be a positive int"):
        expected_calibration_error(torch.rand(4, 3), torch.zeros(4, dtype=torch.int64), n_bins=0)


# ---------------------------------------------------------------- a run, end to end

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from sdcore.config import preset
    from sdcore.methods import train

    root = tmp_path_factory.mktemp("runs")
    kd = preset("demo").replace(epochs=2, rounds=1, **{"data.subset": 200, "model.width": 0.25})
    byot = preset("demo-byot").replace(epochs=2, **{"data.subset": 200, "model.width": 0.25})
    return train(kd, runs_dir=root)[0], train(byot, runs_dir=root)[0]


def test_run_calibration_per_round_and_exit_cached(runs, monkeypatch):
    from sdcore.analysis.compare import round_model
    from sdcore.data import load
    from sdcore.engine import predict_logits

    kd, byot = runs
    result = run_calibration(kd)
    assert [(m.round, m.exit) for m in result] == [(0, "deepest"), (1, "deepest")]
    cfg = kd.config()
    data = load(cfg.data, seed=cfg.seed)
    for m in result:
        logits = predict_logits(round_model(kd, cfg, data, m.round), data.test)
        assert m.report == calibration_report(logits, data.test.y)
        summary_acc = kd.summary()["rounds"][m.round]["test_acc"]
        assert 100 - m.report.top1_err == pytest.approx(summary_acc, abs=1e-6)

    exits = run_calibration(byot)
    names = [m.exit for m in exits]
    final = byot.summary()["rounds"][0]
    assert names == [f"exit {i + 1}" for i in range(len(final["test_acc_exits"]))] + ["ensemble"]
    for m, acc in zip(exits, final["test_acc_exits"] + [final["test_acc_ensemble"]]):
        assert 100 - m.report.top1_err == pytest.approx(acc, abs=1e-6), m.exit

    monkeypatch.setattr("sdcore.analysis.calibration._compute", lambda *a, **k: pytest.fail("recomputed"))
    assert run_calibration(kd) == result and run_calibration(byot) == exits


def test_cli_prints_the_table_and_refuses_unfinished_rounds(runs):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    kd, byot = runs
    base = [sys.executable, "-m", "sdcore", "analyze", "--runs-dir", str(kd.path.parent), "--calibration"]
    out = subprocess.run(base + [kd.id], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ECE %" in out.stdout and "teacher (round 0)" in out.stdout and "student 1" in out.stdout
    ece = run_calibration(kd)[1].report.ece
    student_row = next(line for line in out.stdout.splitlines() if "student 1" in line)
    assert f"{100 * ece:.2f}" in student_row
    out = subprocess.run(base + [byot.id], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "ensemble" in out.stdout and "exit 1" in out.stdout, out.stderr
    bad = subprocess.run(base + [kd.id, "--rounds", "0,7"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no finished round 7" in bad.stderr
