"""data.name=tensors: a person's own .npz / .pt of train/test arrays, read, checked, normalized and trained on;
every bad file is one DataError line naming the file and the key."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sdcore import data as sddata
from sdcore.config import DataConfig, preset
from sdcore.data import DataError, check_available, load, train_split_size
from sdcore.training import train
from tests.helpers import in_process

N_TRAIN, N_TEST = 200, 60


def arrays(seed: int = 0, layout: str = "nhwc") -> dict[str, np.ndarray]:
    """200 + 60 noisy 8x8 RGB uint8 images in ``layout``, 3 classes (class k: channel k brighter, so a net can
    learn them), every class in both splits."""
    rng = np.random.default_rng(seed)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 3
        x = rng.integers(0, 160, (n, 8, 8, 3))
        x[np.arange(n), :, :, y] += 90
        x = x.astype(np.uint8)
        return (x if layout == "nhwc" else x.transpose(0, 3, 1, 2)), y

    (x_train, y_train), (x_test, y_test) = images(N_TRAIN), images(N_TEST)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def save(path, d: dict) -> str:
    """d as a .npz (np.savez) or a .pt (torch.save of tensors; lists and strings as they are), by path's suffix."""
    if str(path).endswith(".npz"):
        np.savez(path, **d)
    else:
        torch.save({k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in d.items()}, path)
    return str(path)


def cfg_for(path, **kw) -> DataConfig:
    return DataConfig(name="tensors", file=str(path), **kw)


@pytest.fixture
def npz(tmp_path) -> str:
    return save(tmp_path / "mine.npz", {**arrays(), "classes": np.array(["cat", "dog", "eel"])})


# ---------------------------------------------------------------- reading

def test_npz_loads_exact_pixels_labels_and_class_names(npz):
    b = load(cfg_for(npz), seed=0)
    d = arrays()
    assert b.shapes == dict(num_classes=3, in_channels=3, image_size=8) and b.class_names == ["cat", "dog", "eel"]
    assert b.test.x.dtype == torch.uint8  # resident as uint8, like CIFAR
    assert torch.equal(b.test.x, torch.from_numpy(d["x_test"]).permute(0, 3, 1, 2))  # NHWC -> NCHW
    assert b.test.y.tolist() == d["y_test"].tolist()
    assert (len(b.train), len(b.val)) == (N_TRAIN - 20, 20)  # data.val_fraction=0.1 carved from x_train
    pool = {r.numpy().tobytes(): int(y) for r, y in zip(torch.from_numpy(d["x_train"]).permute(0, 3, 1, 2),
                                                        d["y_train"])}
    for s in (b.train, b.val):
        assert all(pool[r.numpy().tobytes()] == int(y) for r, y in zip(s.x, s.y))


