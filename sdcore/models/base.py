"""The skeleton every sdlab model shares, with timm's model surface (timm/models/resnet.py):

    x -> forward_features: the backbone's sections in order  -> last feature map [B, D, h, w]
      -> forward_head: global average pool, flatten           -> pooled feature [B, D]  (pre_logits=True)
                       Linear(D, num_classes)                 -> logits [B, num_classes]

``forward(x) = forward_head(forward_features(x))``. Sections are where BYOT taps the backbone:
with ``exits=True`` a shallow exit (``exits.py``) sits after every section but the last, and
``forward_exits`` returns every exit's logits and feature in one pass, the deepest exit being
``forward_head`` itself.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from sdcore.models.exits import Exit, ExitOutputs


class SectionNet(nn.Module):
    """A backbone as ordered sections, global average pool, one linear classifier; optional exits.

    ``channels[i]`` is section i's output channel count and ``downsamples[i]`` the number of
    stride-2 steps inside it; together they size exit i's bottleneck.
    """

    def __init__(
        self,
        *,
        arch: str,
        sections: Sequence[nn.Module],
        channels: Sequence[int],
        downsamples: Sequence[int],
        num_classes: int,
        exits: bool,
    ):
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        self.feature_dim = channels[-1]  # D, the size of every exit's feature
        self.sections = nn.ModuleList(sections)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(self.feature_dim, num_classes)
        shallow = range(len(sections) - 1) if exits else range(0)
        self.exit_heads = nn.ModuleList(
            Exit(channels[i], self.feature_dim, num_classes, steps=sum(downsamples[i + 1:])) for i in shallow
        )
        self.num_exits = len(self.exit_heads) + 1
        self.hint_adapters: nn.ModuleList | None = None  # BYOT zhang style: see add_hint_adapters
        init_weights(self)

    def add_hint_adapters(self) -> None:
        """BYOT's learned hint adapters: one Linear(D, D) per shallow exit (shallow first), applied to
        that exit's feature before the hint compares it with the deepest's. As in the first author's
        final code (``net.adaptation_layers``, PyTorch's default Linear init), one per shallow exit,
        the one nearest the deepest included though its hint is never computed."""
        if len(self.exit_heads) == 0:
            raise ValueError("hint adapters need the shallow exits (exits=True)")
        d = self.feature_dim
        self.hint_adapters = nn.ModuleList(nn.Linear(d, d) for _ in self.exit_heads)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last section's feature map [B, D, h, w]; the shallow exits are not computed."""
        for section in self.sections:
            x = section(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map [B, D, h, w] -> logits [B, num_classes], or the pooled feature [B, D] with
        ``pre_logits=True`` (the deepest exit's BYOT feature)."""
        x = self.pool(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        """Deepest logits [B, num_classes]; the shallow exits are not computed."""
        return self.forward_head(self.forward_features(x))

    def forward_exits(self, x: Tensor) -> ExitOutputs:
        """Logits and features of every exit, shallow first, one pass through the backbone."""
        logits, features = [], []
        for i, section in enumerate(self.sections):
            x = section(x)
            if i < len(self.exit_heads):  # exit i taps section i; the last section has none
                out, feature = self.exit_heads[i](x)
                logits.append(out)
                features.append(feature)
        feature = self.forward_head(x, pre_logits=True)
        logits.append(self.fc(feature))  # = forward_head(x), without pooling twice
        features.append(feature)
        return ExitOutputs(logits, features)

    def forward_exit(self, x: Tensor, i: int) -> Tensor:
        """Logits [B, num_classes] of exit i, running only the sections that exit needs."""
        if not 0 <= i < self.num_exits:
            raise IndexError(f"exit index must be in [0, {self.num_exits - 1}], got {i}")
        if i == self.num_exits - 1:
            return self.forward(x)
        for section in self.sections[: i + 1]:
            x = section(x)
        return self.exit_heads[i](x)[0]


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, as torchvision's ResNets), BN scale 1 shift 0; Linear keeps torch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
