"""ResNets with basic blocks (He et al. 2016).

CIFAR ResNets (Sec. 4.2): 3x3 stem with 16w channels, three stages of n blocks with 16/32/64 x w
channels (stride 1, 2, 2), depth 6n+2: resnet8/20/56 have n = 1/3/9. Where a block changes shape
the shortcut is a 1x1 conv + BN projection (option B); the paper's CIFAR nets use zero-padding
identity shortcuts (option A), so ours carry 2,752 more parameters at w=1 (resnet20: 0.272M vs 0.270M).

resnet18 is the CIFAR variant common in the KD literature (kuangliu/pytorch-cifar): BasicBlock
[2, 2, 2, 2] with 64..512 x w channels, a 3x3 stride-1 stem and no max-pool (11.17M parameters).

BYOT sections are the stages, the stem joining the first: 3 sections for the CIFAR ResNets (they
have 3 stages; the paper's 4 comes from ImageNet-style ResNets), 4 for resnet18.

skip=False removes every shortcut, projections included: each block becomes
relu(bn2(conv2(relu(bn1(conv1(x)))))), the "no-skip" nets of Li et al. 2018.
"""
from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from sdcore.models.exits import SectionNet, conv_bn_relu
from sdcore.models.registry import register, scale_width

# name -> (channels per stage, blocks per stage)
CONFIGS = {
    "resnet8": ((16, 32, 64), (1, 1, 1)),
    "resnet20": ((16, 32, 64), (3, 3, 3)),
    "resnet56": ((16, 32, 64), (9, 9, 9)),
    "resnet18": ((64, 128, 256, 512), (2, 2, 2, 2)),
}


class BasicBlock(nn.Module):
    """[B, c_in, H, W] -> [B, c_out, H/stride, W/stride]: relu(branch(x) + shortcut(x)), or relu(branch(x)) without skip."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, skip: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if not skip:
            self.shortcut = None
        elif stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


def _resnet(arch: str, *, num_classes: int, in_channels: int, image_size: int, width: float, skip: bool,
            exits: bool) -> SectionNet:
    # image_size is unused: the global pool makes the net size-agnostic.
    stage_channels, depths = CONFIGS[arch]
    channels = [scale_width(c, width) for c in stage_channels]
    sections, c_in = [], channels[0]
    for k, (c, n) in enumerate(zip(channels, depths)):
        stride = 1 if k == 0 else 2
        blocks = [BasicBlock(c_in if j == 0 else c, c, stride if j == 0 else 1, skip) for j in range(n)]
        stem = [conv_bn_relu(in_channels, channels[0])] if k == 0 else []
        sections.append(nn.Sequential(*stem, *blocks))
        c_in = c
    return SectionNet(arch=arch, sections=sections, channels=channels,
                      downsamples=[0] + [1] * (len(channels) - 1), num_classes=num_classes, exits=exits)


for _arch in CONFIGS:
    register(_arch)(partial(_resnet, _arch))