def test_normalization_is_the_training_splits_per_channel_mean_and_std(npz):
    t = load(cfg_for(npz), seed=0).train.transform
    x = arrays()["x_train"] / 255.0  # [N, H, W, C]: numpy's own per-channel statistics, population std
    np.testing.assert_allclose(t.mean.flatten().numpy(), x.mean((0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(t.std.flatten().numpy(), x.std((0, 1, 2)), rtol=1e-6)


def test_float_statistics_keep_their_precision_far_from_zero(tmp_path):
    rng = np.random.default_rng(2)
    d = arrays()
    d["x_train"] = (1000 + rng.normal(0, 0.1, (N_TRAIN, 8, 8, 3))).astype(np.float32)
    d["x_test"] = d["x_train"][:N_TEST]
    t = load(cfg_for(save(tmp_path / "far.npz", d)), seed=0).train.transform
    x = d["x_train"].astype(np.float64)
    np.testing.assert_allclose(t.std.flatten().numpy(), x.std((0, 1, 2)), rtol=1e-5)


def test_a_constant_channel_is_not_divided_by_zero(tmp_path):
    d = arrays()
    d["x_train"][..., 1] = 7
    b = load(cfg_for(save(tmp_path / "c.npz", d)), seed=0)
    assert b.train.transform.std.flatten()[1] == 1.0
    _, x, _ = next(b.train.batches(50, shuffle=False, augment=False))
    assert torch.isfinite(x).all() and (x[:, 1] == 0).all()


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "nhwc-float", "nhw", "nl", "ambiguous-nchw", "ambiguous-nhwc"])
def test_every_layout_reads_as_nchw(layout, tmp_path):
    rng = np.random.default_rng(1)
    nchw = rng.integers(0, 256, (30, 3, 3, 3) if layout.startswith("ambiguous") else (30, 3, 6, 5), dtype=np.uint8)
    y = np.arange(30) % 2
    extra = {}
    if layout in ("nchw", "ambiguous-nchw"):
        x = nchw
    elif layout in ("nhwc", "ambiguous-nhwc", "nhwc-float"):
        x = nchw.transpose(0, 2, 3, 1)
    elif layout == "nhw":
        nchw = nchw[:, :1]
        x = nchw[:, 0]
    else:  # [N, L] sequences -> [N, 1, 1, L]
        nchw = nchw[:, :1, :1]
        x = nchw[:, 0, 0]
    if layout.startswith("ambiguous"):
        extra["layout"] = np.array(layout.split("-")[1])
    if layout == "nhwc-float":
        x, nchw = x / 255.0, torch.from_numpy(nchw / 255.0).float()
    else:
        nchw = torch.from_numpy(nchw)
    path = save(tmp_path / f"{layout}.npz", {"x_train": x, "y_train": y, "x_test": x[:5], "y_test": y[:5], **extra})
    b = load(cfg_for(path, val_fraction=0.0), seed=0)
    assert torch.equal(b.test.x, nchw[:5])
    assert b.in_channels == nchw.shape[1] and b.image_size == max(nchw.shape[2:])


def test_pt_reads_the_same_as_npz(npz, tmp_path):
    pt = save(tmp_path / "mine.pt", {**arrays(), "classes": ["cat", "dog", "eel"]})
    a, b = load(cfg_for(npz), seed=3), load(cfg_for(pt), seed=3)
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(a, s).x, getattr(b, s).x) and torch.equal(getattr(a, s).y, getattr(b, s).y)
    assert a.class_names == b.class_names and torch.equal(a.train.transform.std, b.train.transform.std)


def test_float_labels_holding_whole_numbers_and_column_labels_are_accepted(tmp_path):
    d = arrays()
    d["y_train"], d["y_test"] = d["y_train"].astype(np.float32), d["y_test"][:, None]
    b = load(cfg_for(save(tmp_path / "f.npz", d)), seed=0)
    assert b.test.y.tolist() == arrays()["y_test"].tolist() and b.class_names == ["0", "1", "2"]


def test_augmentation_crops_but_never_flips(npz):
    """A person's own classes may not survive a mirror image: crop only, shifts of at most size // 8 = 1."""
    t = load(cfg_for(npz, augment=True), seed=0).train.transform
    assert (t.pad, t.flip) == (1, False)


def test_sizes_are_known_from_a_npz_header_not_from_a_pt(npz, tmp_path):
    assert train_split_size(cfg_for(npz)) == N_TRAIN - 20 == len(load(cfg_for(npz), seed=0).train)
    assert train_split_size(cfg_for(save(tmp_path / "mine.pt", arrays()))) is None
    assert train_split_size(cfg_for(tmp_path / "absent.npz")) is None  # check_available says why
    with pytest.raises(DataError, match="data.subset=500 exceeds the 180 training examples of tensors"):
        check_available(cfg_for(npz, subset=500))


def test_imagenet_normalization_needs_three_channels(tmp_path):
    d = {k: v[..., 0] if k.startswith("x") else v for k, v in arrays().items()}  # [N, H, W] grayscale
    with pytest.raises(DataError, match="needs 3-channel images; tensors has 1"):
        load(cfg_for(save(tmp_path / "g.npz", d), normalize="imagenet"), seed=0)
    assert load(cfg_for(save(tmp_path / "rgb.npz", arrays()), normalize="imagenet"), seed=0).in_channels == 3


# ---------------------------------------------------------------- bad files: one line naming the file and the key

