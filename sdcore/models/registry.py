"""Model registry in the style of timm's ``register_model`` / ``create_model``.

Every builder has the keyword-only signature
``fn(*, num_classes, in_channels, image_size, width, skip, exits) -> nn.Module``
so that a config (``sdcore.config.ModelConfig``) maps onto ``create`` one-to-one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from torch import nn

from sdcore.config import is_external
from sdcore.models import external
from sdcore.models.cohort import Cohort
from sdcore.terms import hint_adapters

if TYPE_CHECKING:  # for the annotation only: sdcore.config imports this package (late), and vice versa would cycle
    from sdcore.config import RunConfig

Builder = Callable[..., nn.Module]

_BUILDERS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make ``fn`` reachable as ``create(name, ...)``."""

    def decorator(fn: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_BUILDERS)


def create(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    width: float = 1.0,
    skip: bool = True,
    exits: bool = False,
    peers: int = 1,
    ensemble: bool = False,
    hint_adapters: bool = False,
    exit_nodes: tuple[str, ...] = (),
    input_size: tuple[int, int] | None = None,
) -> nn.Module:
    """Build a fresh model; its ``forward(x)`` maps [B, in_channels, H, W] to logits [B, num_classes].

    ``width`` scales every channel count, ``skip=False`` removes all residual connections (ResNets
    only), ``exits=True`` attaches the BYOT shallow exits (see ``exits.py``), ``peers=K > 1`` returns
    a ``Cohort`` of K such networks initialised one after the other (deep mutual learning; peer 1 gets
    exactly the weights ``peers=1`` would; ``ensemble=True``: its forward averages the peers' logits).
    ``hint_adapters=True`` (with exits) adds BYOT's learned hint adapters (``SectionNet.hint_adapters``).
    Weights are drawn from torch's global RNG, so seed it with ``torch.manual_seed`` for a reproducible init.
    ``name`` may also be your own model ("file.py:fn", "package.module:fn", "timm:<name>", "torchvision:<name>",
    ``external.py``), checked on a probe batch (image_size x image_size, or ``input_size`` (H, W) where the data's
    images are not square); ``exit_nodes`` name where its exits tap it (() = automatic).
    """
    if is_external(name):
        if width != 1 or not skip:
            raise ValueError(f"width and skip change sdlab's own architectures only, not {name}")
    elif name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if num_classes < 1 or in_channels < 1 or image_size < 1:
        raise ValueError(
            f"num_classes, in_channels and image_size must be >= 1, "
            f"got {num_classes}, {in_channels}, {image_size}"
        )
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    if not isinstance(peers, int) or peers < 1:
        raise ValueError(f"peers must be an int >= 1, got {peers!r}")
    if hint_adapters and not exits:
        raise ValueError("hint_adapters need the shallow exits (exits=True)")

    def build() -> nn.Module:
        if is_external(name):
            net = external.build(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                                 exits=exits, exit_nodes=exit_nodes, input_size=input_size)
        else:
            net = _BUILDERS[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                                  width=width, skip=skip, exits=exits)
        if hint_adapters:
            net.add_hint_adapters()
        return net
    if peers == 1:
        return build()
    return Cohort([build() for _ in range(peers)], ensemble=ensemble)


def scale_width(channels: int, width: float) -> int:
    """Channel count of a layer under the width multiplier; never below one channel."""
    return max(1, round(channels * width))


def require_skip(arch: str, skip: bool) -> None:
    """Called by builders of nets without residual connections, where skip=False would be a silent no-op."""
    if not skip:
        raise ValueError(f"skip=False removes residual connections, but {arch} has none; use a resnet")


def model_for_round(cfg: RunConfig, round_idx: int, *, num_classes: int, in_channels: int,
                    image_size: int, height: int | None = None, width: int | None = None) -> nn.Module:
    """The (untrained) network a run's config trains in round ``round_idx`` (0: the teacher, or the
    only round); ``num_classes``, ``in_channels`` and ``image_size`` come from the data, not ``cfg``.

    From ``cfg.model`` it reads ``arch``, ``width``, ``skip`` and ``exits`` (passed to ``create``),
    ``teachers`` (> 1: round 0 is an ensemble ``Cohort`` of that many networks, every later round one
    network) and ``peers`` (> 1, any round but an ensemble teacher's: a DML ``Cohort``); from
    ``cfg.method`` and ``cfg.byot_style`` (``sdcore.terms.hint_adapters``) whether BYOT's zhang style
    adds its learned hint adapters. Seed torch's global RNG first for a reproducible init.
    """
    m = cfg.model
    common = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size, width=m.width,
                  skip=m.skip, exits=m.exits, hint_adapters=hint_adapters(cfg), exit_nodes=tuple(m.exit_nodes),
                  input_size=(height, width) if height and width else None)
    if round_idx == 0 and m.teachers > 1:
        return create(m.arch, peers=m.teachers, ensemble=True, **common)
    return create(m.arch, peers=m.peers, **common)
