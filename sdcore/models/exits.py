"""The BYOT shallow exits (Zhang et al. 2019, "Be Your Own Teacher", Sec. 3, Fig. 2) that
``SectionNet`` (``base.py``) attaches, and the conv-BN-ReLU unit the backbones and exits share.

Sections are where BYOT taps the backbone: an exit sits after every section but the last, and
the deepest exit is the backbone's own head (``SectionNet.forward_head``). Each shallow exit is

    section output [B, c_i, H_i, W_i]
      -> bottleneck (k x k conv with stride k to D/4 channels, 1x1 expand to D; each conv-BN-ReLU),
         k = 2^(stride-2 steps the backbone takes after section i), so channels and scale match
         the deepest section (k = 1: 1x1 reduce, 3x3, 1x1 expand)
      -> global average pool -> feature F_i [B, D]  (D = channels of the deepest section)
      -> Linear(D, num_classes)

so every exit's feature has the deepest feature's size D and the hint loss ||F_i - F_C||^2 is
defined without further adapters. One strided k x k conv instead of a stack of 3x3 stride-2
blocks keeps the exits cheap: on ResNet-18 they add ~3% of the backbone's multiply-adds instead
of ~25% (BENCHMARKS.md, "BYOT epoch / plain epoch").
"""
from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn


class ExitOutputs(NamedTuple):
    logits: list[Tensor]  # one [B, num_classes] per exit, shallow first, deepest last
    features: list[Tensor]  # one [B, D] per exit, same D for all (the hint loss compares them)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias: BN's shift replaces it) -> BN -> ReLU; 'same' padding for odd kernels, none for
    even ones (a k x k stride-k conv tiles the map into patches)."""
    padding = kernel_size // 2 if kernel_size % 2 else 0
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


def bottleneck(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Narrow-then-wide block without shortcut, middle width out/4 (He et al.'s expansion 4).

    stride > 1: a k x k stride-k conv reduces channels and scale in one step (it reads every input
    pixel once, so the full-resolution 1x1 reduce of He et al.'s block would only add cost), then a
    1x1 conv expands. stride 1: 1x1 reduce, 3x3, 1x1 expand.
    """
    mid = max(1, out_channels // 4)
    reduce = [PadToMultiple(stride), conv_bn_relu(in_channels, mid, stride, stride)] if stride > 1 else \
        [conv_bn_relu(in_channels, mid, 1), conv_bn_relu(mid, mid, 3)]
    return nn.Sequential(*reduce, conv_bn_relu(mid, out_channels, 1))


class PadToMultiple(nn.Module):
    """Zero-pad H and W up to a multiple of k, so a k x k stride-k conv yields ceil(H/k) x ceil(W/k):
    the deepest map's size, since the backbone's stride-2 steps round up too (8x8 digits: 2x2 -> 1x1)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        return F.pad(x, (0, -w % self.k, 0, -h % self.k))


class Exit(nn.Module):
    """One shallow BYOT classifier: [B, c_i, H, W] -> (logits [B, num_classes], feature [B, dim])."""

    def __init__(self, in_channels: int, dim: int, num_classes: int, steps: int):
        super().__init__()
        self.bottleneck = bottleneck(in_channels, dim, stride=2**steps)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        feature = self.pool(self.bottleneck(h))
        return self.fc(feature), feature


def has_exits(model: nn.Module) -> bool:
    """True when the model has BYOT shallow exits besides its deepest classifier."""
    return getattr(model, "num_exits", 1) > 1

