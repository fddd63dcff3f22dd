"""Compare page analyses (seed grouping, mean ± std, CSV, teacher agreement) and BYOT exit latency, on tiny runs."""
import csv
import io
import json
import shutil

import numpy as np
import pytest
import torch

from sdcore.analysis import compare, latency
from sdcore.analysis.compare import agreement, compare_rows_to_csv, compare_table, config_label, group_key, predictions
from sdcore.analysis.latency import exit_latency, run_exit_latency
from sdcore.config import preset
from sdcore.data import load
from sdcore.models import create
from sdcore.runs import Run, RunError, RunStore
from sdcore.training import train


def tiny(**changes):
    base = {"epochs": 2, "rounds": 2, "alpha": 0.2, "data.subset": 300, "model.width": 0.5, "name": "cmp"}
    return preset("demo").replace(**{**base, **changes}).validate()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three seeds of one config, one run with another alpha, one BYOT run; all in one store.

    The alpha run trains on all of digits, so its rounds learn (~60-90% test accuracy) and disagree in
    a meaningful way; 2 epochs on 300 examples give near-constant predictors.
    """
    root = tmp_path_factory.mktemp("runs")
    out = {f"s{s}": train(tiny(seed=s, name=f"a-s{s}"), runs_dir=root)[0] for s in range(3)}
    out["alpha"] = train(tiny(alpha=0.5, name="b", **{"data.subset": None}), runs_dir=root)[0]
    out["byot"] = train(tiny(method="byot", rounds=0, **{"model.exits": True}), runs_dir=root)[0]
    return out


def copy_run(run: Run, dest, name: str) -> Run:
    """A copy of the run folder without its analysis cache."""
    target = dest / name
    shutil.copytree(run.path, target)
    shutil.rmtree(target / "analysis", ignore_errors=True)
    return Run(target)


def summary_accs(run: Run) -> list[float]:
    return [r["test_acc"] for r in json.loads((run.path / "summary.json").read_text())["rounds"]]


# ---------------------------------------------------------------- labels and keys

def test_group_key_ignores_seed_name_device_but_not_alpha():
    cfg = tiny()
    assert group_key(cfg) == group_key(cfg.replace(seed=7, name="other", device="cpu"))
    assert group_key(cfg) != group_key(cfg.replace(alpha=0.5))
    assert group_key(cfg) != group_key(cfg.replace(**{"data.label_noise": 0.1}))
    assert json.loads(group_key(cfg))["alpha"] == 0.2


def test_config_label():
    assert config_label(preset("demo")) == "kd · cnn · digits, 30% noise · α=0 τ=4 · 15 ep"
    assert config_label(tiny()) == "kd · cnn ×0.5 · digits, 30% noise, n=300 · α=0.2 τ=4 · 2 ep"
    byot = config_label(preset("byot-cifar100-resnet18"))
    assert byot == "byot · resnet18 +exits · cifar100, +aug · α=0.7 τ=3 β=0.03 (zhang) · 200 ep"
    grid = config_label(preset("demo-pskd-byot-dmfl"))
    assert grid == ("pskd+byot+dmfl · cnn +exits · digits, 30% noise · α=0.9 τ=3 β=1e-06 (luan) α_pskd=0.2 "
                    "λ_dmfl=1 T_f=1 · 30 ep")
    assert "no-skip" in config_label(preset("pham-cifar10-resnet18").replace(**{"model.skip": False}))


# ---------------------------------------------------------------- the table

def test_compare_table_mean_std_over_seeds(runs):
    order = [runs["s0"], runs["alpha"], runs["s1"], runs["s2"]]
    rows = compare_table(order)
    assert [r.run_ids for r in rows] == [(runs["s0"].id, runs["s1"].id, runs["s2"].id), (runs["alpha"].id,)]
    seeds_row, alpha_row = rows
    assert seeds_row.seeds == (0, 1, 2) and seeds_row.method == "kd" and "α=0.2" in seeds_row.label
    accs = np.array([summary_accs(runs[f"s{s}"]) for s in range(3)])  # [seeds, rounds]
    assert [s.round for s in seeds_row.rounds] == [0, 1, 2]
    for k, stat in enumerate(seeds_row.rounds):
        assert stat.n == 3
        assert stat.mean == pytest.approx(accs[:, k].mean(), abs=1e-9)
        assert stat.std == pytest.approx(accs[:, k].std(ddof=1), abs=1e-9)
    assert seeds_row.delta(2) == pytest.approx(accs[:, 2].mean() - accs[:, 0].mean(), abs=1e-9)
    assert [s.n for s in alpha_row.rounds] == [1, 1, 1] and all(s.std == 0 for s in alpha_row.rounds)
    assert [s.mean for s in alpha_row.rounds] == pytest.approx(summary_accs(runs["alpha"]))


def test_compare_table_skips_damaged_runs_and_limits_rounds(runs, tmp_path):
    garbage = copy_run(runs["s1"], tmp_path, "garbage")
    (garbage.path / "summary.json").write_text("{not json")
    missing = copy_run(runs["s1"], tmp_path, "missing")
    (missing.path / "summary.json").unlink()
    no_config = copy_run(runs["s1"], tmp_path, "no-config")
    (no_config.path / "config.json").unlink()
    short = copy_run(runs["s2"], tmp_path, "short")  # as if round 2 had not finished yet
    summary = short.summary().to_dict()
    short.write_summary({**summary, "complete": False, "rounds": summary["rounds"][:2]})

    rows = compare_table([runs["s0"], garbage, missing, no_config, short, runs["s1"]])
    assert len(rows) == 1
    row = rows[0]
    assert row.run_ids == (runs["s0"].id, "short", runs["s1"].id)
    assert len(row.rounds) == 2  # the shorter run limits the row
    accs = np.array([summary_accs(r)[:2] for r in (runs["s0"], short, runs["s1"])])
    assert [s.mean for s in row.rounds] == pytest.approx(accs.mean(0).tolist(), abs=1e-9)
    # A whole store works too, damage included.
    assert compare_table(RunStore(tmp_path))[0].run_ids == ("short",)


def test_csv_header_and_numbers(runs):
    rows = compare_table([runs["s0"], runs["s1"], runs["s2"], runs["byot"]])
    table = list(csv.reader(io.StringIO(compare_rows_to_csv(rows))))
    assert table[0] == ["config", "method", "seeds", "n", "teacher mean", "teacher std", "student 1 mean",
                        "student 1 std", "student 2 mean", "student 2 std"]
    assert len(table) == 3
    kd, byot = table[1], table[2]
    assert kd[:4] == [rows[0].label, "kd", "0 1 2", "3"]
    accs = np.array([summary_accs(runs[f"s{s}"]) for s in range(3)])
    got = np.array([float(c) for c in kd[4:]]).reshape(3, 2)
    np.testing.assert_allclose(got[:, 0], accs.mean(0), atol=5e-5)
    np.testing.assert_allclose(got[:, 1], accs.std(0, ddof=1), atol=5e-5)
    assert byot[1:4] == ["byot", "0", "1"]
    assert float(byot[4]) == pytest.approx(summary_accs(runs["byot"])[0], abs=5e-5)
    assert byot[5] == "0.0000" and byot[6:] == ["", "", "", ""]
    assert compare_rows_to_csv([]) == "config,method,seeds,n\n"


# ---------------------------------------------------------------- agreement

def _by_hand(run: Run, k: int):
    """Independent of sdcore.analysis and engine.predict_logits: per-example argmax in a plain loop."""
    cfg = run.config()
    data = load(cfg.data, seed=cfg.seed)
    preds = {}
    for r in (0, k):
        model = create(cfg.model.arch, num_classes=10, in_channels=1, image_size=8, width=cfg.model.width)
        model.load_state_dict(torch.load(run.path / "rounds" / str(r) / "model.pt", weights_only=True))
        model.eval()
        with torch.no_grad():
            preds[r] = [int(model(x[i:i + 1]).argmax()) for _, x, _ in
                        data.test.batches(50, shuffle=False, augment=False) for i in range(len(x))]
    y = data.test.y.tolist()
    n = len(y)
    agree = 100.0 * sum(a == b for a, b in zip(preds[0], preds[k])) / n
    acc = 100.0 * sum(a == b for a, b in zip(preds[k], y)) / n
    return agree, acc


def test_agreement_matches_an_independent_computation(runs, tmp_path):
    run = copy_run(runs["alpha"], tmp_path, "alpha")
    stats = agreement(run)
    assert [s.round for s in stats] == [1, 2]
    for s in stats:
        agree, acc = _by_hand(run, s.round)
        assert s.agreement == pytest.approx(agree, abs=1e-9)
        assert s.test_acc == pytest.approx(acc, abs=1e-9)
        assert s.test_acc == pytest.approx(summary_accs(run)[s.round], abs=1e-9)
    pred = predictions(run, 2)
    assert pred.dtype == torch.int64 and pred.shape == (len(load(run.config().data, seed=0).test),)
    assert 100.0 * (pred == predictions(run, 0)).double().mean().item() == pytest.approx(stats[1].agreement)


def test_teacher_agrees_with_itself(runs, tmp_path):
    run = copy_run(runs["s1"], tmp_path, "self")
    shutil.copy(run.model_path(0), run.model_path(1))
    first = agreement(run)[0]
    assert first.round == 1 and first.agreement == 100.0
    assert first.test_acc == pytest.approx(summary_accs(run)[0], abs=1e-9)


def record(run: Run, kind: str):
    """The one cache record of ``kind`` in the run's analysis/ (registry format)."""
    (path,) = (run.path / "analysis").glob(f"{kind}-*.json")
    return path


