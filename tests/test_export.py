"""The TensorBoard export (sdcore/export.py): what TensorBoard's own readers get back from the event files is
exactly metrics.jsonl (every number, at step = epoch, one TensorBoard run per round), the HParams are the run's
config, a re-export replaces and never duplicates, a sweep exports every trial, and a missing tensorboard or a
damaged run is one line."""
from __future__ import annotations

import json
import math
import shutil
import sys

import numpy as np
import pytest

from sdcore import sweep as sw
from sdcore.config import preset
from sdcore.export import MISSING, export_sweep_tensorboard, export_tensorboard, hparams_of, scalar_tags
from sdcore.runs import RunError, RunStore, flat_record
from tests.helpers import in_process

TINY = {"epochs": 2, "data.subset": 200, "model.width": 0.5}


cli_run = in_process


@pytest.fixture(scope="module")
def kd_run(trained):
    return trained("demo", rounds=1, **TINY)


@pytest.fixture(scope="module")
def exits_run(trained):
    return trained("demo-pskd-byot-dmfl", **TINY)


@pytest.fixture(params=["kd_run", "exits_run"])
def any_run(request):
    return request.getfixturevalue(request.param)


def read_back(logdir):
    """{run: {tag: [(step, value)]}} and {run: hparams} as TensorBoard's own reader gets them (its EventMultiplexer,
    whose Scalars are the float32 scalar events that TensorBoard's default, Rust-based loader also reads: it drops
    float64 tensors) and the HParams plugin's own parser."""
    from tensorboard.backend.event_processing import event_accumulator, event_multiplexer
    from tensorboard.plugins.hparams import metadata

    multiplexer = event_multiplexer.EventMultiplexer(size_guidance={event_accumulator.SCALARS: 0})
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    series = {run: {tag: [(e.step, e.value) for e in multiplexer.Scalars(run, tag)] for tag in tags["scalars"]}
              for run, tags in multiplexer.Runs().items()}
    hparams = {}
    for run, tags in multiplexer.PluginRunToTagToContent(metadata.PLUGIN_NAME).items():
        info = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
        hparams[run] = {k: getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}
    return series, hparams


def f32(x: float) -> float:
    """``x`` rounded to float32, as a TensorBoard scalar holds it."""
    return float(np.float32(x))


