"""Calibration metrics against hand-built cases with known answers and plain-loop twins."""
import math

import numpy as np
import pytest
import torch

from sdcore.analysis.calibration import (
    CONVENTIONS,
    CalibrationReport,
    aurc,
    brier_score,
    calibration_report,
    expected_calibration_error,
    negative_log_likelihood,
    reliability,
    run_calibration,
    topk_error,
)


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


# PS-KD's authors' code, lgcnsai/PS-KD-Pytorch utils/metric.py, transcribed as the reference to compare
# against (np.float -> float for numpy 2; one statement per line as there).
def metric_ece_aurc_eaurc(confidences, truths, bin_size=0.1):
    confidences = np.asarray(confidences)
    truths = np.asarray(truths)
    total = len(confidences)
    predictions = np.argmax(confidences, axis=1)
    max_confs = np.amax(confidences, axis=1)
    upper_bounds = np.arange(bin_size, 1 + bin_size, bin_size)
    accs = []
    avg_confs = []
    bin_counts = []
    ces = []
    for upper_bound in upper_bounds:
        lower_bound = upper_bound - bin_size
        acc, avg_conf, bin_count = compute_bin(lower_bound, upper_bound, max_confs, predictions, truths)
        accs.append(acc)
        avg_confs.append(avg_conf)
        bin_counts.append(bin_count)
        ces.append(abs(acc - avg_conf) * bin_count)
    ece = 100 * sum(ces) / total
    aurc, e_aurc = calc_aurc(confidences, truths)
    return ece, aurc * 1000, e_aurc * 1000


def compute_bin(conf_thresh_lower, conf_thresh_upper, conf, pred, true):
    filtered_tuples = [x for x in zip(pred, true, conf) if x[2] > conf_thresh_lower and x[2] <= conf_thresh_upper]
    if len(filtered_tuples) < 1:
        return 0, 0, 0
    else:
        correct = len([x for x in filtered_tuples if x[0] == x[1]])
        avg_conf = sum([x[2] for x in filtered_tuples]) / len(filtered_tuples)
        accuracy = float(correct) / len(filtered_tuples)
        bin_count = len(filtered_tuples)
        return accuracy, avg_conf, bin_count


def calc_aurc(confidences, labels):
    confidences = np.array(confidences)
    labels = np.array(labels)
    predictions = np.argmax(confidences, axis=1)
    max_confs = np.max(confidences, axis=1)
    n = len(labels)
    indices = np.argsort(max_confs)
    labels, predictions, confidences = labels[indices][::-1], predictions[indices][::-1], confidences[indices][::-1]
    risk_cov = np.divide(np.cumsum(labels != predictions).astype(float), np.arange(1, n + 1))
    nrisk = np.sum(labels != predictions)
    aurc = np.mean(risk_cov)
    opt_aurc = (1. / n) * np.sum(np.divide(np.arange(1, nrisk + 1).astype(float), n - nrisk + np.arange(1, nrisk + 1)))
    eaurc = aurc - opt_aurc
    return aurc, eaurc
# (end of the reference)


def sdlab_in_pskd_units(probs, targets, n_bins=None):
    """sdlab's pskd-convention (ECE %, AURC x 1000, E-AURC x 1000), the reference's units."""
    area, excess = aurc(probs, targets)
    return 100 * expected_calibration_error(probs, targets, n_bins), 1000 * area, 1000 * excess


def assert_tie_free(probs):
    conf = probs.max(1).values
    assert len(torch.unique(conf)) == len(conf), "the comparison needs distinct confidences"


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_ece_known_answers(convention):
    ece = lambda *a, **k: expected_calibration_error(*a, **k, convention=convention)  # noqa: E731
    # Perfectly calibrated: in the 0.8 bin, 4 of 5 right; in the 0.6 bin, 3 of 5 right.
    probs, targets = two_class([0.8] * 5 + [0.6] * 5, [1, 1, 1, 1, 0] + [1, 1, 1, 0, 0])
    assert ece(probs, targets) == pytest.approx(0.0, abs=1e-12)
    # Overconfident: confidence 0.9, accuracy 0.5 -> ECE 0.4.
    probs, targets = two_class([0.9] * 4, [1, 0, 1, 0])
    assert ece(probs, targets) == pytest.approx(0.4)
    # Two bins of unequal size: 3 at 0.95 all right (gap 0.05), 1 at 0.55 wrong (gap 0.55):
    # 3/4 * 0.05 + 1/4 * 0.55 = 0.175.
    probs, targets = two_class([0.95, 0.95, 0.95, 0.55], [1, 1, 1, 0])
    assert ece(probs, targets) == pytest.approx(0.175)
    # One bin: ECE = |accuracy - mean confidence|.
    probs, targets = two_class([0.95, 0.95, 0.95, 0.55], [1, 1, 1, 0])
    assert ece(probs, targets, n_bins=1) == pytest.approx(abs(0.75 - 0.85))


