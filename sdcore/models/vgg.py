"""VGG with BatchNorm, CIFAR style (Simonyan & Zisserman 2015, configs A and D): a stack of
3x3 conv-BN-ReLU stages, each closed by a 2x2 max-pool, then global average pool and a single
Linear(512w, num_classes) instead of the ImageNet 4096-wide head (vgg16: 14.73M parameters).

At 32x32 the five pools bring the map to 1x1, so the global pool is a no-op there; ceil_mode
lets tiny inputs (8x8 digits reach 1x1 after three pools) pass the remaining pools unchanged.

BYOT sections group the five pool stages as [1+2, 3, 4, 5], four sections as in the paper.
"""
from __future__ import annotations

from functools import partial

from torch import nn

from sdcore.models.base import SectionNet
from sdcore.models.exits import conv_bn_relu
from sdcore.models.registry import register, require_skip, scale_width

# Output channels of the 3x3 convs in each of the five pool stages.
STAGES = {
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
}
SECTION_STAGES = ((0, 1), (2,), (3,), (4,))  # stage indices per BYOT section


def _vgg(arch: str, *, num_classes: int, in_channels: int, image_size: int, width: float, skip: bool,
         exits: bool) -> SectionNet:
    # image_size is unused: the global pool makes the net size-agnostic.
    require_skip(arch, skip)
    sections, channels, c_in = [], [], in_channels
    for stage_ids in SECTION_STAGES:
        layers = []
        for s in stage_ids:
            for c in STAGES[arch][s]:
                layers.append(conv_bn_relu(c_in, scale_width(c, width)))
                c_in = scale_width(c, width)
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        sections.append(nn.Sequential(*layers))
        channels.append(c_in)
    return SectionNet(arch=arch, sections=sections, channels=channels,
                      downsamples=[len(ids) for ids in SECTION_STAGES], num_classes=num_classes, exits=exits)


for _arch in STAGES:
    register(_arch)(partial(_vgg, _arch))