def _write_bad(case: str, tmp_path):
    """(path, key the message names or None, a fragment of the message) for one bad file."""
    d = arrays()
    npz = lambda **changes: save(tmp_path / "bad.npz", {**d, **changes})
    if case == "missing":
        return str(tmp_path / "absent.npz"), None, "is missing"
    if case == "folder":
        (tmp_path / "dir.npz").mkdir()
        return str(tmp_path / "dir.npz"), None, "is a folder, not a file"
    if case == "suffix":
        (tmp_path / "data.csv").write_text("1,2,3\n")
        return str(tmp_path / "data.csv"), None, "is not a .npz or .pt file"
    if case == "truncated-npz":
        p = npz()
        raw = open(p, "rb").read()
        open(p, "wb").write(raw[: len(raw) // 2])
        return p, None, "is damaged or not a .npz archive"
    if case == "garbage-npz":
        (tmp_path / "bad.npz").write_bytes(b"this is not an archive" * 10)
        return str(tmp_path / "bad.npz"), None, "is damaged or not a .npz archive"
    if case == "empty-npz":
        (tmp_path / "bad.npz").write_bytes(b"")
        return str(tmp_path / "bad.npz"), None, "is damaged or not a .npz archive"
    if case == "single-array":
        with open(tmp_path / "bad.npz", "wb") as f:
            np.save(f, d["x_train"])
        return str(tmp_path / "bad.npz"), None, "holds a single array (np.save)"
    if case == "bad-crc":
        p = npz()
        raw = bytearray(open(p, "rb").read())
        at = raw.index(b"x_test.npy") + 200  # inside x_test's stored bytes, past its .npy header
        raw[at] ^= 0xFF
        open(p, "wb").write(bytes(raw))
        return p, "x_test", "cannot be read (Bad CRC-32"
    if case == "missing-key":
        p = str(tmp_path / "bad.npz")
        np.savez(p, **{k: v for k, v in d.items() if k != "y_test"})
        return p, "y_test", "has no y_test"
    if case == "pickled":
        return npz(x_train=np.array([{"a": 1}] * N_TRAIN, dtype=object)), "x_train", "has dtype object"
    if case == "int-images":
        return npz(x_train=d["x_train"].astype(np.int32)), "x_train", "has dtype int; expected uint8"
    if case == "5d-images":
        return npz(x_train=d["x_train"][:, None]), "x_train", "has shape [200, 1, 8, 8, 3]; expected"
    if case == "no-examples":
        return npz(x_test=d["x_test"][:0], y_test=d["y_test"][:0]), "x_test", "holds no examples"
    if case == "ambiguous":
        return npz(x_train=d["x_train"][:, :3, :, :], x_test=d["x_test"][:, :3]), "x_train", \
            "channels first or last is ambiguous; add layout='nchw'"
    if case == "neither-layout":
        return npz(x_train=d["x_train"][..., :2], x_test=d["x_test"][..., :2]), "x_train", \
            "neither axis 1 nor axis 3 has 1 or 3 entries"
    if case == "bad-layout":
        return npz(layout=np.array("hwc")), "layout", "is 'hwc'; expected 'nchw' or 'nhwc'"
    if case == "count-mismatch":
        return npz(y_train=d["y_train"][:150]), "y_train", "has 150 labels but x_train has 200 examples"
    if case == "label-shape":
        return npz(y_test=np.stack([d["y_test"]] * 2, 1)), "y_test", "has shape [60, 2]; expected [N] labels"
    if case == "fractional-label":
        y = d["y_train"].astype(float)
        y[7] = 0.5
        return npz(y_train=y), "y_train", "holds 0.5 at position 7; expected whole class numbers"
    if case == "negative-label":
        y = d["y_test"].copy()
        y[4] = -1
        return npz(y_test=y), "y_test", "holds -1 at position 4"
    if case == "huge-label":
        y = d["y_train"].copy()
        y[3] = 10**9
        return npz(y_train=y), "y_train", "holds 1e+09 at position 3"
    if case == "nan":
        x = d["x_train"] / 255.0
        x[11, 2, 3, 0] = np.nan
        return npz(x_train=x, x_test=d["x_test"] / 255.0), "x_train", "holds NaN or infinite values (example 11"
    if case == "float64-overflow":
        x = d["x_test"] * 1e300
        return npz(x_train=d["x_train"] / 1.0, x_test=x), "x_test", "holds NaN or infinite values"
    if case == "test-class-unseen":
        y = d["y_test"].copy()
        y[0] = 3
        return npz(y_test=y), "y_test", "has class 3, which no y_train example has"
    if case == "one-class":
        return npz(y_train=np.zeros(N_TRAIN, dtype=int), y_test=np.zeros(N_TEST, dtype=int)), "y_train", \
            "has only class 0; at least 2 classes are needed"
    if case == "few-classes":
        return npz(classes=np.array(["cat", "dog"])), "classes", "names 2 classes but y_train has label 2"
    if case == "twice-classes":
        return npz(classes=np.array(["cat", "dog", "cat"])), "classes", "names 'cat' twice"
    if case == "numeric-classes":
        return npz(classes=np.arange(3)), "classes", "must be a list of class names"
    if case == "size-mismatch":
        return npz(x_test=d["x_test"][:, :6, :6]), "x_test", "has shape [60, 6, 6, 3] but x_train [200, 8, 8, 3]"
    if case == "dtype-mismatch":
        return npz(x_test=d["x_test"] / 255.0), "x_test", "is float but x_train is uint8"
    if case == "pt-not-dict":
        torch.save([torch.zeros(2)], tmp_path / "bad.pt")
        return str(tmp_path / "bad.pt"), None, "holds a list, not a dict"
    if case == "pt-numpy":
        torch.save(d, tmp_path / "bad.pt")
        return str(tmp_path / "bad.pt"), None, "torch.load(weights_only=True) refuses (numpy arrays"
    if case == "pt-pickle":
        (tmp_path / "bad.pt").write_bytes(pickle.dumps({"x_train": print}, protocol=2))
        return str(tmp_path / "bad.pt"), None, "torch.load(weights_only=True) refuses"
    if case == "pt-damaged":
        save(tmp_path / "bad.pt", d)
        raw = (tmp_path / "bad.pt").read_bytes()
        (tmp_path / "bad.pt").write_bytes(raw[: len(raw) // 3])
        return str(tmp_path / "bad.pt"), None, "is damaged or not a PyTorch file"
    if case == "pt-not-tensor":
        save(tmp_path / "bad.pt", {**d, "y_test": [0, 1, 2]})
        return str(tmp_path / "bad.pt"), "y_test", "is a list, not a tensor"
    raise AssertionError(case)


BAD = ["missing", "folder", "suffix", "truncated-npz", "garbage-npz", "empty-npz", "single-array", "bad-crc",
       "missing-key", "pickled", "int-images", "5d-images", "no-examples", "ambiguous", "neither-layout",
       "bad-layout", "count-mismatch", "label-shape", "fractional-label", "negative-label", "huge-label", "nan",
       "float64-overflow", "test-class-unseen", "one-class", "few-classes", "twice-classes", "numeric-classes",
       "size-mismatch", "dtype-mismatch", "pt-not-dict", "pt-numpy", "pt-pickle", "pt-damaged", "pt-not-tensor"]
# What the cheap check (file, headers) catches before a job is queued; the rest needs the values (load).
CHECKED_EARLY = {"missing", "folder", "suffix", "truncated-npz", "garbage-npz", "empty-npz", "single-array",
                 "missing-key", "pickled", "int-images", "5d-images", "no-examples", "ambiguous", "neither-layout",
                 "bad-layout", "count-mismatch", "label-shape", "size-mismatch", "dtype-mismatch"}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(case, tmp_path):
    path, key, fragment = _write_bad(case, tmp_path)
    with pytest.raises(DataError) as e:
        load(cfg_for(path), seed=0)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"data.file {path}: ")
    assert fragment in msg, msg
    if key is not None:
        assert msg.startswith(f"data.file {path}: {key} ") or f"has no {key}" in msg, msg
    if case in CHECKED_EARLY:
        with pytest.raises(DataError) as early:
            check_available(cfg_for(path))
        assert str(early.value) == msg
    else:
        check_available(cfg_for(path))


def test_a_file_larger_than_half_the_memory_is_refused_before_reading(npz, tmp_path, monkeypatch):
    monkeypatch.setattr(sddata, "_memory_limit", lambda: 60 * 2**10)  # the file: 52 KB
    check_available(cfg_for(npz))
    monkeypatch.setattr(sddata, "_memory_limit", lambda: 40 * 2**10)
    with pytest.raises(DataError, match=r"mine.npz: is 52 KB, more than half this machine's memory \(80 KB\)"):
        check_available(cfg_for(npz))
    compressed = str(tmp_path / "z.npz")
    zeros = {k: np.zeros_like(v) for k, v in arrays().items()}
    np.savez_compressed(compressed, **{**zeros, "y_train": arrays()["y_train"]})  # 2 KB, 51 KB once inflated
    with pytest.raises(DataError, match=r"z.npz: holds 51 KB, more than half this machine's memory"):
        load(cfg_for(compressed), seed=0)


def test_a_link_to_the_file_is_followed(npz, tmp_path):
    (tmp_path / "link.npz").symlink_to(npz)
    assert load(cfg_for(tmp_path / "link.npz"), seed=0).class_names == ["cat", "dog", "eel"]


# ---------------------------------------------------------------- end to end

cli = in_process


TINY = ["--set", "epochs=2", "--set", "rounds=1", "--set", "model.width=0.25", "--set", "optim.batch_size=16"]


def test_cli_trains_a_teacher_and_a_student_on_a_npz(npz, tmp_path):
    code, out, err = cli("train", "--preset", "demo", "--set", "data.name=tensors", "--set", f"data.file={npz}",
                         *TINY, "--runs-dir", str(tmp_path / "runs"))
    assert code == 0, err
    lines = out.splitlines()
    teacher = next(l for l in lines if l.split()[:2] == ["0", "teacher"])
    assert float(teacher.split()[2]) >= 90  # test accuracy, per cent: the classes are easy to tell apart
    assert any(l.split()[:3] == ["1", "student", "1"] for l in lines)
    (folder,) = (tmp_path / "runs").iterdir()
    status = json.loads((folder / "status.json").read_text())
    assert status["status"] == "done"
    assert status["shapes"] == dict(num_classes=3, in_channels=3, image_size=8)


def test_training_on_a_pt_with_exits(tmp_path):
    """A .pt through sdcore.training, BYOT's exits included (the file's 3 channels reach every exit)."""
    pt = save(tmp_path / "mine.pt", arrays(layout="nchw"))
    cfg = preset("demo").replace(method="byot", rounds=0, epochs=2, **{
        "data.name": "tensors", "data.file": pt, "model.width": 0.25, "model.exits": True, "optim.batch_size": 16})
    run, results = train(cfg, runs_dir=tmp_path / "runs")
    assert len(results) == 1 and len(results[0].test["acc_exits"]) == 3  # cnn: 2 shallow exits + the deepest
    assert results[0].test["acc"] >= 90  # per cent; the classes differ by a channel's brightness
    assert run.status_record()["shapes"]["in_channels"] == 3


def test_cli_bad_file_is_one_line_and_exit_2(tmp_path):
    code, out, err = cli("train", "--set", "data.name=tensors", "--set", f"data.file={tmp_path}/nothing.npz",
                         "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.endswith(f"data.file {tmp_path}/nothing.npz: is missing")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing written


# ---------------------------------------------------------------- the Train page

def test_train_page_takes_a_data_file_and_says_what_is_wrong_with_it(npz, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SDLAB_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "main.py"), default_timeout=120).run()
    assert at.text_input(key="cfg.data.file").disabled  # the demo's digits need no file
    at.selectbox(key="cfg.data.name").set_value("tensors").run()
    assert not at.exception and not at.text_input(key="cfg.data.file").disabled
    assert any("data.file" in e.value and "when data.name is tensors" in e.value for e in at.error)
    at.text_input(key="cfg.data.file").set_value(str(tmp_path / "absent.npz")).run()
    assert [e.value for e in at.error if "absent.npz: is missing" in e.value]
    at.text_input(key="cfg.data.file").set_value(f"  {npz} ").run()
    assert not at.exception and not at.error
    assert at.session_state["train.config"].data.file == npz