def test_agreement_is_cached_and_recomputed_when_a_round_finishes(runs, tmp_path, monkeypatch):
    run = copy_run(runs["s2"], tmp_path, "cached")
    summary = run.summary().to_dict()
    run.write_summary({**summary, "rounds": summary["rounds"][:2]})  # round 2 not finished yet
    first = agreement(run)
    assert [s.round for s in first] == [1]
    path = record(run, "agreement")
    cache = json.loads(path.read_text())
    assert cache["finished_rounds"] == [0, 1] and cache["result"][0]["agreement"] == first[0].agreement

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although the finished rounds did not change")

    monkeypatch.setattr(compare, "_compute_agreement", fail)
    assert agreement(run) == first
    monkeypatch.undo()

    run.write_summary(summary)  # round 2 finishes: the cache is stale
    second = agreement(run)
    assert [s.round for s in second] == [1, 2] and second[0] == first[0]
    assert json.loads(path.read_text())["finished_rounds"] == [0, 1, 2]
    path.write_text("{damaged")
    assert agreement(run) == second


def test_agreement_is_empty_for_one_round_methods(runs):
    assert agreement(runs["byot"]) == []
    assert not list((runs["byot"].path / "analysis").glob("agreement-*.json"))


# ---------------------------------------------------------------- BYOT exit latency

