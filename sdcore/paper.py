"""The papers' own numbers for the presets that mirror them, so a user's runs can sit beside them.

Each ``PaperNumbers`` names its table, the columns the paper reports (mean, std or None) and how the
preset differs. sdlab's augmentation is random crop + flip, which is what Pham et al. call "no data
augmentation"; their "Yes" rows add Cutout and AutoAugment, which the ``-aug-`` presets add too
(``data.augment_policy = "autoaugment"``). GPU times are estimates (typical per-epoch times of
these networks on one current data-centre GPU, times epochs and rounds), not sdlab measurements:
no GPU was available where these presets were written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdcore import terms

if TYPE_CHECKING:
    from sdcore.runs import RunSummary

Cell = tuple[float, float | None]  # (mean, std); std None where the paper gives none


@dataclass(frozen=True)
class PaperNumbers:
    preset: str
    source: str  # paper and table
    columns: tuple[tuple[str, Cell], ...]  # (column, value) in the paper's order; accuracies in %
    gpu_hours: float  # estimated wall time on one GPU for the whole preset (all rounds)
    note: str  # how sdlab's run differs, what to compare


_PHAM_NOTE = ("Compare with the paper's 'no augmentation' row: sdlab uses random crop + flip, the paper's "
              "'Yes' rows add Cutout + AutoAugment. 3 independent runs (seeds) per row in the paper.")

_PHAM_T2 = {  # Pham et al. Table 2, CIFAR-10, no extra augmentation: teacher, rounds 1-3, SAM
    ("resnet18", 0.2): ((95.57, 0.15), (95.80, 0.05), (95.58, 0.13), (95.62, 0.09), (96.25, 0.06)),
    ("resnet18", 0.5): ((95.57, 0.15), (95.84, 0.10), (95.60, 0.17), (95.59, 0.01), (96.25, 0.06)),
    ("resnet18", 0.8): ((95.57, 0.15), (95.74, 0.09), (95.55, 0.10), (95.62, 0.09), (96.25, 0.06)),
    ("vgg16", 0.2): ((94.39, 0.11), (94.45, 0.12), (94.25, 0.09), (94.25, 0.04), (95.02, 0.17)),
    ("vgg16", 0.5): ((94.39, 0.11), (94.50, 0.12), (94.26, 0.14), (94.16, 0.17), (95.02, 0.17)),
    ("vgg16", 0.8): ((94.39, 0.11), (94.38, 0.07), (94.35, 0.06), (94.30, 0.11), (95.02, 0.17)),
}
_PHAM_T2_AUG = {  # Pham et al. Table 2, CIFAR-10, with Cutout + AutoAugment
    ("resnet18", 0.2): ((97.15, 0.07), (97.24, 0.05), (97.39, 0.01), (97.44, 0.04), (97.42, 0.04)),
    ("resnet18", 0.5): ((97.15, 0.07), (97.40, 0.04), (97.36, 0.05), (97.38, 0.04), (97.42, 0.04)),
    ("resnet18", 0.8): ((97.15, 0.07), (97.28, 0.07), (97.38, 0.11), (97.43, 0.05), (97.42, 0.04)),
    ("vgg16", 0.2): ((96.19, 0.05), (96.36, 0.15), (96.33, 0.05), (96.29, 0.05), (96.61, 0.12)),
    ("vgg16", 0.5): ((96.19, 0.05), (96.49, 0.08), (96.36, 0.08), (96.39, 0.04), (96.61, 0.12)),
    ("vgg16", 0.8): ((96.19, 0.05), (96.36, 0.03), (96.42, 0.06), (96.37, 0.05), (96.61, 0.12)),
}
_ROUND_COLUMNS = ("teacher", "student 1", "student 2", "student 3", "SAM")
_AUG_NOTE = ("The paper's 'Yes' row: crop + flip + AutoAugment (CIFAR-10 policy) + Cutout, which this preset uses "
             "(data.augment_policy = autoaugment). 3 independent runs (seeds) per row in the paper.")

PAPER: dict[str, PaperNumbers] = {}

for _aug, _table in ((False, _PHAM_T2), (True, _PHAM_T2_AUG)):
    for (_arch, _alpha), _cells in _table.items():
        _name = f"pham-cifar10-{_arch}-{'aug-' if _aug else ''}a{_alpha}"
        PAPER[_name] = PaperNumbers(
            preset=_name, source=f"Pham et al., Table 2 ({'ResNet18' if _arch == 'resnet18' else 'VGG16'}, "
                                 f"CIFAR-10, α={_alpha}, {'with' if _aug else 'no'} data augmentation)",
            columns=tuple(zip(_ROUND_COLUMNS, _cells)),
            gpu_hours=(10.0 if _arch == "resnet18" else 7.0) + (2.0 if _aug else 0.0),
            note=_AUG_NOTE if _aug else _PHAM_NOTE)

PAPER["pham-cifar10-resnet20"] = PaperNumbers(
    preset="pham-cifar10-resnet20", source="Pham et al., Table 3 (ResNet20, CIFAR-10, α=0.2, no data augmentation)",
    columns=tuple(zip(_ROUND_COLUMNS, ((92.69, 0.06), (93.46, 0.12), (93.48, 0.04), (93.60, 0.18), (93.51, 0.10)))),
    gpu_hours=3.0, note=_PHAM_NOTE)
PAPER["pham-cifar10-resnet20-noskip"] = PaperNumbers(
    preset="pham-cifar10-resnet20-noskip",
    source="Pham et al., Table 3 (ResNet20 without skip connections, CIFAR-10, α=0.2, no data augmentation)",
    columns=tuple(zip(_ROUND_COLUMNS, ((92.94, 0.10), (93.38, 0.03), (93.52, 0.14), (93.48, 0.03), (93.50, 0.04)))),
    gpu_hours=3.0, note=_PHAM_NOTE + " Li et al.'s no-skip net: its loss surface is the one Pham et al. Fig. 14 draw.")
PAPER["pham-svhn-resnet18"] = PaperNumbers(
    preset="pham-svhn-resnet18", source="Pham et al., Appendix C, Table 4 (ResNet18, SVHN, α=0.5)",
    columns=(("teacher", (95.23, None)), ("student 1", (95.94, None)), ("student 2", (95.67, None)),
             ("student 3", (95.17, None))),
    gpu_hours=14.0, note="One run in the paper; it also reports trace 197.5 / 205.8 / 98.6 / 271.7 and λ_max "
                         "9.24 / 11.2 / 8.30 / 12.9 for the four rounds (compare on the Hessian page).")
PAPER["pham-cifar10-resnet18"] = PaperNumbers(
    preset="pham-cifar10-resnet18", source=PAPER["pham-cifar10-resnet18-a0.5"].source,
    columns=PAPER["pham-cifar10-resnet18-a0.5"].columns, gpu_hours=10.0, note=_PHAM_NOTE)
PAPER["byot-cifar100-resnet18"] = PaperNumbers(
    preset="byot-cifar100-resnet18", source="Zhang et al. (BYOT), Table 1 (ResNet18, CIFAR-100)",
    columns=(("trained alone", (77.09, None)), ("exit 1", (67.85, None)), ("exit 2", (74.57, None)),
             ("exit 3", (78.23, None)), ("exit 4 (deepest)", (78.64, None)), ("ensemble", (79.67, None))),
    gpu_hours=2.0, note="'trained alone' is the same ResNet-18 without exits (sdlab: the matching KD preset's "
                        "teacher, e.g. --set method=kd rounds=0 exits=false). BYOT's exits are 3x3-conv "
                        "bottlenecks; sdlab's are cheaper strided convolutions (see BENCHMARKS.md).")
PAPER["pskd-cifar100-resnet18"] = PaperNumbers(
    preset="pskd-cifar100-resnet18",
    source="Seed paper 003 (PS-KD with BYOT and DML), Table 1 row 4 (ResNet-18 + PS-KD)",
    columns=(("top-1 error (%)", (19.94, None)), ("top-5 error (%)", (4.79, None)), ("NLL", (0.79, None)),
             ("ECE (%)", (4.21, None)), ("AURC (×10³)", (50.44, None))),
    gpu_hours=3.0, note="Plain ResNet-18 in the same table: top-1 error 21.41, ECE 5.14, AURC 56.92. The "
                        "Calibration page computes these metrics for your run.")

# Seed paper 003 (PS-KD with BYOT and DMFL), Table 1, CIFAR-100: top-1 err %, top-5 err %, NLL, ECE %, AURC x1e3,
# train time per epoch (s).
SEED003_COLUMNS = ("top-1 error (%)", "top-5 error (%)", "NLL", "ECE (%)", "AURC (×10³)", "time per epoch (s)")
SEED003_TABLE1 = {
    "resnet18": ((21.41, 5.57, 0.87, 5.14, 56.92, 25.3424), (21.89, 5.64, 1.00, 11.24, 53.79, 28.9306),
                 (19.94, 4.79, 0.79, 4.21, 50.44, 27.0058), (21.61, 5.45, 0.87, 5.31, 57.13, 25.6847),
                 (20.67, 4.66, 0.78, 7.42, 50.91, 32.4176), (20.02, 4.73, 0.80, 4.52, 50.55, 27.0788),
                 (21.18, 5.47, 1.02, 11.74, 54.89, 31.7274), (20.03, 4.16, 0.72, 4.15, 49.86, 32.0838)),
    "resnet50": ((21.96, 5.21, 0.89, 8.75, 57.24, 68.8616), (19.03, 4.38, 0.94, 11.51, 48.32, 85.0151),
                 (20.19, 4.50, 0.77, 4.03, 50.76, 68.9272), (20.13, 4.96, 0.85, 8.63, 51.20, 68.8262),
                 (17.92, 3.94, 0.75, 8.96, 46.76, 85.7228), (19.12, 4.43, 0.73, 3.51, 47.57, 70.5304),
                 (19.70, 4.77, 0.87, 9.79, 48.58, 85.8018), (17.52, 3.75, 0.71, 10.00, 46.25, 86.4942)),
    "resnext50_32x4d": ((19.25, 4.48, 0.81, 7.49, 48.13, 152.616), (19.09, 4.54, 0.84, 9.62, 46.66, 164.871),
                        (18.79, 4.20, 0.74, 4.85, 48.52, 147.371), (19.41, 4.43, 0.82, 7.45, 47.72, 145.137),
                        (18.36, 4.34, 0.80, 9.99, 46.50, 165.050), (19.25, 4.14, 0.75, 5.18, 47.46, 146.425),
                        (19.30, 4.23, 0.88, 9.86, 47.98, 164.186), (18.27, 4.11, 0.72, 10.32, 45.71, 165.739)),
}
# The tuples above are in config.SEED003_ROWS order (the paper's table lists +DMFL before +PS-KD).
_SEED003_ORDER = ("baseline", "byot", "pskd", "dmfl", "pskd-byot", "pskd-dmfl", "byot-dmfl", "pskd-byot-dmfl")
_SEED003_NOTE = ("One run per row in the paper, on GPUs under other load (its training times are noisy, it says). "
                 "Paper parameter counts include its exits: ResNet-18 13.0 M, ResNet-50 50.4 M, ResNeXt-50 37.9 M; "
                 "sdlab's exits are smaller (sdcore/models/resnet.py). Errors, NLL, ECE and AURC on the test split "
                 "with PS-KD's conventions (Calibration page).")
for _arch, _rows in SEED003_TABLE1.items():
    for _row, _vals in zip(_SEED003_ORDER, _rows):
        _name = f"pskdml-cifar100-{_arch}-{_row}"
        PAPER[_name] = PaperNumbers(
            preset=_name, source=f"Seed paper 003, Table 1 ({_arch}, CIFAR-100, {_row.replace('-', ' + ')})",
            columns=tuple((c, (v, None)) for c, v in zip(SEED003_COLUMNS, _vals)),
            gpu_hours=round(_vals[-1] * 300 / 3600, 1), note=_SEED003_NOTE)


def differences(cfg, reference) -> list[str]:
    """The config fields (dotted, e.g. "data.name") where ``cfg`` differs from ``reference``, seed,
    name and device aside: empty when a run used the preset's settings."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(cfg.to_dict()), flat(reference.to_dict())
    return [k for k in a if k not in ("seed", "name", "device") and a[k] != b.get(k)]


