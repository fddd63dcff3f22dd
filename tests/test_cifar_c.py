"""The official CIFAR-10-C files (Hendrycks & Dietterich), faked in their real format beside a fake CIFAR-10 a tiny run
trains on: per-severity accuracy and mCE against the model's predictions computed here on the same arrays, each bad
file one line, one damaged corruption file leaving the others computed, the cache, the CLI and the page."""
import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from sdcore.analysis import registry
from sdcore.analysis.registry import peek
from sdcore.analysis.robustness import (
    CIFAR_C,
    CIFAR_C_EXTRA,
    RobustnessSettings,
    cifar_c_folder,
    run_robustness,
)
from sdcore.config import ConfigError, preset
from sdcore.data import DataError

N_TEST = 20  # fake CIFAR-10 test images; each corruption file holds 5 x N_TEST
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # the published constants
ALL = CIFAR_C + CIFAR_C_EXTRA
CIFAR_C_SETTINGS = RobustnessSettings(source="cifar-c")


@pytest.fixture(scope="module", autouse=True)
def no_md5():
    """torchvision checks the real CIFAR files' md5; fabricated ones cannot match (tests/test_data.py's no_md5)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torchvision.datasets.utils, "check_md5", lambda *a, **k: True)
        yield


def _pickle(path: Path, obj) -> None:
    import pickle

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def write_cifar10(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """A fake cifar-10-batches-py (200 training images, N_TEST test images) whose class is the image's brightness,
    so a tiny net learns it in a few epochs and the corruptions move its predictions; returns the test set (NHWC
    uint8, y)."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"

    def images(y):
        return np.clip(25 * y[:, None, None, None] + rng.integers(0, 30, (len(y), 3, 32, 32)), 0, 255).astype(np.uint8)

    train_y = np.arange(200) % 10
    train_x = images(train_y)
    for k in range(5):  # rows: R plane, G plane, B plane, as in the real batches
        part = slice(40 * k, 40 * k + 40)
        _pickle(folder / f"data_batch_{k + 1}", {"data": train_x[part].reshape(40, -1),
                                                  "labels": [int(v) for v in train_y[part]]})
    test_y = (np.arange(N_TEST) * 3) % 10
    test_x = images(test_y)
    _pickle(folder / "test_batch", {"data": test_x.reshape(N_TEST, -1), "labels": [int(v) for v in test_y]})
    _pickle(folder / "batches.meta", {"label_names": [f"class{k}" for k in range(10)]})
    return test_x.transpose(0, 2, 3, 1).copy(), test_y


def write_cifar_c(root: Path, test_x: np.ndarray, test_y: np.ndarray) -> Path:
    """CIFAR-10-C as released: <name>.npy uint8 [5N, 32, 32, 3], severities 1..5 stacked, each block the test set in
    order (here noise growing with severity; brightness's severity 1 is the clean test set itself), labels.npy
    uint8 [5N] (make_cifar_c.py saves uint8)."""
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True)
    for i, name in enumerate(ALL):
        rng = np.random.default_rng(100 + i)
        blocks = [np.clip(test_x.astype(int) + rng.integers(-40 * s, 40 * s + 1, test_x.shape), 0, 255)
                  for s in range(1, 6)]
        if name == "brightness":
            blocks[0] = test_x
        np.save(folder / f"{name}.npy", np.concatenate(blocks).astype(np.uint8))
    np.save(folder / "labels.npy", np.tile(test_y, 5).astype(np.uint8))
    return folder


@pytest.fixture(scope="module")
def cifar(tmp_path_factory, trained):
    """(run trained on the fake CIFAR-10, the data root holding CIFAR-10-C, test images NHWC, test labels)."""
    root = tmp_path_factory.mktemp("data")
    test_x, test_y = write_cifar10(root)
    write_cifar_c(root, test_x, test_y)
    run = trained(epochs=4, rounds=1, **{"data.name": "cifar10", "data.root": str(root), "data.subset": None,
                                        "data.label_noise": 0.0, "model.width": 0.25, "optim.batch_size": 32})
    return run, root, test_x, test_y


@pytest.fixture(scope="module")
def full(cifar):
    """The result on the intact files (cached in the run)."""
    return run_robustness(cifar[0], CIFAR_C_SETTINGS)


