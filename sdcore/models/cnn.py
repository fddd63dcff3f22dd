"""Small CNN sized for the embedded 8x8 one-channel digits; any input of at least 1x1 works (28x28, 32x32...).

    x [B, c, H, W] -> conv-BN-ReLU 32      [B, 32w, H, W]        section 0
      -> max-pool 2 -> conv-BN-ReLU 64     [B, 64w, H/2, W/2]    section 1
      -> max-pool 2 -> conv-BN-ReLU 128    [B, 128w, H/4, W/4]   section 2
      -> global average pool -> Linear(128w, num_classes)

The pools open sections 1 and 2 (rather than close 0 and 1) so that every BYOT exit reads a
feature map the backbone later downsamples, and exit 0 sees the full-resolution 8x8 map.
"""
from __future__ import annotations

from torch import nn

from sdcore.models.base import SectionNet
from sdcore.models.exits import conv_bn_relu
from sdcore.models.registry import register, require_skip, scale_width

CHANNELS = (32, 64, 128)


@register("cnn")
def cnn(*, num_classes: int, in_channels: int, image_size: int, width: float, skip: bool, exits: bool) -> SectionNet:
    # image_size is unused: the global pool makes the net size-agnostic.
    require_skip("cnn", skip)
    channels = [scale_width(c, width) for c in CHANNELS]
    sections = [conv_bn_relu(in_channels, channels[0])]
    for c_in, c_out in zip(channels, channels[1:]):
        # ceil_mode keeps odd borders (7 -> 4) and lets a 1x1 map pass through unchanged.
        sections.append(nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), conv_bn_relu(c_in, c_out)))
    return SectionNet(arch="cnn", sections=sections, channels=channels, downsamples=[0, 1, 1],
                      num_classes=num_classes, exits=exits)