def run_columns(numbers: PaperNumbers, cfg, summary: "RunSummary | None", calibration=None,
                metrics: list[dict] | None = None) -> dict[str, float | None]:
    """A finished run's values for the paper's columns (None where the run has none): multi-round
    KD's test accuracy per round, the exits' and their ensemble's test accuracy, and calibration
    metrics of the deepest output (``calibration``: the run's ``run_calibration`` result) and the
    mean training time per epoch (``metrics``: metrics.jsonl records), where the paper reports them."""
    rounds = summary.rounds if summary is not None else ()
    out: dict[str, float | None] = {c: None for c, _ in numbers.columns}
    if terms.is_multi_round(cfg):
        for k, r in enumerate(rounds):
            name = "teacher" if k == 0 else f"student {k}"
            if name in out:
                out[name] = r.test_acc
        return out
    if rounds and any(c.startswith("exit ") for c in out):
        for i, a in enumerate(rounds[0].exit_accs):
            name = next((c for c in out if c.startswith(f"exit {i + 1}")), None)
            if name:
                out[name] = a
        if "ensemble" in out:
            out["ensemble"] = rounds[0].ensemble_acc
    deepest = [m for m in calibration or [] if m.round == 0 and not m.ensemble]
    if deepest:
        r = deepest[-1].report  # "deepest", or the last of "exit 1".."exit K"
        values = {"top-1 error (%)": r.top1_err, "top-5 error (%)": r.top5_err, "NLL": r.nll, "ECE (%)": 100 * r.ece,
                  "AURC (×10³)": 1000 * r.aurc}
        out.update({k: v for k, v in values.items() if k in out})
    times = [m["epoch_time"] for m in metrics or [] if m.get("round") == 0 and "epoch_time" in m]
    if "time per epoch (s)" in out and times:
        out["time per epoch (s)"] = sum(times) / len(times)
    return out


def needs_calibration(numbers: PaperNumbers) -> bool:
    """The paper reports calibration metrics, so a run's must be computed to sit beside them."""
    return any(c in ("NLL", "ECE (%)", "AURC (×10³)") for c, _ in numbers.columns)
