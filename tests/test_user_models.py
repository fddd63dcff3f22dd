"""Your own model (model.arch = file.py:fn / package.module:fn / timm:<name> / torchvision:<name>), its BYOT exits
at named or automatic nodes, and your own pretrained teacher (model.teacher_weights): end to end, and every
broken builder or weights file as its one-line error."""
from __future__ import annotations

import importlib.util
import json
import textwrap

import pytest
import torch
from torch import nn

from sdcore.analysis.calibration import run_calibration
from sdcore.analysis.runner import AnalysisSpec, analyze
from sdcore.cli import main
from sdcore.config import ConfigError, RunConfig, preset
from sdcore.data import load
from sdcore.engine import evaluate
from sdcore.models import create, external
from sdcore.runs import RunStore
from sdcore.training import train

NET = """
from torch import nn

def build(num_classes, in_channels):
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
        nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))
"""
TINY = {"epochs": 2, "data.subset": 200}


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "mynet.py"
    path.write_text(NET)
    return path


def _tiny(name: str, arch: str, **changes) -> RunConfig:
    return preset(name).replace(**{"model.arch": arch, **TINY, **changes})


@pytest.mark.slow
def test_a_user_file_model_trains_kd_rounds_and_every_analysis_runs_on_it(net_file, tmp_path):
    run, results = train(_tiny("demo", f"{net_file}:build", rounds=1), runs_dir=tmp_path / "runs")
    assert [r.round for r in results] == [0, 1]
    assert run.status() == "done"
    data = load(run.config().data, seed=0)
    model = run.load_model(1, **data.shapes)
    assert isinstance(model, nn.Sequential)  # the person's own module, not wrapped: its state dict is theirs
    assert evaluate(model, data.test)["acc"] == pytest.approx(run.summary().rounds[1].test_acc)
    spec = AnalysisSpec(rounds=(0, 1), hessian=True, density=False, top_k=2, trace_samples=4, landscape="1d",
                        steps=3, subset=64)
    out = analyze(run, spec)
    assert set(out) and all(v is not None for v in out.values())
    cal = run_calibration(run)
    assert [c.round for c in cal] == [0, 1]


@pytest.mark.slow
def test_a_user_file_model_with_exits_trains_byot_with_exits_at_its_stage_boundaries(net_file, tmp_path):
    run, results = train(_tiny("demo-byot", f"{net_file}:build"), runs_dir=tmp_path / "runs")
    summary = run.summary().rounds[0]
    assert len(summary.exit_accs) == 3  # 2 automatic shallow exits (8x8 -> 4x4 -> 2x2 stages) + the deepest
    data = load(run.config().data, seed=0)
    model = run.load_model(0, **data.shapes)
    assert isinstance(model, external.Tapped) and model.nodes == ["2", "3"]
    cal = run_calibration(run)
    assert {c.exit for c in cal if not c.ensemble} == {0, 1, 2}


def test_exits_tap_the_named_nodes_and_the_deepest_is_the_models_own_output(net_file):
    torch.manual_seed(0)
    model = create(f"{net_file}:build", num_classes=10, in_channels=1, image_size=8, exits=True,
                   exit_nodes=("3",))
    assert model.nodes == ["3"] and model.num_exits == 2
    x = torch.randn(5, 1, 8, 8)
    model.eval()
    with torch.no_grad():
        out = model.forward_exits(x)
        net = model.net
        tapped = net[:4](x)  # node "3": the second stage's output
        assert torch.equal(out.logits[-1], net(x))  # the deepest exit is the model's own classifier
        assert torch.allclose(out.features[-1], net[6](net[5](net[4](tapped))))  # the input of its Linear
        assert torch.allclose(out.logits[0], model.exit_heads[0](tapped)[0])
        assert torch.equal(model.forward_exit(x, 0), out.logits[0])


