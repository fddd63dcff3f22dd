"""Run configuration: one dataclass tree, validated in one place, saved with every run.

sdlab convention, everywhere: ``alpha`` is the weight on the hard-label cross-entropy and
``1 - alpha`` the weight on the tau^2-scaled KL to the teacher (Pham et al., Eq. 1). Presets
convert papers that weigh the other way (BYOT Eq. 5, PS-KD) and say so in their description.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sdcore import files

DATASETS = ("digits", "mnist1d", "cifar10", "cifar100", "svhn", "mnist", "fashionmnist", "imagefolder", "tensors")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
SELECTIONS = ("best_val", "last")
DEVICES = ("auto", "cpu", "cuda")  # or "cuda:N"
NAME_MAX = 64  # characters of a run's name
SEED_RANGE = 2**31  # seeds are in [0, 2^31): torch, numpy and Python's random all take them
TEMPERATURE_RANGE = (0.05, 100.0)  # tau divides the logits: below 0.05 they overflow into NaN; presets use 1-4
CONFIG_LIMIT = 2**20  # bytes of a config file (a config is about 2 KB)
VALUE_LIMIT = 4096  # characters of one --set value (a path is at most 4096)


class ConfigError(ValueError):
    """A config value a person must fix; the message names the field, the value and the range.

    ``field``: the dotted config field at fault ("optim.lr"), where known, so a form can point at it."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass
class DataConfig:
    name: str = "digits"  # one of DATASETS; "digits" is scikit-learn's bundled 8x8 digits (no files needed)
    root: str = "./data"  # folder searched for torchvision datasets / the ImageFolder tree; unused for digits
    label_noise: float = 0.0  # fraction of *training* labels flipped uniformly to another class; val/test stay clean
    val_fraction: float = 0.1  # share of the training split held out for model selection, in [0, 0.5]
    subset: int | None = None  # keep only this many training examples (seeded pick) for quick runs; None = all
    augment: bool = False  # random crop (+ horizontal flip where the dataset allows it), done on the device
    augment_policy: str = "crop_flip"  # with augment: "crop_flip", or "autoaugment" = + AutoAugment (CIFAR-10) + Cutout
    download: bool = False  # let torchvision download missing files (needs a network)
    normalize: str = "dataset"  # per-channel mean/std: the dataset's own ("dataset") or ImageNet's ("imagenet")
    file: str | None = None  # tensors: the .npz or .pt file of x_train, y_train, x_test, y_test (README, "Your own
    #                          data"); unused by the other datasets
    size: int = 5000  # mnist1d: examples generated (80% train, 20% test: the published dataset's 4000 / 1000 at 5000)


@dataclass
class ModelConfig:
    arch: str = "cnn"  # a name from sdcore.models.list_models(), or your own: "file.py:fn" / "package.module:fn"
    #                    (fn(num_classes=, in_channels=) -> nn.Module), "timm:<name>", "torchvision:<name>"
    width: float = 1.0  # channel multiplier over the architecture's standard widths
    skip: bool = True  # residual connections on; False gives the "no-skip" nets of Li et al. (ResNets only)
    exits: bool = False  # attach BYOT shallow exits (bottleneck + pool + classifier) after each section
    peers: int = 1  # dml: networks trained together (deep mutual learning); peer 1 is the model reported
    teachers: int = 1  # kd: round 0 trains this many networks independently; their mean logits teach round 1
    exit_nodes: tuple[str, ...] = ()  # your own model with exits: the nodes whose outputs feed the shallow exits
    #                                   (torchvision.models.feature_extraction names); () = its stage boundaries
    teacher_weights: str | None = None  # a state-dict file loaded as round 0 instead of training it; students
    #                                     distil from it as usual; None = train the teacher


@dataclass
class OptimConfig:
    name: str = "sgd"  # "sgd" (with momentum) or "adamw"
    lr: float = 0.025  # peak learning rate (after warm-up)
    momentum: float = 0.9  # SGD momentum; ignored by AdamW
    nesterov: bool = False  # Nesterov momentum for SGD
    weight_decay: float = 3e-4  # L2 / decoupled decay (AdamW)
    batch_size: int = 96  # examples per step
    grad_clip: float = 5.0  # max global gradient norm; 0 disables clipping
    schedule: str = "cosine"  # "cosine" to 0, "step" (x step_gamma at step_milestones), "constant"
    step_milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of the epochs where "step" decays
    step_gamma: float = 0.1  # factor applied at each milestone
    warmup_epochs: float = 0.0  # linear warm-up from 0 to lr over this many epochs
    sam_rho: float | None = None  # None: plain optimizer; a radius: SAM (Foret et al.; 0.05 on CIFAR) around it