def numbers(record):
    """Every number of a metrics record but its round and epoch, by flat_record's column (independent of the tags),
    rounded to float32."""
    return sorted(f32(v) for k, v in flat_record(record).items()
                  if k not in ("round", "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool))


def test_scalar_tags_name_every_number_of_a_record():
    record = {"round": 1, "epoch": 3, "lr": 0.1, "epoch_time": 2.0, "sharpness": 40.0, "train_loss": 1.5,
              "train_parts": {"ce": 1.0, "byot_distill": 0.5}, "grad_abs": {"sections.0.weight": 0.01},
              "val_acc": 90.0, "test_acc": 88.0, "test_acc_exits": [70.0, 80.0, 88.0], "val_acc_peers": [90.0, 85.0],
              "test_loss": float("nan"), "note": "text", "flag": True, "none": None, "lists": [1, 2]}
    assert scalar_tags(record) == {
        "lr": 0.1, "epoch_time": 2.0, "sharpness": 40.0, "train/loss": 1.5, "train/parts/ce": 1.0,
        "train/parts/byot_distill": 0.5, "grad_abs/sections.0.weight": 0.01, "val/acc": 90.0, "test/acc": 88.0,
        "exit_1/test_acc": 70.0, "exit_2/test_acc": 80.0, "exit_3/test_acc": 88.0, "peer_1/val_acc": 90.0,
        "peer_2/val_acc": 85.0, "test/loss": pytest.approx(float("nan"), nan_ok=True), "lists/0": 1.0,
        "lists/1": 2.0}


def test_tensorboard_reads_back_exactly_the_numbers_of_metrics_jsonl(any_run, tmp_path):
    run = any_run
    folders = export_tensorboard(run, tmp_path / "tb")
    cfg, metrics, summary = run.config(), run.metrics(), run.summary()
    expected = ["round-0-teacher", "round-1-student"] if cfg.method == "kd" else ["round-0"]
    assert [f.relative_to(tmp_path / "tb").as_posix() for f in folders] == [f"{run.id}/{n}" for n in expected]
    series, hparams = read_back(tmp_path / "tb")
    assert sorted(series) == sorted(f"{run.id}/{n}" for n in expected)
    for k, name in enumerate(expected):
        got = series[f"{run.id}/{name}"]
        records = [m for m in metrics if m["round"] == k]
        assert len(records) == cfg.epochs
        for m in records:
            at_epoch = {tag: v for tag, points in got.items() for step, v in points if step == m["epoch"]
                        and tag != "summary/test_acc"}
            assert sorted(at_epoch.values()) == numbers(m)  # every number, nothing else
            assert at_epoch == {tag: f32(v) for tag, v in scalar_tags(m).items()}
            assert at_epoch["test/acc"] == f32(m["test_acc"]) and at_epoch["val/loss"] == f32(m["val_loss"])
            assert at_epoch["lr"] == f32(m["lr"]) and at_epoch["train/loss"] == f32(m["train_loss"])
            if cfg.model.exits:
                assert [at_epoch[f"exit_{i + 1}/test_acc"] for i in range(3)] == [f32(a) for a in m["test_acc_exits"]]
                assert at_epoch["train/parts/byot_distill"] == f32(m["train_parts"]["byot_distill"])
        steps = {step for points in got.values() for step, _ in points}
        assert steps == {m["epoch"] for m in records}
        kept = summary.rounds[k]
        assert got["summary/test_acc"] == [(kept.best_epoch, f32(kept.test_acc))]
        hp = hparams[f"{run.id}/{name}"]
        assert hp == hparams_of(cfg, k)
        assert (hp["round"], hp["method"], hp["alpha"], hp["temperature"], hp["model.arch"], hp["data.name"],
                hp["optim.lr"], hp["model.exits"]) == (k, cfg.method, cfg.alpha, cfg.temperature, cfg.model.arch,
                                                       cfg.data.name, cfg.optim.lr, cfg.model.exits)
        assert hp["optim.step_milestones"] == "[0.5, 0.75]" and "model.teacher_weights" not in hp  # None: left out


def test_exporting_again_replaces_the_export_and_never_touches_other_folders(kd_run, tmp_path):
    tb = tmp_path / "tb"
    export_tensorboard(kd_run, tb)
    first, _ = read_back(tb)
    export_tensorboard(kd_run, tb)
    again, _ = read_back(tb)
    assert again == first  # no duplicated points
    events = sorted(p.relative_to(tb).parent.as_posix() for p in tb.rglob("events.out.tfevents.*"))
    assert events == [f"{kd_run.id}/round-0-teacher", f"{kd_run.id}/round-1-student"]
    assert [p.name for p in tb.iterdir()] == [kd_run.id]  # no temporary folder left
    mine = tmp_path / "mine"
    (mine / kd_run.id).mkdir(parents=True)
    (mine / kd_run.id / "notes.txt").write_text("keep")
    with pytest.raises(RunError, match="is not an sdlab TensorBoard export"):
        export_tensorboard(kd_run, mine)
    assert (mine / kd_run.id / "notes.txt").read_text() == "keep" and len(list(mine.iterdir())) == 1


def test_a_sweep_exports_every_trial_that_ran_and_names_the_others(tmp_path):
    store = RunStore(tmp_path / "runs")
    spec = sw.SweepSpec.build(preset("demo").replace(epochs=1, rounds=1, **{"data.subset": 200,
                                                                             "model.width": 0.5}), ["seed=0,1,2"])
    sweep = sw.create_sweep(store, spec)
    done = [sw.run_trial(str(store.root), sweep.id, i, spec.trial_config(i).to_dict(), None, 1) for i in (0, 2)]
    assert [d["status"] for d in done] == ["done", "done"]
    exported = export_sweep_tensorboard(store, sweep, tmp_path / "tb")
    assert exported.skipped == ["trial 1 (seed=1): not started"]
    assert [f.relative_to(tmp_path / "tb").as_posix() for f in exported.folders] == [
        f"{sweep.id}/{d['run']}/{n}" for d in done for n in ("round-0-teacher", "round-1-student")]
    series, hparams = read_back(tmp_path / "tb")
    for d, seed in zip(done, (0, 2)):
        run = store.get(d["run"])
        record = next(m for m in run.metrics() if m["round"] == 1)
        assert series[f"{sweep.id}/{run.id}/round-1-student"]["test/acc"] == [(1, f32(record["test_acc"]))]
        assert hparams[f"{sweep.id}/{run.id}/round-0-teacher"]["seed"] == seed

    code, out, err = cli_run("export", sweep.id, "--tensorboard", str(tmp_path / "tb"), "--runs-dir",
                             str(store.root))
    assert code == 0 and err == "skipped trial 1 (seed=1): not started\n"
    assert out.splitlines() == [str(f) for f in exported.folders] + [
        f"open them with: tensorboard --logdir {tmp_path / 'tb'}"]
    assert read_back(tmp_path / "tb")[0] == series


def test_the_cli_exports_a_run_and_refuses_bad_input_in_one_line(kd_run, tmp_path):
    runs = str(kd_run.path.parent)
    code, out, err = cli_run("export", kd_run.id, "--tensorboard", str(tmp_path / "tb"), "--runs-dir", runs)
    assert code == 0 and err == ""
    assert out.splitlines()[:2] == [str(tmp_path / "tb" / kd_run.id / n) for n in ("round-0-teacher",
                                                                                    "round-1-student")]
    for args, words in [(["nope", "--tensorboard", str(tmp_path / "x")], "no run or sweep 'nope'"),
                        ([kd_run.id, "--tensorboard", " "], "--tensorboard must be a folder path"),
                        ([kd_run.id, "--tensorboard", str(kd_run.path / "config.json")], "is a file, not a folder"),
                        ([kd_run.id], "the following arguments are required: --tensorboard")]:
        code, out, err = cli_run("export", *args, "--runs-dir", runs)
        assert code == 2 and out == "" and len(err.splitlines()) == 1 and words in err, (args, err)
    assert not (tmp_path / "x").exists()


def test_a_damaged_run_is_refused_in_one_line_naming_the_file(kd_run, tmp_path):
    copy = tmp_path / "runs" / kd_run.id
    shutil.copytree(kd_run.path, copy)
    lines = (copy / "metrics.jsonl").read_text().splitlines(keepends=True)
    (copy / "metrics.jsonl").write_text(lines[0] + lines[1][:40])  # a write cut short in line 2
    code, out, err = cli_run("export", kd_run.id, "--tensorboard", str(tmp_path / "tb"), "--runs-dir",
                             str(tmp_path / "runs"))
    assert (code, out) == (2, "")
    assert err == f"error: cannot export run {kd_run.id}: metrics.jsonl: line 2 is truncated or not JSON\n"
    assert not (tmp_path / "tb").exists()


def test_without_tensorboard_the_export_says_how_to_get_it_in_one_line(kd_run, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "tensorboard" or m.startswith("torch.utils.tensorboard")]:
        monkeypatch.setitem(sys.modules, name, None)  # an import of any of them now fails, as if not installed
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    code, out, err = cli_run("export", kd_run.id, "--tensorboard", str(tmp_path / "tb"), "--runs-dir",
                             str(kd_run.path.parent))
    assert (code, out, err) == (2, "", f"error: {MISSING}\n")
    assert MISSING == "the TensorBoard export needs `pip install tensorboard` (requirements-extras.txt)"
    assert not (tmp_path / "tb").exists()


def test_non_finite_metrics_stay_non_finite_in_tensorboard(kd_run, tmp_path):
    copy = tmp_path / "runs" / kd_run.id
    shutil.copytree(kd_run.path, copy)
    run = RunStore(tmp_path / "runs").get(kd_run.id)
    metrics = run.metrics()
    metrics[0].update(sharpness=float("inf"), val_loss=float("nan"))  # Python's json writes and reads them
    (copy / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    export_tensorboard(run, tmp_path / "tb")
    got = read_back(tmp_path / "tb")[0][f"{run.id}/round-0-teacher"]
    assert got["sharpness"] == [(1, math.inf)] and math.isnan(dict(got["val/loss"])[1])


def test_an_unfinished_round_is_exported_with_its_epochs_and_no_kept_score(kd_run, tmp_path):
    copy = tmp_path / "runs" / kd_run.id
    shutil.copytree(kd_run.path, copy)
    run = RunStore(tmp_path / "runs").get(kd_run.id)
    summary = run.summary().to_dict()
    run.write_summary({**summary, "complete": False, "rounds": summary["rounds"][:1]})  # round 1 still training
    export_tensorboard(run, tmp_path / "tb")
    series, hparams = read_back(tmp_path / "tb")
    student = series[f"{run.id}/round-1-student"]
    assert "summary/test_acc" not in student and len(student["test/acc"]) == run.config().epochs
    assert "summary/test_acc" in series[f"{run.id}/round-0-teacher"]
    assert hparams[f"{run.id}/round-1-student"]["round"] == 1
