"""ResNets with basic blocks (He et al. 2016) and bottleneck blocks (ResNet-50, ResNeXt-50).

CIFAR ResNets (Sec. 4.2): 3x3 stem with 16w channels, three stages of n blocks with 16/32/64 x w
channels (stride 1, 2, 2), depth 6n+2: resnet8/20/56 have n = 1/3/9. Where a block changes shape
the shortcut is a 1x1 conv + BN projection (option B); the paper's CIFAR nets use zero-padding
identity shortcuts (option A), so ours carry 2,752 more parameters at w=1 (resnet20: 0.272M vs 0.270M).

resnet18 is the CIFAR variant common in the KD literature (kuangliu/pytorch-cifar): BasicBlock
[2, 2, 2, 2] with 64..512 x w channels, a 3x3 stride-1 stem and no max-pool (11.17M parameters).

resnet50 and resnext50_32x4d are torchvision's nets (Bottleneck [3, 4, 6, 3], expansion 4, stride on
the 3x3 conv as in "ResNet v1.5"; ResNeXt: 32 groups of width 4 in the first stage) with the same
CIFAR stem as resnet18, as in the BYOT authors' code. Under the width multiplier the group count stays
32 and each group's width scales.

Parameters at 100 classes, w=1, without / with sdlab's exits: resnet18 11.22M / 12.49M, resnet50
23.71M / 42.16M, resnext50_32x4d 23.18M / 41.63M (the backbone counts are torchvision's with its 7x7
stem swapped for a 3x3 one; tests/test_models.py checks them exactly). The PS-KD + mutual learning
paper (Chottananurak et al., Table 1) gives 13.0M / 50.4M / 37.9M, exits included. Its exits are
luanyunteng/pytorch-be-your-own-teacher's: a 1x1 conv to 512*expansion/4 channels, a k x k stride-k
conv, a 1x1 expand, each with BN, plus a 1x1 stride-k "downsample" projection per exit that forward
never uses. That code has 13.24M (resnet18) and 54.11M (resnet50), or 13.01M and 50.43M without the
unused projections: the paper's first two counts. sdlab's exits (exits.py) have no 1x1 reduce before
the k x k conv and no unused projections, hence fewer parameters. No such construction gives 37.9M
for ResNeXt-50: its backbone has 23.18M and that code's exits add 26.73M.

BYOT sections are the stages, the stem joining the first: 3 sections for the CIFAR ResNets (they
have 3 stages; the paper's 4 comes from ImageNet-style ResNets), 4 for resnet18/50 and resnext50_32x4d.

skip=False removes every shortcut, projections included: each block becomes its residual branch
followed by ReLU, e.g. relu(bn2(conv2(relu(bn1(conv1(x)))))), the "no-skip" nets of Li et al. 2018.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from sdcore.models.base import SectionNet
from sdcore.models.exits import conv_bn_relu
from sdcore.models.registry import register, scale_width


class Spec(NamedTuple):
    planes: tuple[int, ...]  # per stage: a basic block's channels, a bottleneck's before expansion
    depths: tuple[int, ...]  # blocks per stage
    bottleneck: bool = False  # Bottleneck (output = 4 x planes) instead of BasicBlock
    groups: int = 1  # ResNeXt cardinality of the bottleneck's 3x3 conv
    base_width: int = 64  # channels per group at planes=64 (torchvision's width_per_group)


CONFIGS = {
    "resnet8": Spec((16, 32, 64), (1, 1, 1)),
    "resnet20": Spec((16, 32, 64), (3, 3, 3)),
    "resnet56": Spec((16, 32, 64), (9, 9, 9)),
    "resnet18": Spec((64, 128, 256, 512), (2, 2, 2, 2)),
    "resnet50": Spec((64, 128, 256, 512), (3, 4, 6, 3), bottleneck=True),
    "resnext50_32x4d": Spec((64, 128, 256, 512), (3, 4, 6, 3), bottleneck=True, groups=32, base_width=4),
}
EXPANSION = 4  # a bottleneck block's output channels / planes


def shortcut(in_channels: int, out_channels: int, stride: int, skip: bool) -> nn.Module | None:
    """None without skip; a 1x1 conv + BN projection where the block changes shape; else the identity."""
    if not skip:
        return None
    if stride != 1 or in_channels != out_channels:
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                             nn.BatchNorm2d(out_channels))
    return nn.Identity()


class BasicBlock(nn.Module):
    """[B, c_in, H, W] -> [B, c_out, H/stride, W/stride]: relu(branch(x) + shortcut(x)), or relu(branch(x))
    without skip."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, skip: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = shortcut(in_channels, out_channels, stride, skip)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class Bottleneck(nn.Module):
    """[B, c_in, H, W] -> [B, c_out, H/stride, W/stride]: 1x1 reduce to mid channels, 3x3 with the stride and
    ``groups`` groups, 1x1 expand to c_out (torchvision's Bottleneck); relu(branch(x) + shortcut(x)), or
    relu(branch(x)) without skip."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, skip: bool, *, mid_channels: int,
                 groups: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = shortcut(in_channels, out_channels, stride, skip)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


def _resnet(arch: str, *, num_classes: int, in_channels: int, image_size: int, width: float, skip: bool,
            exits: bool) -> SectionNet:
    # image_size is unused: the global pool makes the net size-agnostic.
    spec = CONFIGS[arch]
    expansion = EXPANSION if spec.bottleneck else 1
    channels = [scale_width(p * expansion, width) for p in spec.planes]
    sections, c_in = [], scale_width(spec.planes[0], width)  # the stem has planes[0] channels
    for k, (p, c, n) in enumerate(zip(spec.planes, channels, spec.depths)):
        stride = 1 if k == 0 else 2
        if spec.bottleneck:  # torchvision: int(planes * base_width / 64) * groups, width-scaled per group
            mid = spec.groups * scale_width(int(p * spec.base_width / 64), width)
            block = partial(Bottleneck, mid_channels=mid, groups=spec.groups)
        else:
            block = BasicBlock
        blocks = [block(c_in if j == 0 else c, c, stride if j == 0 else 1, skip) for j in range(n)]
        stem = [conv_bn_relu(in_channels, c_in)] if k == 0 else []
        sections.append(nn.Sequential(*stem, *blocks))
        c_in = c
    return SectionNet(arch=arch, sections=sections, channels=channels,
                      downsamples=[0] + [1] * (len(channels) - 1), num_classes=num_classes, exits=exits)


for _arch in CONFIGS:
    register(_arch)(partial(_resnet, _arch))