@dataclass
class RunConfig:
    name: str = "run"  # human label; the run id adds a timestamp
    method: str = "kd"  # loss terms joined by "+" (sdcore.terms): "kd", "dml", "ce" (labels only), or any of
    #                     "pskd+byot+dmfl"; written in the registry's order ("byot+pskd" becomes "pskd+byot")
    alpha: float = 0.5  # weight on hard-label CE; 1-alpha on the distillation term (kd, dml, byot's exits);
    #                     pskd alone: the hard-label weight at the last epoch (1 - PS-KD's alpha_T)
    temperature: float = 4.0  # tau, softens teacher and student logits in the distillation term
    rounds: int = 2  # kd: students trained after the teacher (round 0); 0 trains only the teacher
    epochs: int = 30  # epochs per round
    hint_weight: float = 0.0  # byot: beta on the feature hint (its form is byot_style's)
    byot_style: str = "sdlab"  # byot: whose exit loss, a key of terms.BYOT_STYLES: "sdlab", "zhang", "luan"
    pskd_alpha: float | None = None  # pskd: hard-label weight at the last epoch (1 - alpha_T); None = alpha
    pskd_exits: bool = True  # pskd with byot: the shallow exits' CE uses the soft targets too (seed paper 003)
    dmfl_weight: float = 1.0  # dmfl: weight on the symmetric feature KL (seed paper 003 Eq. 3 adds it with 1)
    dmfl_temperature: float = 1.0  # dmfl: q_i = softmax(F_i / T) over the feature's D channels
    select: str = "best_val"  # per round keep the epoch with the best validation accuracy ("best_val") or the last
    #                           ("last")
    seed: int = 0  # seeds data split, label noise, init and batch order
    device: str = "auto"  # "auto" picks cuda when present, else cpu
    precision: str = "fp32"  # "fp32", or "bf16": bf16 autocast for the training forward, fp32 master weights
    channels_last: bool = False  # NHWC memory format for model and batches (faster convolutions on GPUs)
    compile: bool = False  # torch.compile the model for training; falls back to eager (with a warning) if it fails
    deterministic: bool = False  # torch's deterministic algorithms + cuDNN's while training (sdcore.provenance:
    #                              process-wide while it trains; an op without one fails the run)
    track_sharpness: bool = False  # per-epoch λ_max (Lanczos, warm-started) on a fixed training subset
    sharpness_subset: int = 256  # with track_sharpness: training examples (fixed, seeded from seed) the λ_max uses
    sharpness_steps: int = 5  # with track_sharpness: Lanczos steps (HVPs) per epoch, from the last epoch's eigenvector
    threads: int = 0  # CPU intra-op threads while training; 0 = by model size (engine.threads_for: 1 for small models)
    curvature: bool = False  # after training, queue Hessian λ_max and trace of every kept round (the Hessian page's
    #                          settings, cached in analysis/): the one-click demo ends with both answers
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        from sdcore.terms import canonical  # noqa: PLC0415 - a cycle: terms imports this module

        if isinstance(self.method, str):
            self.method = canonical(self.method)

    def validate(self) -> "RunConfig":
        """Raise ConfigError on the first bad field; return self so calls chain."""
        _validate(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        return _from_dict(cls, d, prefix="")

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """The config in a JSON file a person points at: anything that is not a small JSON object shaped
        like a config (a folder, a FIFO, /proc/self/mem, a huge or deeply nested file) is a ConfigError."""
        text = str(path)
        if not text.strip() or "\0" in text:
            raise ConfigError(f"a config file must be a file path, got {show_value(text)}")
        where = f"config file {show_value(text, 200)}"
        if not os.path.lexists(text):
            raise ConfigError(f"{where} does not exist")
        try:  # realpath: a symbolic link a person made to their config is fine (files refuses links)
            d = files.read_json_object(Path(os.path.realpath(text)), limit=CONFIG_LIMIT)
        except files.FileProblem as e:
            raise ConfigError(f"{where} {e}") from None
        except ValueError:  # a number past Python's 4300-digit limit for int(str)
            raise ConfigError(f"{where} holds a number too long to read") from None
        if _deeper_than(d, 3):  # config -> data/model/optim -> step_milestones list
            raise ConfigError(f"{where} nests objects or lists deeper than a config does")
        return cls.from_dict(d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    def replace(self, **overrides: Any) -> "RunConfig":
        """Copy with dotted-key overrides, e.g. replace(**{"data.label_noise": 0.3})."""
        d = self.to_dict()
        for k, v in overrides.items():
            _set_dotted(d, resolve_key(k), v)
        return RunConfig.from_dict(d)


# ---------------------------------------------------------------- validation

def show_value(value: Any, limit: int = 80) -> str:
    """repr(value) for a message, shortened: a 10 MB string or a 5000-digit integer stays one short line."""
    try:
        text = repr(value)
    except ValueError:  # it holds an int past Python's 4300-digit limit for str(int)
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= limit else f"{text[:limit - 20]}… ({len(text)} characters)"


def _check(ok: bool, field_name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name} must be {allowed}, got {show_value(value)}", field=field_name)


def _is_num(x: Any) -> bool:
    """A finite int or float, not a bool (True is an int to Python, not a number to a person)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# The type of every field, by its annotation (``from __future__ import annotations`` makes them strings).
_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda x: isinstance(x, str), "a string"),
    "int": (_is_int, "an integer"),
    "float": (_is_num, "a finite number"),
    "bool": (lambda x: isinstance(x, bool), "true or false"),
    "tuple[float, ...]": (lambda x: isinstance(x, (list, tuple)) and all(_is_num(v) for v in x), "a list of numbers"),
    "tuple[str, ...]": (lambda x: isinstance(x, (list, tuple)) and all(isinstance(v, str) for v in x),
                        "a list of strings"),
}


def _check_types(obj: Any, prefix: str = "") -> None:
    """Every field of a config dataclass has its annotated type (ints are fine for floats; bools, NaN and
    inf are no numbers), so the range and cross-field checks after it compare numbers with numbers."""
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), prefix + f.name
        sub = _SUBCONFIGS.get(f.type)
        if sub is not None:
            _check(isinstance(value, sub), name, value,
                   "an object of " + ", ".join(g.name for g in dataclasses.fields(sub)))
            _check_types(value, prefix=f"{name}.")
            continue
        optional = f.type.endswith(" | None")
        ok, what = _TYPES[f.type.removesuffix(" | None")]
        _check((optional and value is None) or ok(value), name, value, f"null or {what}" if optional else what)


def _deeper_than(obj: Any, limit: int) -> bool:
    """``obj`` nests lists or objects more than ``limit`` levels deep (walked level by level, no recursion)."""
    level = [obj]
    for _ in range(limit + 1):
        level = [v for x in level if isinstance(x, (list, dict)) for v in (x.values() if isinstance(x, dict) else x)]
        if not level:
            return False
    return True


def check_name(name: Any, field_name: str = "name") -> None:
    """A run's name: what the form, --set name= and `rename` accept."""
    _check(isinstance(name, str) and 0 < len(name) <= NAME_MAX and name.isprintable() and name.strip() != "",
           field_name, name, f"a non-empty string of at most {NAME_MAX} printable characters")


def check_device(device: Any, field_name: str = "device") -> None:
    _check(isinstance(device, str) and re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", device) is not None,
           field_name, device, "auto, cpu, cuda or cuda:N")


def check_seed(seed: Any, field_name: str = "seed") -> None:
    _check(_is_int(seed) and 0 <= seed < SEED_RANGE, field_name, seed, "an integer in [0, 2^31)")


def _validate(c: RunConfig) -> None:
    from sdcore.models import list_models  # noqa: PLC0415 - a cycle: the models import the terms, which import this

    _check_types(c)  # first: every check below may compare and do arithmetic
    d, m, o = c.data, c.model, c.optim
    check_name(c.name)
    from sdcore.terms import BYOT_STYLES, parse_method  # noqa: PLC0415 - a cycle: terms imports this module
    from sdcore.terms import validate as validate_method  # noqa: PLC0415

    parse_method(c.method)
    _check(0 <= c.alpha <= 1, "alpha", c.alpha, "in [0, 1] (weight on the hard-label CE)")
    _temperature(c.temperature, "temperature")
    _check(0 <= c.rounds <= 20, "rounds", c.rounds, "an integer in [0, 20]")
    _check(1 <= c.epochs <= 10000, "epochs", c.epochs, "an integer in [1, 10000]")
    _check(0 <= c.hint_weight <= 100, "hint_weight", c.hint_weight, "in [0, 100]")
    _check(c.select in SELECTIONS, "select", c.select, f"one of {', '.join(SELECTIONS)}")
    _check(c.select != "best_val" or c.data.val_fraction > 0, "select", c.select,
           "last when data.val_fraction is 0 (best_val needs a validation split; "
           "the test split is never used to select)")
    _check(c.byot_style in BYOT_STYLES, "byot_style", c.byot_style, f"one of {', '.join(BYOT_STYLES)}")
    _check(c.pskd_alpha is None or 0 <= c.pskd_alpha <= 1, "pskd_alpha", c.pskd_alpha,
           "null (use alpha) or in [0, 1] (PS-KD's hard-label weight at the last epoch)")
    _check(0 <= c.threads <= 1024, "threads", c.threads,
           "an integer in [0, 1024] (0 = by model size)")
    _check(0 <= c.dmfl_weight <= 100, "dmfl_weight", c.dmfl_weight, "in [0, 100]")
    _temperature(c.dmfl_temperature, "dmfl_temperature")
    check_seed(c.seed)
    _check(c.precision in ("fp32", "bf16"), "precision", c.precision, "fp32 or bf16")
    _check(16 <= c.sharpness_subset <= 100000, "sharpness_subset",
           c.sharpness_subset, "an integer in [16, 100000] (training examples)")
    _check(1 <= c.sharpness_steps <= 200, "sharpness_steps", c.sharpness_steps,
           "an integer in [1, 200] (Lanczos steps per epoch)")
    check_device(c.device)

    _check(d.name in DATASETS, "data.name", d.name, f"one of {', '.join(DATASETS)}")
    _check(d.root.strip() != "" and "\0" not in d.root and len(d.root) <= VALUE_LIMIT
           and all(len(part) <= 255 for part in re.split(r"[/\\]", d.root)), "data.root", d.root,
           f"a folder path (at most {VALUE_LIMIT} characters, 255 per name, no NUL)")
    _check(0 <= d.label_noise < 1, "data.label_noise", d.label_noise, "in [0, 1)")
    _check(0 <= d.val_fraction <= 0.5, "data.val_fraction", d.val_fraction, "in [0, 0.5]")
    _check(d.subset is None or 10 <= d.subset <= 10**8, "data.subset", d.subset, "null or an integer in [10, 10^8]")
    _check(d.augment_policy in ("crop_flip", "autoaugment"), "data.augment_policy", d.augment_policy,
           "crop_flip or autoaugment")
    _check(d.augment or d.augment_policy == "crop_flip", "data.augment_policy", d.augment_policy,
           "crop_flip when data.augment is false (the policy says how to augment)")
    _check(d.normalize in ("dataset", "imagenet"), "data.normalize", d.normalize, "dataset or imagenet")
    _check(d.name != "tensors" or (d.file is not None and d.file.strip() != ""), "data.file", d.file,
           "the path of a .npz or .pt file when data.name is tensors")
    _check(d.file is None or ("\0" not in d.file and len(d.file) <= VALUE_LIMIT), "data.file", d.file,
           f"null or a file path (at most {VALUE_LIMIT} characters, no NUL)")
    _check(100 <= d.size <= 10**6, "data.size", d.size, "an integer in [100, 10^6] (mnist1d examples generated)")
    _check(d.normalize == "dataset" or d.name not in ("digits", "mnist", "fashionmnist"), "data.normalize",
           d.normalize, f"dataset for {d.name} (ImageNet's mean and std are for 3-channel images)")

    names = list_models()
    _check(m.arch in names or is_external(m.arch), "model.arch", m.arch,
           f"one of {', '.join(names)}, or your own model as file.py:function, package.module:function, "
           "timm:<name> or torchvision:<name>")
    _check(0.125 <= m.width <= 8, "model.width", m.width, "in [0.125, 8]")
    _check(m.width == 1 or not is_external(m.arch), "model.width", m.width,
           "1 for your own model (the width multiplier scales sdlab's architectures only)")
    _check(m.skip or m.arch.startswith("resnet"), "model.skip", m.skip,
           "true for non-ResNet architectures (only ResNets have skip connections to remove)")
    _check(not m.exit_nodes or (is_external(m.arch) and m.exits), "model.exit_nodes", list(m.exit_nodes),
           "empty unless model.exits is true on your own model (sdlab's architectures have their sections)")
    _check(len(m.exit_nodes) <= 16 and all(0 < len(n) <= 200 and n.isprintable() for n in m.exit_nodes),
           "model.exit_nodes", list(m.exit_nodes), "at most 16 node names such as layer1 or features.5")
    _check(m.teacher_weights is None or (m.teacher_weights.strip() != "" and "\0" not in m.teacher_weights
                                         and len(m.teacher_weights) <= VALUE_LIMIT),
           "model.teacher_weights", m.teacher_weights, "null (train the teacher) or the path of a state-dict file")
    _check(m.teacher_weights is None or m.teachers == 1, "model.teacher_weights", m.teacher_weights,
           "null with model.teachers > 1 (one file gives one teacher)")
    _check(1 <= m.peers <= 8, "model.peers", m.peers, "an integer in [1, 8]")
    _check(1 <= m.teachers <= 9, "model.teachers", m.teachers, "an integer in [1, 9]")

    _check(o.name in OPTIMIZERS, "optim.name", o.name, f"one of {', '.join(OPTIMIZERS)}")
    _check(0 < o.lr <= 10, "optim.lr", o.lr, "in (0, 10]")
    _check(0 <= o.momentum < 1, "optim.momentum", o.momentum, "in [0, 1)")
    _check(not (o.nesterov and o.momentum == 0), "optim.nesterov", o.nesterov, "false when momentum is 0")
    _check(0 <= o.weight_decay <= 1, "optim.weight_decay", o.weight_decay, "in [0, 1]")
    _check(1 <= o.batch_size <= 65536, "optim.batch_size", o.batch_size, "an integer in [1, 65536]")
    _check(0 <= o.grad_clip <= 1e6, "optim.grad_clip", o.grad_clip,
           "in [0, 1e6] (0 disables clipping)")
    _check(o.schedule in SCHEDULES, "optim.schedule", o.schedule, f"one of {', '.join(SCHEDULES)}")
    _check(o.sam_rho is None or 0 <= o.sam_rho <= 10, "optim.sam_rho", o.sam_rho,
           "null (off) or in [0, 10] (SAM's neighbourhood radius)")
    _check(o.sam_rho is None or m.teachers == 1, "optim.sam_rho", o.sam_rho,
           "null with model.teachers > 1 (SAM's ascent step would couple the teachers through one gradient norm)")
    ms = o.step_milestones
    _check(all(0 < x < 1 for x in ms) and list(ms) == sorted(ms),
           "optim.step_milestones", ms, "increasing fractions of the epochs in (0, 1)")
    _check(0 < o.step_gamma <= 1, "optim.step_gamma", o.step_gamma, "in (0, 1]")
    _check(0 <= o.warmup_epochs < c.epochs, "optim.warmup_epochs", o.warmup_epochs,
           f"in [0, epochs={c.epochs})")
    validate_method(c)  # the method's own rules: rounds, exits, peers, teachers, SAM (sdcore.terms)


EXTERNAL_PREFIXES = ("timm:", "torchvision:")


def is_external(arch: str) -> bool:
    """``arch`` names a model from outside sdlab's registry: "timm:<name>", "torchvision:<name>", or a builder
    "<file.py or package.module>:<function>" (syntax only: nothing is imported here; sdcore.models.external
    builds it)."""
    if arch.startswith(EXTERNAL_PREFIXES):
        return re.fullmatch(r"[A-Za-z0-9_.\-]+", arch.split(":", 1)[1]) is not None
    where, sep, fn = arch.rpartition(":")
    return bool(sep and where.strip() and "\0" not in arch and len(arch) <= VALUE_LIMIT
                and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", fn))


def _temperature(value: float, field_name: str) -> None:
    lo, hi = TEMPERATURE_RANGE
    _check(0 < value <= hi, field_name, value, f"in (0, {hi:g}]")  # first the sign and the ceiling, then the floor
    _check(value >= lo, field_name, value, f"in [{lo:g}, {hi:g}] (tau divides the logits: below {lo:g} they "
                                           "overflow into NaN)")


# ---------------------------------------------------------------- dict <-> dataclass

def _from_dict(cls: type, d: dict[str, Any], prefix: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for k, v in d.items():
        if k not in known:
            raise ConfigError(f"unknown config field {prefix}{show_value(k)[1:-1]}; known: {', '.join(known)}")
        sub = _SUBCONFIGS.get(known[k].type if isinstance(known[k].type, str) else "")
        if sub is not None:
            if not isinstance(v, dict):
                raise ConfigError(f"{prefix}{k} must be an object, got {show_value(v)}")
            v = _from_dict(sub, v, prefix=f"{prefix}{k}.")
        elif k in ("step_milestones", "exit_nodes") and isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)


_SUBCONFIGS = {"DataConfig": DataConfig, "ModelConfig": ModelConfig, "OptimConfig": OptimConfig}


def _leaf_keys() -> list[str]:
    keys = []
    for f in dataclasses.fields(RunConfig):
        sub = _SUBCONFIGS.get(f.type if isinstance(f.type, str) else "")
        keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(sub)] if sub else [f.name]
    return keys


def resolve_key(key: str) -> str:
    """Dotted key for a user key: "data.label_noise" as is, or an unambiguous leaf name ("lr")."""
    keys = _leaf_keys()
    if key in keys:
        return key
    hits = [k for k in keys if k.split(".")[-1] == key]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ConfigError(f"config key {key!r} is ambiguous: use one of {', '.join(hits)}")
    raise ConfigError(f"unknown config key {show_value(key)}; known: {', '.join(keys)}")


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        d = d[p]
    d[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the CLI; the value is read as JSON when it parses, else as a string.

    ``lr=0.1`` -> ("optim.lr", 0.1); ``data.subset=null`` -> None; ``arch=resnet20`` -> "resnet20".
    """
    if "=" not in text:
        raise ConfigError(f"override {show_value(text)} must look like key=value")
    key, raw = text.split("=", 1)
    key = resolve_key(key.strip())
    raw = raw.strip()
    if len(raw) > VALUE_LIMIT:
        raise ConfigError(f"the value of {key} is {len(raw)} characters long; at most {VALUE_LIMIT}", field=key)
    unreadable = ConfigError(f"{key} must be a number, a string, true, false, null or a list of numbers, "
                             f"got {show_value(raw)}", field=key)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        low = raw.lower()
        value = {"true": True, "false": False, "none": None}.get(low, raw)
    except (ValueError, RecursionError):  # an int past Python's 4300-digit limit; nesting past the parser's
        raise unreadable from None
    if _deeper_than(value, 1):  # deeper than step_milestones' list: not a value of any field
        raise unreadable
    return key, value


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """``cfg`` with CLI/sweep overrides; a new method brings the exits it needs (``model.exits``) and,
    leaving multi-round KD, rounds=0, unless those are overridden too: ``--set method=pskd+byot`` works
    on the demo preset as it is."""
    changes = dict(parse_override(o) for o in overrides)
    if isinstance(changes.get("method"), str):
        from sdcore import terms  # noqa: PLC0415 - a cycle: terms imports this module

        try:
            changes.setdefault("model.exits", terms.needs_exits(changes["method"]))
            if not terms.is_multi_round(changes["method"]):
                changes.setdefault("rounds", 0)
        except ConfigError:
            pass  # validation reports the bad method
    return cfg.replace(**changes)


# ---------------------------------------------------------------- presets

@dataclass(frozen=True)
class Preset:
    name: str
    description: str  # what it shows and which paper setting it mirrors
    build: Callable[[], RunConfig]


PRESETS: dict[str, Preset] = {}


def _preset(name: str, description: str):
    def deco(fn: Callable[[], RunConfig]) -> Callable[[], RunConfig]:
        PRESETS[name] = Preset(name, description, fn)
        return fn
    return deco


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name].build()


def _demo_base(name: str, noise: float) -> RunConfig:
    # Settings chosen by measurement over 3 seeds (BENCHMARKS.md, "demo preset").
    return RunConfig(
        name=name, method="kd", alpha=0.2, temperature=4.0, rounds=2, epochs=30, seed=0,
        data=DataConfig(name="digits", label_noise=noise, val_fraction=0.1),
        model=ModelConfig(arch="cnn", width=1.0),
        optim=OptimConfig(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=64,
                          grad_clip=5.0, schedule="cosine"),
    )


@_preset("demo", "Embedded digits with 30% symmetric label noise on the training split; a teacher and 2 "
                 "self-distilled students (pure distillation: alpha=0, tau=4), 15 epochs each, every round kept at "
                 "its last epoch. On 3 of 3 seeds each student is more accurate than the teacher and sits in a "
                 "flatter minimum (smaller Hessian lambda_max and trace), Pham et al.'s two findings on the same "
                 "models (BENCHMARKS.md, 'The one-click demo').")
def _demo() -> RunConfig:
    return _demo_base("demo", 0.3).replace(select="last", epochs=15, alpha=0.0)


@_preset("demo-clean", "Embedded digits with clean labels: every round reaches ~99% test accuracy, so the "
                       "story to look at is curvature, not accuracy: Pham et al. Sec. 5 find students in "
                       "flatter minima (smaller Hessian lambda_max and trace); at this scale the effect is "
                       "noisy across seeds (BENCHMARKS.md).")
def _demo_clean() -> RunConfig:
    return _demo_base("demo-clean", 0.0)


@_preset("demo-last", "The 30-epoch demo (alpha=0.2) with every round kept at its last epoch, as Pham et al. "
                      "train: the teacher memorizes more of the noisy labels; its students are flatter (smaller "
                      "Hessian lambda_max and trace on 3/3 seeds) but more accurate only on average "
                      "(BENCHMARKS.md). Compare with demo (15 epochs): how long the teacher trains decides whether "
                      "its students also beat it.")
def _demo_last() -> RunConfig:
    return _demo_base("demo-last", 0.3).replace(select="last")


@_preset("demo-sam", "The flat-minimum baseline for demo-last: its teacher alone (no students) trained with SAM "
                     "(Foret et al.) at rho=0.05, their CIFAR radius. Add it as a baseline on the Hessian and "
                     "Loss surface pages next to demo-last's rounds. At this scale rho matters a lot: 0.05 ends "
                     "sharper than the students, 0.5 far flatter and more accurate (BENCHMARKS.md).")
def _demo_sam() -> RunConfig:
    cfg = _demo_base("demo-sam", 0.3).replace(select="last", rounds=0)
    return cfg.replace(**{"optim.sam_rho": 0.05})


@_preset("demo-dml", "Deep mutual learning (Zhang et al. 2018; seed paper 003's DML) on the demo's data: two "
                     "CNNs trained together from scratch, each on the labels and on the other's predictions "
                     "(alpha=0.5, tau=1: DML's CE + KL up to a factor 2). No teacher is trained first; peer 1 "
                     "is the model reported, every peer and their ensemble are in the metrics.")
def _demo_dml() -> RunConfig:
    return _demo_base("demo-dml", 0.3).replace(method="dml", rounds=0, alpha=0.5, temperature=1.0,
                                               **{"model.peers": 2})


@_preset("mnist1d", "The demo's recipe on a harder set: MNIST-1D (Greydanus 2020, generated from its published "
                    "recipe and seed; 40-point signals, 1000 test examples), 1000 training examples with 30% of "
                    "their labels flipped, a teacher and 2 students (pure distillation: alpha=0, tau=4, so students "
                    "see the teacher's predictions, never the flipped labels), 40 epochs each, every round kept at "
                    "its last epoch. The teacher stays far from 100% (under 80% test accuracy) and each round beats "
                    "the one before it, on 3 of 3 seeds (BENCHMARKS.md, 'MNIST-1D').")
def _mnist1d() -> RunConfig:
    return _demo_base("mnist1d", 0.3).replace(select="last", epochs=40, alpha=0.0, **{
        "data.name": "mnist1d", "data.size": 5000, "data.subset": 1000})


# Seed paper 003 (PS-KD with BYOT and deep mutual feature learning), Sec. 3: PS-KD alpha_T = 0.8 (sdlab's
# final hard-label weight 0.2); BYOT Eq. 2 with alpha = 0.1 (sdlab's hard-label weight 0.9) and lambda = 1e-6,
# as luanyunteng's code computes it (tau = 3, that code's default); DMFL Eq. 3 added with weight 1.
SEED003_ROWS = ("baseline", "byot", "pskd", "dmfl", "pskd-byot", "pskd-dmfl", "byot-dmfl", "pskd-byot-dmfl")


def seed003_method(row: str) -> str:
    """The method of a seed-paper-003 row: "baseline" -> "ce", "pskd-byot" -> "pskd+byot"."""
    return "ce" if row == "baseline" else row.replace("-", "+")


def seed003_terms(cfg: RunConfig, row: str) -> RunConfig:
    """``cfg`` with seed paper 003's row ``row`` (one of SEED003_ROWS) and that paper's term settings."""
    from sdcore.terms import needs_exits  # noqa: PLC0415 - a cycle: terms imports this module

    cfg = cfg.replace(method=seed003_method(row), rounds=0, alpha=0.9,
                      temperature=3.0, hint_weight=1e-6, byot_style="luan", pskd_alpha=0.2, pskd_exits=True,
                      dmfl_weight=1.0, dmfl_temperature=1.0)
    return cfg.replace(**{"model.exits": needs_exits(cfg)})


_SEED003_WHAT = {
    "baseline": "the CNN on the labels alone",
    "byot": "BYOT: the deepest of 3 exits teaches the shallow ones",
    "pskd": "PS-KD: targets mix in last epoch's predictions",
    "dmfl": "DMFL: each exit's feature learns with the deepest's (symmetric KL)",
}
for _row in SEED003_ROWS:
    _what = _SEED003_WHAT.get(_row) or " + ".join(_SEED003_WHAT[t].split(":")[0] for t in _row.split("-"))
    _preset(f"demo-{_row}", f"Seed paper 003 Table 1's '{_row}' row on the demo's data (digits, 30% label noise, "
                            f"the demo's CNN, optimizer and 30 epochs): {_what}. The paper's term settings: PS-KD "
                            "alpha_T 0.8 (pskd_alpha=0.2), BYOT as luanyunteng's code (byot_style=luan, alpha=0.9 "
                            "i.e. its 0.1 on the KL, tau 3, hint 1e-6), DMFL weight 1. The 8 rows side by side: "
                            "Compare page, 'Self-distillation terms'; measured over 3 seeds in BENCHMARKS.md.")(
        lambda row=_row: seed003_terms(_demo_base(f"demo-{row}", 0.3), row))


def _pham(alpha: float, arch: str = "resnet18", dataset: str = "cifar10", skip: bool = True,
          name: str | None = None, policy: str = "crop_flip") -> RunConfig:
    # Pham et al., Appendix "Training details" and Sec. 6: SGD momentum 0.9, lr 0.025, wd 3e-4,
    # batch 96, grad-clip 5.0, cosine schedule, 3 rounds; Table 2 reports alpha 0.2/0.5/0.8.
    # The paper trains 600 epochs; sdlab's crop+flip is its "no data augmentation" setting, and
    # policy="autoaugment" its "Yes" rows' Cutout + AutoAugment (data.AUGMENT_POLICIES).
    return RunConfig(
        name=name or f"pham-{dataset}-{arch}-a{alpha}", method="kd", alpha=alpha, temperature=4.0, rounds=3,
        epochs=600, data=DataConfig(name=dataset, augment=True, augment_policy=policy, val_fraction=0.1),
        model=ModelConfig(arch=arch, skip=skip),
        optim=OptimConfig(name="sgd", lr=0.025, momentum=0.9, weight_decay=3e-4, batch_size=96, grad_clip=5.0,
                          schedule="cosine"),
    )


def _paper_line(name: str) -> str:
    from sdcore.paper import PAPER  # noqa: PLC0415 - a cycle: paper imports the terms, which import this

    p = PAPER[name]
    cells = ", ".join(f"{c} {v[0]:g}" for c, v in p.columns)
    return f" Paper ({p.source}): {cells}. About {p.gpu_hours:g} GPU-hours (estimate)."


_SETUP = "SGD lr 0.025, momentum 0.9, wd 3e-4, batch 96, clip 5, cosine, 3 rounds, 600 epochs, crop+flip"
for _arch, _label in (("resnet18", "ResNet-18"), ("vgg16", "VGG-16")):
    for _aug in (False, True):
        for _a in (0.2, 0.5, 0.8):
            _n = f"pham-cifar10-{_arch}-{'aug-' if _aug else ''}a{_a}"
            _preset(_n, f"Pham et al. Table 2{' with data augmentation' if _aug else ''}, {_label} on CIFAR-10, "
                        f"alpha={_a} (sdlab's convention = the paper's): {_SETUP}"
                        f"{' + AutoAugment (CIFAR-10 policy) + Cutout 16px' if _aug else ''}. Needs CIFAR-10 in "
                        "data.root." + _paper_line(_n))(
                lambda a=_a, arch=_arch, n=_n, aug=_aug: _pham(a, arch, name=n,
                                                               policy="autoaugment" if aug else "crop_flip"))

_preset("pham-cifar10-resnet18", "Alias of pham-cifar10-resnet18-a0.5 (Pham et al. Table 2, middle alpha).")(
    lambda: _pham(0.5, name="pham-cifar10-resnet18"))
_preset("pham-cifar10-resnet20", f"Pham et al. Table 3, ResNet-20 on CIFAR-10, alpha=0.2: {_SETUP}. Needs "
                                  "CIFAR-10." + _paper_line("pham-cifar10-resnet20"))(
    lambda: _pham(0.2, "resnet20", name="pham-cifar10-resnet20"))
_preset("pham-cifar10-resnet20-noskip", f"Pham et al. Table 3, ResNet-20 without skip connections (Li et al.'s "
                                         f"sharp no-skip net) on CIFAR-10, alpha=0.2: {_SETUP}. Needs CIFAR-10."
                                         + _paper_line("pham-cifar10-resnet20-noskip"))(
    lambda: _pham(0.2, "resnet20", skip=False, name="pham-cifar10-resnet20-noskip"))
_preset("pham-svhn-resnet18", f"Pham et al. Appendix C Table 4, ResNet-18 on SVHN, alpha=0.5: {_SETUP}. Needs "
                              "SVHN in data.root." + _paper_line("pham-svhn-resnet18"))(
    lambda: _pham(0.5, dataset="svhn", name="pham-svhn-resnet18"))


@_preset("byot-cifar100-resnet18",
         "BYOT (Zhang et al.) Table 1, ResNet-18 on CIFAR-100, 4 exits, with the loss of the first author's final "
         "code (byot_style=zhang): shallow exits 0.7 CE + 0.3 soft-target CE at tau 3 without tau^2 (their "
         "loss_coefficient 0.3, so sdlab alpha = 0.7), + 0.03 ||A_i F_i - F_C||_2 through learned adapters; the "
         "deepest exit CE. SGD lr 0.1, momentum 0.9, wd 5e-4, batch 128, 200 epochs, x0.1 at 1/2 and 3/4. "
         "Needs CIFAR-100." + _paper_line("byot-cifar100-resnet18"))
def _byot() -> RunConfig:
    return RunConfig(
        name="byot-cifar100-resnet18", method="byot", alpha=0.7, temperature=3.0, rounds=0, epochs=200,
        hint_weight=0.03, byot_style="zhang",
        data=DataConfig(name="cifar100", augment=True, val_fraction=0.1),
        model=ModelConfig(arch="resnet18", exits=True),
        optim=OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=128, grad_clip=0.0,
                          schedule="step", step_milestones=(0.5, 0.75)),
    )


@_preset("pskd-cifar100-resnet18",
         "PS-KD (Kim et al.; seed paper 003 Sec. 4) ResNet-18 on CIFAR-100: targets (1-a_t)*y + a_t*p_prev with "
         "a_t growing linearly to alpha_T=0.8, so sdlab alpha (final hard-label weight) = 0.2. Nesterov SGD lr 0.1, "
         "momentum 0.9, wd 5e-4, batch 128, 300 epochs, x0.1 at 150 and 225. Needs CIFAR-100."
         + _paper_line("pskd-cifar100-resnet18"))
def _pskd() -> RunConfig:
    return RunConfig(
        name="pskd-cifar100-resnet18", method="pskd", alpha=0.2, temperature=1.0, rounds=0, epochs=300,
        data=DataConfig(name="cifar100", augment=True, val_fraction=0.1),
        model=ModelConfig(arch="resnet18"),
        optim=OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, batch_size=128,
                          grad_clip=0.0, schedule="step", step_milestones=(0.5, 0.75)),
    )


def _seed003_cifar(arch: str, row: str) -> RunConfig:
    # Seed paper 003 Sec. 4.1: Nesterov SGD lr 0.1, momentum 0.9, wd 5e-4, batch 128, random crop (pad 4) +
    # flip, ImageNet mean/std. Epochs and schedule are not stated: PS-KD's (300 epochs, x0.1 at 150 and 225).
    base = RunConfig(
        name=f"pskdml-cifar100-{arch}-{row}", epochs=300, select="best_val",
        data=DataConfig(name="cifar100", augment=True, val_fraction=0.1, normalize="imagenet"),
        model=ModelConfig(arch=arch),
        optim=OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, batch_size=128,
                          grad_clip=0.0, schedule="step", step_milestones=(0.5, 0.75)))
    return seed003_terms(base, row)


for _arch in ("resnet18", "resnet50", "resnext50_32x4d"):
    for _row in SEED003_ROWS:
        _n = f"pskdml-cifar100-{_arch}-{_row}"
        _preset(_n, f"Seed paper 003 (PS-KD with BYOT and DMFL) Table 1, {_arch} on CIFAR-100, row '{_row}': the "
                    "paper's term settings (as the demo-<terms> presets) and training setup (Nesterov SGD lr 0.1, "
                    "momentum 0.9, wd 5e-4, batch 128, crop+flip, ImageNet mean/std; 300 epochs x0.1 at 150/225, "
                    "PS-KD's, as the paper gives none). Needs CIFAR-100." + _paper_line(_n))(
            lambda arch=_arch, row=_row: _seed003_cifar(arch, row))