def _byot_model(run: Run):
    cfg = run.config()
    data = load(cfg.data, seed=cfg.seed)
    model = run.load_model(0, **data.shapes, device=data.device)
    sample = next(data.test.batches(16, shuffle=False, augment=False))[1]
    return model, sample


def test_exit_latency_shape_and_mode(runs):
    model, sample = _byot_model(runs["byot"])
    assert model.num_exits == 3
    model.train()
    ms = exit_latency(model, sample, repeats=3, warmup=1)
    assert len(ms) == model.num_exits and all(t > 0 for t in ms)
    assert model.training
    model.eval()
    exit_latency(model, sample, repeats=1, warmup=0)
    assert not model.training
    with pytest.raises(ValueError):
        exit_latency(model, sample, repeats=0)


def test_exit_i_runs_exactly_sections_up_to_i(runs):
    """Work, not time: each timed call of exit i runs sections 0..i and exit i's head, in eval mode."""
    model, sample = _byot_model(runs["byot"])
    calls: dict[str, int] = {}
    modes = set()

    def counter(name):
        def hook(module, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            modes.add(module.training)
        return hook

    for j, section in enumerate(model.sections):
        section.register_forward_hook(counter(f"section{j}"))
    for j, head in enumerate(model.exit_heads):
        head.register_forward_hook(counter(f"exit{j}"))
    model.fc.register_forward_hook(counter("fc"))
    model.train()
    repeats, warmup = 4, 2
    exit_latency(model, sample, repeats=repeats, warmup=warmup)
    per_exit = repeats + warmup
    n = model.num_exits
    expected = {f"section{j}": per_exit * (n - j) for j in range(n)}  # exits j..n-1 need section j
    expected |= {f"exit{j}": per_exit for j in range(n - 1)} | {"fc": per_exit}
    assert calls == expected
    assert modes == {False}


def test_run_exit_latency_is_cached(runs, tmp_path, monkeypatch):
    run = copy_run(runs["byot"], tmp_path, "byot")
    first = run_exit_latency(run, batch_size=32)
    summary = run.summary().rounds[0]
    assert first["batch_size"] == 32 and first["device"] == "cpu"
    assert len(first["ms"]) == 3 and all(t > 0 for t in first["ms"])
    assert first["test_acc_exits"] == list(summary.exit_accs)
    assert first["test_acc_ensemble"] == summary.ensemble_acc
    assert json.loads(record(run, "exit_latency").read_text())["result"] == first

    measured = []
    real = latency.exit_latency
    monkeypatch.setattr(latency, "exit_latency", lambda *a, **k: measured.append(1) or real(*a, **k))
    assert run_exit_latency(run, batch_size=32) == first and measured == []
    again = run_exit_latency(run, batch_size=8)  # another batch size: measured anew
    assert measured == [1] and again["batch_size"] == 8
    with pytest.raises(RunError, match="BYOT"):
        run_exit_latency(runs["s0"])