def predictions(run, k: int, images: np.ndarray) -> np.ndarray:
    """Round k's predicted classes for uint8 NHWC ``images``, normalized here with CIFAR-10's published mean/std."""
    model = run.load_model(k, num_classes=10, in_channels=3, image_size=32)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x).argmax(1).numpy()


def copy_folder(cifar, tmp_path) -> Path:
    """A private copy of the intact CIFAR-10-C under tmp_path (the root to pass); returns the folder."""
    shutil.copytree(cifar[1] / "CIFAR-10-C", tmp_path / "CIFAR-10-C")
    return tmp_path / "CIFAR-10-C"


def at(root: Path) -> RobustnessSettings:
    return RobustnessSettings(source="cifar-c", root=str(root))


def test_per_severity_accuracy_and_mce_equal_the_predictions_on_the_same_arrays(cifar, full):
    run, root, test_x, test_y = cifar
    assert [r.round for r in full] == [0, 1]
    for r in full:
        clean = 100.0 * float(np.mean(predictions(run, r.round, test_x) == test_y))
        assert r.clean == pytest.approx(clean, abs=1e-9)
        assert r.clean == pytest.approx(run.summary().rounds[r.round].test_acc, abs=1e-6)
        assert set(r.accuracy) == set(ALL) and r.problems == {} and r.complete and r.source == "cifar-c"
        errors = {}
        for name in ALL:
            images = np.load(root / "CIFAR-10-C" / f"{name}.npy")
            labels = np.load(root / "CIFAR-10-C" / "labels.npy")
            hits = predictions(run, r.round, images) == labels  # all 5N images at once, as AugMix's test_c
            per_severity = [100.0 * float(np.mean(hits[s * N_TEST:(s + 1) * N_TEST])) for s in range(5)]
            assert r.accuracy[name] == pytest.approx(per_severity, abs=1e-9), name
            errors[name] = 100.0 - 100.0 * float(np.mean(hits))
        assert r.errors == pytest.approx(errors, abs=1e-9)
        mce = sum(errors[n] for n in CIFAR_C) / 15  # the extra four stay out
        assert r.mce == pytest.approx(mce, abs=1e-9) and r.mean_corrupted == pytest.approx(100 - mce, abs=1e-9)
        assert r.relative_mce == pytest.approx(mce - (100 - clean), abs=1e-9)
        assert r.accuracy["brightness"][0] == pytest.approx(r.clean)  # severity 1 = the first N rows, unshifted
    assert len({tuple(v) for v in full[0].accuracy.values()}) > 1  # the files are told apart


def test_cached_in_the_run_apart_from_the_synthetic_result(cifar, full, monkeypatch):
    run = cifar[0]
    monkeypatch.setattr("sdcore.analysis.robustness.cifar_c_accuracy", lambda *a, **k: pytest.fail("recomputed"))
    cached = run_robustness(run, CIFAR_C_SETTINGS)
    assert cached == full and list(cached[0].accuracy) == list(ALL)  # the benchmark order, not the JSON's sorted keys
    assert peek(run, "robustness") == (False, None)  # the synthetic corruptions: another record
    records = [json.loads(p.read_text()) for p in (run.path / "analysis").glob("robustness-*.json")]
    assert any(r["settings"] == {"source": "cifar-c", "root": None} and r["version"] == 3 for r in records)


def test_a_changed_file_recomputes_and_a_vanished_folder_keeps_the_result(cifar, tmp_path):
    run, _, test_x, _ = cifar
    folder = copy_folder(cifar, tmp_path)
    first = run_robustness(run, at(tmp_path))
    images = np.load(folder / "fog.npy")
    images[:] = test_x[0]  # every image of every severity the same one
    np.save(folder / "fog.npy", images)
    assert peek(run, "robustness", at(tmp_path)) == (False, None)
    again = run_robustness(run, at(tmp_path))
    pred = predictions(run, 0, test_x[:1])[0]
    expect = 100.0 * float(np.mean(pred == np.load(folder / "labels.npy")[:N_TEST]))
    assert again[0].accuracy["fog"] == pytest.approx([expect] * 5)
    assert again[0].accuracy["snow"] == first[0].accuracy["snow"]
    shutil.rmtree(folder)
    assert peek(run, "robustness", at(tmp_path)) == (True, again)


