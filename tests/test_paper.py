"""The papers' numbers: every entry is a valid preset; a run's values line up with the paper's columns."""
import pytest

from sdcore.config import PRESETS, preset
from sdcore.paper import PAPER, differences, run_columns
from sdcore.runs import RunSummary


def test_every_paper_entry_is_a_valid_preset_stating_numbers_and_time():
    assert {"pham-cifar10-vgg16-a0.5", "pham-cifar10-resnet20-noskip", "pham-svhn-resnet18",
            "byot-cifar100-resnet18", "pskd-cifar100-resnet18"} <= set(PAPER)
    for name, numbers in PAPER.items():
        cfg = preset(name).validate()
        assert differences(cfg, preset(name)) == []
        assert numbers.columns and numbers.gpu_hours > 0 and numbers.source
        if name != "pham-cifar10-resnet18":
            assert "Paper (" in PRESETS[name].description and "GPU-hours" in PRESETS[name].description
    assert preset("pham-cifar10-resnet20-noskip").model.skip is False
    assert preset("pham-svhn-resnet18").data.name == "svhn"
    assert dict(PAPER["pham-cifar10-vgg16-a0.8"].columns)["student 1"] == (94.38, 0.07)


def test_differences_name_the_changed_fields():
    ref = preset("pham-cifar10-resnet18-a0.2")
    cfg = ref.replace(epochs=5, seed=3, **{"data.name": "digits"})
    assert differences(cfg, ref) == ["epochs", "data.name"]


def summary(*rounds: dict) -> RunSummary:
    """summary.json's typed form for these round entries (round numbers in order, kept epoch 1)."""
    return RunSummary.from_dict({"rounds": [{"round": k, "best_epoch": 1, **r} for k, r in enumerate(rounds)]})


def test_run_columns_for_each_method():
    kd = run_columns(PAPER["pham-cifar10-resnet18-a0.2"], preset("pham-cifar10-resnet18-a0.2"),
                     summary({"test_acc": 90.0}, {"test_acc": 91.0}))
    assert kd == {"teacher": 90.0, "student 1": 91.0, "student 2": None, "student 3": None, "SAM": None}
    byot = run_columns(PAPER["byot-cifar100-resnet18"], preset("byot-cifar100-resnet18"),
                       summary({"test_acc": 76.0, "test_acc_exits": [60.0, 70.0, 75.0, 76.0],
                                "test_acc_ensemble": 77.0}))
    assert byot == {"trained alone": None, "exit 1": 60.0, "exit 2": 70.0, "exit 3": 75.0, "exit 4 (deepest)": 76.0,
                    "ensemble": 77.0}

    class Report:  # the fields run_calibration's reports carry
        top1_err, top5_err, nll, ece, aurc = 20.0, 5.0, 0.8, 0.05, 0.051

    class Item:  # a ModelCalibration's fields
        round, exit, ensemble, report = 0, None, False, Report()

    pskd = run_columns(PAPER["pskd-cifar100-resnet18"], preset("pskd-cifar100-resnet18"), None, [Item()])
    assert pskd["ECE (%)"] == pytest.approx(5.0) and pskd["AURC (×10³)"] == pytest.approx(51.0)

    class Exit(Item):  # a model with exits: the deepest exit's report is the paper's column, not the ensemble
        exit = 3

    class Ensemble(Item):
        exit, ensemble, report = None, True, None

    name = "pskdml-cifar100-resnet18-pskd-byot-dmfl"
    grid = run_columns(PAPER[name], preset(name), None, [Exit(), Ensemble()],
                       [{"round": 0, "epoch_time": 30.0}, {"round": 0, "epoch_time": 34.0}])
    assert grid["top-1 error (%)"] == 20.0 and grid["time per epoch (s)"] == pytest.approx(32.0)
