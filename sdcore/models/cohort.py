"""A cohort of peer networks trained together (deep mutual learning, Zhang et al. 2018).

    cohort = create("cnn", num_classes=10, peers=2)   # a Cohort of two independently initialised CNNs
    cohort(x)                                         # peer 1's logits: the model sdlab reports and analyses
    cohort.forward_peers(x)                           # every peer's logits, [K] x [B, C]

The peers share nothing but the batches they see; their parameters are disjoint, so one optimizer
over the cohort steps each peer exactly as its own optimizer would (gradient clipping is applied per
peer by the training loop, see ``clip_groups``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Cohort(nn.Module):
    """``ensemble=False`` (deep mutual learning): forward is peer 1's logits. ``ensemble=True`` (Pham
    et al.'s ensemble of independently trained teachers, Sec. 3): forward is the mean of the peers' logits."""

    def __init__(self, peers: list[nn.Module], *, ensemble: bool = False):
        super().__init__()
        if not peers:
            raise ValueError("a cohort needs at least one peer")
        self.peers = nn.ModuleList(peers)
        self.ensemble = ensemble

    @property
    def num_peers(self) -> int:
        return len(self.peers)

    def forward(self, x: Tensor) -> Tensor:
        if self.ensemble:
            return torch.stack([p(x) for p in self.peers]).mean(0)
        return self.peers[0](x)

    def forward_peers(self, x: Tensor) -> list[Tensor]:
        return [p(x) for p in self.peers]

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """Each peer's trainable parameters: gradient clipping acts on each peer's own norm."""
        return [[p for p in peer.parameters() if p.requires_grad] for peer in self.peers]


def is_cohort(model: nn.Module) -> bool:
    """True for a Cohort, also behind torch.compile's wrapper."""
    return isinstance(getattr(model, "_orig_mod", model), Cohort)