def test_automatic_exits_are_the_stage_boundaries_of_torchvision_and_timm_resnets():
    tv = create("torchvision:resnet18", num_classes=10, in_channels=3, image_size=32, exits=True)
    assert tv.nodes == ["layer1", "layer2", "layer3"]
    assert [o.shape for o in tv.forward_exits(torch.zeros(2, 3, 32, 32)).features] == [(2, 512)] * 4
    pytest.importorskip("timm")
    tm = create("timm:test_resnet", num_classes=7, in_channels=1, image_size=16, exits=True)
    assert tm.nodes == ["layer1", "layer2", "layer3"]  # timm's feature_info stages, the last one excluded


def test_torchvision_models_take_other_channel_counts():
    model = create("torchvision:resnet18", num_classes=4, in_channels=1, image_size=16)
    assert model.conv1.in_channels == 1
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 4)


@pytest.mark.slow
def test_a_timm_model_trains_end_to_end(tmp_path):
    pytest.importorskip("timm")
    run, _ = train(_tiny("demo-byot", "timm:test_resnet"), runs_dir=tmp_path / "runs")
    assert run.status() == "done" and len(run.summary().rounds[0].exit_accs) == 4


def test_the_probe_changes_no_batchnorm_statistics_and_no_global_rng(net_file):
    torch.manual_seed(3)
    before = torch.get_rng_state()
    model = create(f"{net_file}:build", num_classes=10, in_channels=1, image_size=8)
    after_build = torch.get_rng_state()
    torch.manual_seed(3)
    reference = external._raw(f"{net_file}:build", 10, 1)  # the same draws, no probe
    assert torch.equal(after_build, torch.get_rng_state())
    assert not torch.equal(before, after_build)  # the init drew from it, as sdlab's models do
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)  # running means/vars untouched, num_batches_tracked 0
    assert model.training


def test_listing_runs_never_imports_a_user_file(tmp_path):
    marker = tmp_path / "imported"
    (tmp_path / "evil.py").write_text(NET + f"\nopen({str(marker)!r}, 'w').write('x')\n")
    arch = f"{tmp_path / 'evil.py'}:build"
    cfg = _tiny("demo", arch, rounds=0, epochs=1)
    run, _ = train(cfg, runs_dir=tmp_path / "runs")
    marker.unlink()
    external._file_module.cache_clear()
    store = RunStore(tmp_path / "runs")
    [info] = store.list()
    assert info.status == "done" and info.rounds_done == 1
    RunConfig.load(run.path / "config.json").validate()
    assert not marker.exists()