def damage(path: Path, how: str) -> str:
    """Damage one .npy file; returns words its one-line message must contain."""
    good = np.load(path)
    if how == "missing":
        path.unlink()
        return "is missing"
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[:128 + (len(data) - 128) // 2])  # the header (128 bytes) and half the array
        return "is truncated"
    if how == "not npy":
        path.write_bytes(b"not an array at all" * 50)
        return "is not a .npy file"
    if how == "header":
        path.write_bytes(path.read_bytes()[:20])
        return "damaged .npy header"
    if how == "dtype":
        np.save(path, good.astype(np.float32))
        return "holds float32 values"
    if how == "shape":
        np.save(path, good[:-1])
        return "has shape"
    if how == "pickled":
        np.save(path, np.array([object()] * len(good), dtype=object), allow_pickle=True)
        return "holds object values"
    raise AssertionError(how)


DAMAGES = ("missing", "truncated", "not npy", "header", "dtype", "shape", "pickled")


@pytest.mark.parametrize("how", DAMAGES)
def test_a_bad_labels_file_is_one_line_naming_it_and_nothing_is_cached(cifar, tmp_path, how):
    run = cifar[0]
    folder = copy_folder(cifar, tmp_path)
    words = damage(folder / "labels.npy", how)
    with pytest.raises(DataError) as e:
        run_robustness(run, at(tmp_path))
    line = str(e.value)
    assert "\n" not in line and str(folder / "labels.npy") in line and words in line, line
    assert peek(run, "robustness", at(tmp_path)) == (False, None)


def test_labels_of_another_order_or_dataset_are_refused(cifar, tmp_path):
    run, _, _, test_y = cifar
    folder = copy_folder(cifar, tmp_path)
    labels = np.tile(test_y, 5).astype(np.uint8)
    labels[3 * N_TEST + 7] = (labels[3 * N_TEST + 7] + 1) % 10
    np.save(folder / "labels.npy", labels)
    with pytest.raises(DataError, match=r"labels.npy does not match the run's test labels \(severity 4, image 7"):
        run_robustness(run, at(tmp_path))


def test_a_missing_folder_is_one_line_with_where_and_how(cifar, tmp_path):
    with pytest.raises(DataError) as e:
        run_robustness(cifar[0], at(tmp_path))
    line = str(e.value)
    assert "\n" not in line and f"CIFAR-10-C not found: no folder {tmp_path / 'CIFAR-10-C'}" in line
    assert "zenodo.org/record/2535967" in line


def test_damaged_corruption_files_are_reported_each_and_the_others_still_computed(cifar, full, tmp_path):
    folder = copy_folder(cifar, tmp_path)
    damaged = dict(zip(("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                        "motion_blur", "spatter"), DAMAGES))
    words = {name: damage(folder / f"{name}.npy", how) for name, how in damaged.items()}
    result = run_robustness(cifar[0], at(tmp_path))
    for r, good in zip(result, full):
        assert set(r.problems) == set(damaged)
        for name, line in r.problems.items():
            assert "\n" not in line and str(folder / f"{name}.npy") in line and words[name] in line, line
        assert set(r.accuracy) == set(ALL) - set(damaged)
        assert all(r.accuracy[n] == good.accuracy[n] for n in r.accuracy)  # the others: as on the intact files
        read = [n for n in CIFAR_C if n not in damaged]
        assert not r.complete and r.mce == pytest.approx(sum(good.errors[n] for n in read) / len(read))
        assert r.clean == good.clean


def test_no_readable_benchmark_file_stops_with_one_line(cifar, tmp_path):
    folder = copy_folder(cifar, tmp_path)
    for name in CIFAR_C:
        damage(folder / f"{name}.npy", "truncated")
    with pytest.raises(DataError, match=r"no corruption file could be read; .*gaussian_noise.npy is truncated"):
        run_robustness(cifar[0], at(tmp_path))
    for name in CIFAR_C:
        (folder / f"{name}.npy").unlink()
    with pytest.raises(DataError, match="none of the 15 corruption files"):
        run_robustness(cifar[0], at(tmp_path))


def test_the_root_may_be_the_cifar_10_c_folder_itself(cifar, full):
    assert run_robustness(cifar[0], at(cifar[1] / "CIFAR-10-C")) == full


def test_folders_per_dataset_and_a_run_on_other_data_is_refused(tmp_path):
    cfg = preset("demo")
    with pytest.raises(ConfigError, match="^CIFAR-10-C needs a run trained on cifar10 .*trained on digits$"):
        cifar_c_folder(cfg, CIFAR_C_SETTINGS)
    c100 = cfg.replace(**{"data.name": "cifar100", "data.root": str(tmp_path)})
    found = cifar_c_folder(c100, CIFAR_C_SETTINGS)
    assert found.title == "CIFAR-100-C" and found.path == tmp_path / "CIFAR-100-C"
    assert found.problem().startswith(f"CIFAR-100-C not found: no folder {tmp_path / 'CIFAR-100-C'}")
    assert "zenodo.org/record/3555552" in found.problem()
    (tmp_path / "CIFAR-100-C").mkdir()
    np.save(tmp_path / "CIFAR-100-C" / "labels.npy", np.zeros(5, np.uint8))
    np.save(tmp_path / "CIFAR-100-C" / "fog.npy", np.zeros(5, np.uint8))
    found = cifar_c_folder(c100, CIFAR_C_SETTINGS)
    assert found.present == ("fog",) and found.labels and found.problem() is None
    assert "1 of the 15 corruption files (+0 of 4 extra); missing: gaussian_noise.npy" in found.describe()


@pytest.mark.parametrize("settings, words", [
    (RobustnessSettings(source="imagenet-c"), "robustness source must be one of synthetic, cifar-c"),
    (RobustnessSettings(root="/data"), "root applies only to source='cifar-c'"),
    (RobustnessSettings(source="cifar-c", root=" "), "root must be a folder path"),
])
def test_bad_settings_are_one_line(settings, words):
    with pytest.raises(ConfigError, match=words):
        settings.validate()


def test_cli_prints_mce_per_round_and_never_the_hessian(cifar, full, monkeypatch):
    import contextlib
    import io

    from sdcore import cli

    run = cifar[0]
    monkeypatch.setattr(cli, "analyze", lambda *a, **k: pytest.fail("the Hessian default ran"))

    def main(*args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["analyze", run.id, "--runs-dir", str(run.path.parent), *args])
        return code, out.getvalue(), err.getvalue()

    code, out, err = main("--cifar-c")
    assert code == 0, err
    rows = {line.split("  ")[0].strip(): line.split() for line in out.splitlines()}
    assert rows["mCE %"][-2:] == [f"{r.mce:.2f}" for r in full]
    assert rows["relative mCE %"][-2:] == [f"{r.relative_mce:.2f}" for r in full]
    assert rows["fog err %"][-2:] == [f"{r.errors['fog']:.2f}" for r in full]
    assert rows["spatter * err %"][-2:] == [f"{r.errors['spatter']:.2f}" for r in full]
    assert "teacher (round 0)" in out and "student 1" in out and "results cached in" in out
    code, out, err = main("--cifar-c", "--rounds", "1", "--json")
    assert code == 0, err
    (section,) = json.loads(out)["analyses"]["robustness"]
    assert section["round"] == 1 and section["mce"] == pytest.approx(full[1].mce) and section["complete"]
    code, out, err = main("--robustness", "--cifar-c", str(run.path / "nowhere"))
    assert code == 2 and err.startswith("error: CIFAR-10-C not found: no folder ") and len(err.splitlines()) == 1


def test_mce_is_the_unnormalized_mean_of_the_fifteen_errors():
    from sdcore.analysis.robustness import RoundRobustness

    acc = {n: [100.0 - i] * 5 for i, n in enumerate(CIFAR_C)} | {n: [0.0] * 5 for n in CIFAR_C_EXTRA}
    r = RoundRobustness(round=0, clean=95.0, accuracy=acc, mean_corrupted=100 - 7.0, source="cifar-c")
    assert r.errors["gaussian_noise"] == 0.0 and r.errors["jpeg_compression"] == 14.0
    assert math.isclose(r.mce, sum(range(15)) / 15) and math.isclose(r.relative_mce, 7.0 - 5.0) and r.complete
    synthetic = RoundRobustness(round=0, clean=95.0, accuracy={}, mean_corrupted=80.0)
    assert synthetic.mce is None and synthetic.relative_mce is None and not synthetic.complete


def test_the_default_is_the_synthetic_source_and_version_2_rows_still_read():
    entry = registry.get("robustness")
    assert entry.version == 3 and entry.settings().validate() == RobustnessSettings(source="synthetic", root=None)
    old = {"round": 0, "clean": 90.0, "accuracy": {"contrast": [80.0] * 5}, "mean_corrupted": 80.0}
    (r,) = entry.load([old])
    assert r.source == "synthetic" and r.problems == {} and r.mce is None


@pytest.mark.slow  # ~9 s: the app, two background jobs
def test_the_page_offers_the_official_files_and_computes_them_in_the_background(cifar, full, tmp_path, monkeypatch):
    import threading
    import time

    from streamlit.testing.v1 import AppTest

    from app import ui

    def in_a_job(*args, **kwargs):
        assert threading.current_thread().name.startswith("sdlab-worker"), "computed in the page's script thread"
        return entry.compute(*args, **kwargs)

    entry = registry.get("robustness")
    monkeypatch.setitem(registry._KINDS, "robustness", dataclasses.replace(entry, compute=in_a_job))
    run = cifar[0]
    shutil.copytree(run.path, tmp_path / run.id, ignore=shutil.ignore_patterns("analysis"))  # nothing cached
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(tmp_path))

    def settle(at):  # AppTest does not fire the page's run_every fragment: wait for the jobs, then rerun
        deadline = time.monotonic() + 120
        while any(not h.done for h in ui.manager().jobs()) or any(i.value.startswith("Computing ") for i in at.info):
            for h in ui.manager().jobs():
                assert h.wait(max(0.1, deadline - time.monotonic()))
            at.run()
            assert time.monotonic() < deadline
        assert not at.exception, [e.value for e in at.exception]
        return at

    app = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
    at = settle(AppTest.from_file(app, default_timeout=120).run().switch_page("../pages/robustness.py").run())
    assert "mean corrupted" in at.dataframe[0].value.columns  # the synthetic corruptions by default
    at.radio(key="robustness_source").set_value("cifar-c").run()
    assert any(str(cifar[1] / "CIFAR-10-C") in c.value and "15 of the 15 corruption files (+4 of 4 extra); "
               "nothing missing" in c.value for c in at.caption), [c.value for c in at.caption]
    at = settle(at)
    table = at.dataframe[0].value
    assert table["mCE"].tolist() == pytest.approx([r.mce for r in full])
    assert table["relative mCE"].tolist() == pytest.approx([r.relative_mce for r in full])
    assert table["fog"].tolist() == pytest.approx([r.errors["fog"] for r in full]) and "spatter *" in table
    assert len(at.get("plotly_chart")) == 3  # per-corruption errors, mCE per round, ID vs OOD (one run: no α plot)
    at.text_input(key="robustness_cifar_c_root").set_value(str(tmp_path / "nowhere")).run()
    assert not at.exception and any("CIFAR-10-C not found: no folder" in e.value for e in at.error)
    assert not at.dataframe and all(h.done for h in ui.manager().jobs())  # nothing queued for a missing folder
    ui.manager().shutdown(timeout=60)


def test_the_figures_show_each_rounds_errors_and_the_mce(full):
    from sdcore.plots import corruption_errors, mce_by_round

    damaged = [dataclasses.replace(r, accuracy={n: v for n, v in r.accuracy.items() if n != "fog"}) for r in full]
    fig = corruption_errors(damaged, method="kd", extra=CIFAR_C_EXTRA)
    assert [t.name for t in fig.data] == ["teacher (round 0)", "student 1"]
    x = list(fig.data[0].x)
    assert x[0] == "clean" and "spatter *" in x and "snow" in x and "fog" not in x  # a file not read has no bar
    for t, r in zip(fig.data, full):
        assert t.y[0] == pytest.approx(100 - r.clean) and t.y[x.index("snow")] == pytest.approx(r.errors["snow"])
    fig = mce_by_round([("a", "kd", full)])
    assert list(fig.data[0].y) == pytest.approx([r.mce for r in full])
    assert list(fig.data[1].y) == pytest.approx([100 - r.clean for r in full])