def test_ece_bin_edges_are_right_closed():
    """Guo: a confidence exactly on an edge i/M belongs to the bin that ends there."""
    probs, targets = two_class([0.6, 0.6], [1, 1])  # 0.6 = 9/15: bin 8 = (8/15, 9/15]
    r = reliability(probs, targets, n_bins=15, convention="guo")
    assert r.count[8] == 2 and sum(r.count) == 2
    assert r.confidence[8] == pytest.approx(0.6) and r.accuracy[8] == 1.0 and r.confidence[9] is None


def test_ece_equals_a_loop_on_random_predictions():
    g = torch.Generator().manual_seed(0)
    for n_bins in (1, 10, 15):
        logits = torch.randn(300, 7, generator=g, dtype=torch.float64) * 3
        probs = torch.softmax(logits, 1)
        targets = torch.randint(0, 7, (300,), generator=g)
        assert expected_calibration_error(probs, targets, n_bins, convention="guo") == pytest.approx(
            ece_loop(probs, targets, n_bins), abs=1e-12)


def test_aurc_on_a_tiny_ranked_example():
    # Ranked by confidence: right, wrong, right, wrong -> risks 0, 1/2, 1/3, 2/4.
    probs, targets = two_class([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    area, excess = aurc(probs, targets, convention="guo")
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
    assert aurc(probs, targets, convention="guo") == (0.0, 0.0)


def test_pskd_eaurc_subtracts_the_exact_optimum():
    """AURC* for N = 4 with R = 2 errors, by hand: errors last, risks 0, 0, 1/3, 2/4."""
    optimum = (0 + 0 + 1 / 3 + 2 / 4) / 4  # = (1/N) sum_{i=1..R} i / (N - R + i) = 5/24
    assert optimum == pytest.approx(5 / 24)
    probs, targets = two_class([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    area, excess = aurc(probs, targets)
    assert area == pytest.approx(1 / 3) and excess == pytest.approx(1 / 3 - 5 / 24)
    # A perfect ranking scores exactly 0 (Geifman's continuous optimum is lower: "guo" leaves a gap).
    probs, targets = two_class([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 0])
    assert aurc(probs, targets) == (pytest.approx(optimum), pytest.approx(0.0, abs=1e-15))
    assert aurc(probs, targets, convention="guo")[1] > 0.01
    # All wrong: AURC 1, optimum 1.
    probs, targets = two_class([0.9, 0.7], [0, 0])
    assert aurc(probs, targets) == (1.0, 0.0) and aurc(probs, targets, convention="guo") == (1.0, 0.0)


def random_case(n, c, seed, *, scale=3.0, truth="random", dtype=torch.float64):
    """A tie-free softmax [n, c] and targets: random, all correct or all wrong."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * scale, 1).to(dtype)
    pred = probs.argmax(1)
    targets = {"random": torch.randint(0, c, (n,), generator=g), "correct": pred, "wrong": (pred + 1) % c}[truth]
    assert_tie_free(probs)
    return probs, targets


CASES = {  # name: (n, c, seed, options)
    "cifar-like": (2000, 100, 0, {}),
    "ten classes": (500, 10, 1, {}),
    "two classes": (300, 2, 2, {"scale": 1.0}),
    "one example": (1, 5, 3, {}),
    "all correct": (200, 10, 4, {"truth": "correct"}),
    "all wrong": (200, 10, 5, {"truth": "wrong"}),
    "confident": (400, 10, 6, {"scale": 8.0}),
    "float32 softmax": (1000, 100, 7, {"dtype": torch.float32}),
}


@pytest.mark.parametrize("case", CASES)
def test_pskd_convention_equals_the_reference_code(case):
    n, c, seed, options = CASES[case]
    probs, targets = random_case(n, c, seed, **options)
    # The reference gets the very same numbers, in float64: fed float32, it sums confidences in float32.
    want = metric_ece_aurc_eaurc(probs.double().numpy(), targets.numpy())
    assert sdlab_in_pskd_units(probs, targets) == pytest.approx(want, rel=1e-12, abs=1e-12)
    if probs.dtype == torch.float32:  # as PS-KD calls it: float32 sums, agreement to float32 rounding
        want = metric_ece_aurc_eaurc(probs.numpy(), targets.numpy())
        assert sdlab_in_pskd_units(probs, targets) == pytest.approx(want, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("n_bins", [1, 15, 20, 49])
def test_pskd_n_bins_is_the_reference_bin_size(n_bins):
    """n_bins = M runs the reference with bin_size = 1/M, np.arange's extra bin included (M = 49)."""
    probs, targets = random_case(700, 10, 8, scale=6.0)
    probs[0] = torch.eye(10, dtype=torch.float64)[targets[0]]  # confidence exactly 1.0, the last edge
    assert_tie_free(probs)
    want = metric_ece_aurc_eaurc(probs.numpy(), targets.numpy(), bin_size=1 / n_bins)
    assert sdlab_in_pskd_units(probs, targets, n_bins) == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert len(reliability(probs, targets, n_bins).count) == len(np.arange(1 / n_bins, 1 + 1 / n_bins, 1 / n_bins))


EDGE_CONFIDENCES = {  # confidence: its pskd bin (None: in the one-ulp gap between two bins) and guo's (10 bins)
    0.2: (1, 1), 0.20000000000000004: (None, 2), 0.3: (2, 2), 0.30000000000000004: (2, 3), 0.4: (3, 3),
    0.5: (4, 4), 0.6: (5, 5), 0.6000000000000001: (None, 6), 0.7: (6, 6), 0.7000000000000001: (6, 7),
    0.8: (7, 7), 0.9: (8, 8), 1.0: (9, 9), float(np.float32(0.3)): (3, 3), float(np.float32(0.7)): (6, 6),
    float(np.float32(0.2)): (2, 2), 0.15: (1, 1), 0.55: (5, 5), 0.95: (9, 9),
}


def spread(m, top):
    """A 10-class probability row with max m (> 0.1) on class `top`, the rest of the mass spread evenly."""
    row = [(1 - m) / 9] * 10
    row[top] = m
    return row


def edge_case():
    """One example per confidence of EDGE_CONFIDENCES (tie-free); every third example wrong."""
    probs = torch.tensor([spread(m, k % 10) for k, m in enumerate(EDGE_CONFIDENCES)], dtype=torch.float64)
    targets = torch.tensor([k % 10 if k % 3 else (k + 1) % 10 for k in range(len(probs))])
    return probs, targets


def test_pskd_bins_use_the_reference_float_edges():
    probs, targets = edge_case()
    assert_tie_free(probs)
    assert sdlab_in_pskd_units(probs, targets) == pytest.approx(
        metric_ece_aurc_eaurc(probs.numpy(), targets.numpy()), rel=1e-12, abs=1e-12)
    for m, bins in EDGE_CONFIDENCES.items():
        one = torch.tensor([spread(m, 0)], dtype=torch.float64), torch.tensor([0])
        assert float(one[0].max()) == m
        for convention, b in zip(("pskd", "guo"), bins):
            count = reliability(*one, n_bins=10, convention=convention).count
            assert count == [int(i == b) for i in range(10)], (m, convention)
    r = reliability(probs, targets)
    assert r.edges[:4] == [0.0, 0.1, 0.2, 0.30000000000000004] and len(r.edges) == 11
    assert sum(r.count) == len(targets) - 2  # the two gap examples, in no bin; ECE still divides by N
    # No float32 confidence falls in a gap (upper_i, upper_{i+1} - 0.1]: PS-KD's float32 softmax never does.
    upper = np.arange(0.1, 1.1, 0.1)
    for hi, lo in zip(upper[:-1], upper[1:] - 0.1):
        if lo > hi:
            above = np.nextafter(np.float32(hi), np.float32(2)) if np.float32(hi) <= hi else np.float32(hi)
            assert float(above) > lo


def test_aurc_ties_keep_the_data_order():
    """Tied confidences: sdlab ranks them in data order (stable sort), so the data order changes AURC;
    the reference's unstable argsort picks an order of its own, one of the two."""
    probs, targets = two_class([0.9, 0.9, 0.8], [0, 1, 1])  # the two 0.9s: the first wrong, the second right
    wrong_first = (1 + 1 / 2 + 1 / 3) / 3
    right_first = (0 + 1 / 2 + 1 / 3) / 3
    assert aurc(probs, targets)[0] == pytest.approx(wrong_first)
    assert aurc(probs[[1, 0, 2]], targets[[1, 0, 2]])[0] == pytest.approx(right_first)
    reference = metric_ece_aurc_eaurc(probs.numpy(), targets.numpy())[1] / 1000
    assert reference == pytest.approx(wrong_first) or reference == pytest.approx(right_first)


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
    assert r.examples == 80 and r.n_bins == 10 and r.convention == "pskd" and sum(r.reliability.count) == 80
    assert CalibrationReport.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    guo = calibration_report(logits, targets, convention="guo")
    assert guo.ece == pytest.approx(expected_calibration_error(probs, targets, 15, convention="guo"))
    assert (guo.aurc, guo.eaurc) == aurc(probs, targets, convention="guo") and guo.aurc == r.aurc
    assert guo.n_bins == 15 and len(guo.reliability.count) == 15 and guo.convention == "guo"
    assert CalibrationReport.from_dict(json.loads(json.dumps(guo.to_dict()))) == guo


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match=r"probs must be \[N, C\] and targets \[N\]"):
        expected_calibration_error(torch.rand(4, 3), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="no examples"):
        aurc(torch.rand(0, 3), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="n_bins must be a positive int"):
        expected_calibration_error(torch.rand(4, 3), torch.zeros(4, dtype=torch.int64), n_bins=0)
    with pytest.raises(ValueError, match="convention must be one of pskd, guo, got 'geifman'"):
        aurc(torch.rand(4, 3), torch.zeros(4, dtype=torch.int64), convention="geifman")


# ---------------------------------------------------------------- a run, end to end

@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory):
    root, tiny = tmp_path_factory.mktemp("runs"), {"epochs": 2, "data.subset": 200, "model.width": 0.25}
    return trained(rounds=1, root=root, **tiny), trained("demo-byot", root=root, **tiny)


def test_run_calibration_per_round_and_exit_cached(runs, monkeypatch):
    from sdcore.data import load
    from sdcore.engine import predict_logits

    kd, byot = runs
    result = run_calibration(kd)
    assert [(m.round, m.exit, m.ensemble, m.label) for m in result] == [(0, None, False, "deepest"),
                                                                         (1, None, False, "deepest")]
    cfg = kd.config()
    data = load(cfg.data, seed=cfg.seed)
    for m in result:
        logits = predict_logits(kd.load_model(m.round, **data.shapes, device=data.device), data.test)
        assert m.report == calibration_report(logits, data.test.y)
        summary_acc = kd.summary().rounds[m.round].test_acc
        assert 100 - m.report.top1_err == pytest.approx(summary_acc, abs=1e-6)

    exits = run_calibration(byot)
    final = byot.summary().rounds[0]
    k = len(final.exit_accs)
    assert [(m.exit, m.ensemble) for m in exits] == [(i, False) for i in range(k)] + [(None, True)]
    assert [m.label for m in exits] == [f"exit {i + 1}" for i in range(k)] + ["ensemble"]
    for m, acc in zip(exits, final.exit_accs + (final.ensemble_acc,)):
        assert 100 - m.report.top1_err == pytest.approx(acc, abs=1e-6), m.label

    monkeypatch.setattr("sdcore.analysis.calibration._compute", lambda *a, **k: pytest.fail("recomputed"))
    assert run_calibration(kd) == result and run_calibration(byot) == exits
    assert run_calibration(kd, n_bins=10, convention="pskd") == result  # the default, spelled out


def test_run_calibration_other_convention_is_its_own_cache_entry(runs, monkeypatch):
    from sdcore.data import load
    from sdcore.engine import predict_logits

    kd, _ = runs
    pskd = run_calibration(kd)
    guo = run_calibration(kd, convention="guo")
    cfg = kd.config()
    data = load(cfg.data, seed=cfg.seed)
    for m in guo:
        logits = predict_logits(kd.load_model(m.round, **data.shapes, device=data.device), data.test)
        assert m.report == calibration_report(logits, data.test.y, convention="guo")
    assert [m.report.aurc for m in guo] == [m.report.aurc for m in pskd]
    assert [m.report.n_bins for m in guo] == [15, 15]
    monkeypatch.setattr("sdcore.analysis.calibration._compute", lambda *a, **k: pytest.fail("recomputed"))
    assert run_calibration(kd, convention="guo") == guo
    with pytest.raises(ValueError, match="convention must be one of"):
        run_calibration(kd, convention="Guo")


@pytest.mark.slow
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
    assert "PS-KD's float edges" in out.stdout and "'pskd' convention" in out.stdout
    out = subprocess.run(base + [kd.id, "--calibration-convention", "guo"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "15 equal-width bins" in out.stdout and "'guo' convention" in out.stdout
    ece = run_calibration(kd, convention="guo")[1].report.ece
    student_row = next(line for line in out.stdout.splitlines() if "student 1" in line)
    assert f"{100 * ece:.2f}" in student_row
    out = subprocess.run(base + [byot.id], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "ensemble" in out.stdout and "exit 1" in out.stdout, out.stderr
    bad = subprocess.run(base + [kd.id, "--rounds", "0,7"], capture_output=True, text=True, env=env, timeout=120)
    assert (bad.returncode == 2 and bad.stderr.count("\n") == 1
            and "round 7, which is not a finished round" in bad.stderr)