BROKEN = {
    "syntax": ("def build(num_classes, in_channels)\n    return 1\n", "build",
               "syntax error in {file} line 1: expected ':'"),
    "raises at import": ("raise RuntimeError('no GPU here')\n", "build",
                         "importing {file} raised RuntimeError: no GPU here"),
    "no function": (NET, "make", "{file} has no function make"),
    "not a module": ("def build(num_classes, in_channels):\n    return 3\n", "build",
                     "returned an object of type int, not a torch.nn.Module"),
    "builder raises": ("def build(num_classes, in_channels):\n    raise ValueError('bad width')\n", "build",
                       "calling it with num_classes=10, in_channels=1 raised ValueError: bad width"),
    "wrong signature": ("def build(classes):\n    pass\n", "build",
                        "calling it with num_classes=10, in_channels=1 raised TypeError: build() got an "
                        "unexpected keyword argument 'num_classes'"),
    "wrong output": ("from torch import nn\ndef build(num_classes, in_channels):\n"
                     "    return nn.Sequential(nn.Flatten(), nn.Linear(64 * in_channels, 3))\n", "build",
                     "gives output of shape [2, 3] on a probe batch of shape [2, 1, 8, 8]; expected [2, 10] "
                     "(one logit per class)"),
    "wrong input": ("from torch import nn\ndef build(num_classes, in_channels):\n"
                    "    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n", "build",
                    "fails on a probe batch of shape [2, 1, 8, 8]: RuntimeError: mat1 and mat2 shapes cannot be "
                    "multiplied (2x64 and 784x10)"),
    "not logits": ("from torch import nn\nclass M(nn.Module):\n    def forward(self, x):\n        return {'a': x}\n"
                   "def build(num_classes, in_channels):\n    return M()\n", "build",
                   "its forward returns a dict, not a tensor of logits"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_builder_is_one_line_naming_the_file_and_the_problem(case, tmp_path, capsys):
    source, fn, problem = BROKEN[case]
    file = tmp_path / f"{case.replace(' ', '_')}.py"
    file.write_text(source)
    arch = f"{file}:{fn}"
    with pytest.raises(ConfigError) as e:
        create(arch, num_classes=10, in_channels=1, image_size=8)
    assert str(e.value) == f"model.arch {arch}: " + problem.format(file=file)
    runs = tmp_path / "runs"
    rc = main(["train", "--preset", "demo", "--set", f"model.arch={arch}", "--runs-dir", str(runs), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().splitlines() == [f"error: {e.value}"]
    assert not runs.exists() or not any(runs.iterdir())  # nothing written


@pytest.mark.parametrize("arch, problem", [
    ("{dir}/missing.py:build", "no file {dir}/missing.py (relative paths are from {cwd})"),
    ("no_such_module_xyz.nets:build", "no module no_such_module_xyz on the Python path"),
    ("torchvision:resnet999", "torchvision has no model resnet999 (torchvision.models.list_models() lists them)"),
    ("timm:resnet999", "timm has no model resnet999 (timm.list_models() lists them)"),
])
def test_a_missing_builder_is_one_line(arch, problem, tmp_path):
    if arch.startswith("timm:"):
        pytest.importorskip("timm")
    import os
    arch = arch.format(dir=tmp_path)
    with pytest.raises(ConfigError) as e:
        create(arch, num_classes=10, in_channels=1, image_size=8)
    assert str(e.value) == f"model.arch {arch}: " + problem.format(dir=tmp_path, cwd=os.getcwd())


def test_timm_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ConfigError, match=r"^model.arch timm:resnet18: needs timm: pip install -r "
                                          r"requirements-extras.txt$"):
        create("timm:resnet18", num_classes=10, in_channels=1, image_size=8)


@pytest.mark.parametrize("nodes, problem", [
    (("9",), "model.exit_nodes names '9', which is not a submodule of the model (print(model) or "
             "model.named_modules() lists them)"),
    (("6",), "exit node 6 outputs [2, 32] on the probe batch; an exit needs a feature map [B, C, H, W]"),
])
def test_bad_exit_nodes_are_one_line(net_file, nodes, problem):
    arch = f"{net_file}:build"
    with pytest.raises(ConfigError) as e:
        create(arch, num_classes=10, in_channels=1, image_size=8, exits=True, exit_nodes=nodes)
    assert str(e.value) == f"model.arch {arch}: {problem}"


def test_exits_need_a_linear_classifier(tmp_path):
    file = tmp_path / "convhead.py"
    file.write_text("from torch import nn\ndef build(num_classes, in_channels):\n"
                    "    return nn.Sequential(nn.Conv2d(in_channels, num_classes, 3), nn.AdaptiveAvgPool2d(1),"
                    " nn.Flatten())\n")
    with pytest.raises(ConfigError, match="exits need a final nn.Linear classifier with 10 outputs"):
        create(f"{file}:build", num_classes=10, in_channels=1, image_size=8, exits=True)


@pytest.mark.parametrize("changes, message", [
    ({"model.arch": "cnn", "model.exits": True, "method": "byot", "rounds": 0, "model.exit_nodes": ["a"]},
     "model.exit_nodes must be empty unless model.exits is true on your own model"),
    ({"model.arch": "m.py:build", "model.width": 2.0}, "model.width must be 1 for your own model"),
    ({"model.arch": "m.py:"}, "model.arch must be one of cnn"),
    ({"model.teacher_weights": "t.pt", "method": "pskd", "rounds": 0}, "model.teacher_weights must be null unless "
                                                                       "method is kd"),
    ({"model.teacher_weights": "t.pt", "model.teachers": 2}, "model.teacher_weights must be null with "
                                                              "model.teachers > 1"),
])
def test_config_checks_the_new_fields_without_importing_anything(changes, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        preset("demo").replace(**changes).validate()


# ---------------------------------------------------------------- your own pretrained teacher

@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    cfg = preset("demo").replace(rounds=0, **TINY)
    return train(cfg, runs_dir=tmp_path_factory.mktemp("runs"))[0]


@pytest.mark.slow
def test_a_pretrained_teacher_is_round_0_and_its_students_distil_from_it(teacher_run, tmp_path):
    weights = tmp_path / "teacher.pt"
    torch.save({"state_dict": teacher_run.load_state_dict(0)}, weights)  # a training script's checkpoint dict
    cfg = preset("demo").replace(rounds=1, **TINY, **{"model.teacher_weights": str(weights)})
    run, results = train(cfg, runs_dir=tmp_path / "runs")
    source = teacher_run.summary().rounds[0]
    loaded = run.summary().rounds[0]
    assert loaded.test_acc == source.test_acc and loaded.best_epoch == 0
    for k, v in teacher_run.load_state_dict(0).items():
        assert torch.equal(run.load_state_dict(0)[k], v)
    assert {m["round"] for m in run.metrics()} == {1}  # round 0 was not trained
    assert len(results) == 2 and run.status() == "done"


def _write(path, obj):
    torch.save(obj, path)
    return path


BAD_WEIGHTS = {
    "missing": (lambda p, sd: p.parent / "nope.pt", "no such file|is missing"),
    "not torch": (lambda p, sd: (p.write_text("hello"), p)[1], r"is damaged or not a PyTorch file"),
    "not a state dict": (lambda p, sd: _write(p, [1, 2, 3]), r"does not hold a state dict"),
    "wrong shapes": (lambda p, sd: _write(p, {**sd, "fc.weight": torch.zeros(3, 128)}),
                     r"its weights do not fit the config's model \(fc.weight is \[3, 128\], the config's model "
                     r"has \[10, 128\]\)"),
    "missing tensors": (lambda p, sd: _write(p, {k: v for k, v in sd.items() if k != "fc.bias"}),
                        r"its weights do not fit the config's model \(1 tensors missing, e.g. fc.bias\)"),
    "code in the pickle": (lambda p, sd: _write(p, {"x": Evil()}), r"is damaged or not a PyTorch file"),
}


class Evil:
    def __reduce__(self):
        return (print, ("executed",))


@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
def test_a_bad_teacher_file_is_one_line_and_writes_nothing(case, teacher_run, tmp_path, capsys):
    make, pattern = BAD_WEIGHTS[case]
    path = make(tmp_path / "teacher.pt", teacher_run.load_state_dict(0))
    runs = tmp_path / "runs"
    rc = main(["train", "--preset", "demo", "--set", f"model.teacher_weights={path}", "--runs-dir", str(runs),
               "--quiet"])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "executed" not in out
    assert lines[0].startswith(f"error: model.teacher_weights {path}: ")
    import re
    assert re.search(pattern, lines[0]), lines[0]
    assert not runs.exists() or not any(runs.iterdir())


def test_the_config_json_of_a_user_model_run_round_trips(net_file):
    cfg = _tiny("demo-byot", f"{net_file}:build", **{"model.exit_nodes": ["3"]})
    again = RunConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg and again.model.exit_nodes == ("3",)


def test_a_module_path_builder_is_imported_from_the_python_path(tmp_path, monkeypatch):
    pkg = tmp_path / "mynets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "small.py").write_text(textwrap.dedent(NET))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = create("mynets.small:build", num_classes=3, in_channels=3, image_size=8)
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 3)
    assert importlib.util.find_spec("mynets.small") is not None


@pytest.mark.slow
def test_the_train_form_takes_your_own_model_and_teacher(net_file, teacher_run, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.test_app import APP, wait_status

    runs = tmp_path / "runs"
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(runs))
    weights = tmp_path / "teacher.pt"
    torch.save(teacher_run.load_state_dict(0), weights)
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.number_input(key="cfg.epochs").set_value(1)
    at.number_input(key="cfg.data.subset").set_value(200)
    at.number_input(key="cfg.rounds").set_value(1)
    at.text_input(key="cfg.model.teacher_weights").input(str(weights))
    at.selectbox(key="arch").set_value("your own model…").run()
    at.text_input(key="arch.own").input(f"{net_file}:build").run()
    next(b for b in at.button if b.label == "Launch").click().run()
    [error] = [e.value for e in at.error]  # the teacher is the demo's CNN, not this net: one line, nothing written
    assert error.startswith(f"model.teacher_weights {weights}: its weights do not fit the config's model")
    assert not runs.exists() or not list(RunStore(runs))
    at.selectbox(key="arch").set_value("cnn").run()
    next(b for b in at.button if b.label == "Launch").click().run()
    assert [e.value for e in at.error] == []
    (run,) = list(RunStore(runs))
    assert wait_status(runs, run.id, ("done", "failed")) == "done"
    assert run.config().model.teacher_weights == str(weights)
    assert run.summary().rounds[0].test_acc == teacher_run.summary().rounds[0].test_acc


@pytest.fixture(scope="module")
def own_runs(tmp_path_factory):
    """A KD run and a BYOT run of a user-file model, and a KD run whose teacher was loaded from a file."""
    root = tmp_path_factory.mktemp("own")
    (root.parent / "own_net.py").write_text(NET)
    arch = f"{root.parent / 'own_net.py'}:build"
    teacher, _ = train(preset("demo").replace(rounds=0, **TINY), runs_dir=root.parent / "teacher")
    weights = root.parent / "teacher.pt"
    torch.save(teacher.load_state_dict(0), weights)
    train(_tiny("demo", arch, rounds=1), runs_dir=root)
    train(_tiny("demo-byot", arch), runs_dir=root)
    train(preset("demo").replace(rounds=1, **TINY, **{"model.teacher_weights": str(weights)}), runs_dir=root)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", ["live", "compare", "students", "byot", "calibration", "robustness", "hessian",
                                  "landscape", "runs"])
def test_every_page_shows_runs_of_your_own_model_and_teacher(own_runs, monkeypatch, name):
    from tests.test_app import renders

    monkeypatch.setenv("SDLAB_RUNS_DIR", str(own_runs))
    renders(own_runs, name)


def test_your_own_model_is_probed_with_the_datas_own_height_and_width(tmp_path):
    """MNIST-1D's signals are [1, 1, 40]: an MLP over 40 inputs fits them; the probe sees 1 x 40, not 40 x 40."""
    file = tmp_path / "mlp.py"
    file.write_text("from torch import nn\ndef build(num_classes, in_channels):\n"
                    "    return nn.Sequential(nn.Flatten(), nn.Linear(40 * in_channels, 32), nn.ReLU(),"
                    " nn.Linear(32, num_classes))\n")
    cfg = preset("mnist1d").replace(rounds=1, epochs=1, **{"model.arch": f"{file}:build", "data.size": 500,
                                                          "data.subset": 200})
    run, _ = train(cfg, runs_dir=tmp_path / "runs")
    assert run.status() == "done" and run.status_record()["shapes"] == dict(num_classes=10, in_channels=1,
                                                                           image_size=40, height=1, width=40)
    with pytest.raises(ConfigError, match=r"probe batch of shape \[2, 1, 40, 40\]"):
        create(f"{file}:build", num_classes=10, in_channels=1, image_size=40)  # square: what it would have seen
