"""Be Your Own Teacher (Zhang et al.): one multi-exit network, the deepest exit teaches the others.

All exits train together in one run (BYOT Eq. 5 via losses.byot_loss). Validation selects on the
deepest exit; evaluation reports every exit and their softmax ensemble.
"""
from __future__ import annotations

from sdcore.config import RunConfig
from sdcore.engine import LossFn, RoundResult, Session
from sdcore.losses import byot_loss


def loss_fn(cfg: RunConfig) -> LossFn:
    """BYOT's total loss over every exit; the training accuracy is the deepest exit's."""
    def loss(model, x, y, idx):
        out = model.forward_exits(x)
        parts = byot_loss(out.logits, out.features, y, alpha=cfg.alpha, temperature=cfg.temperature,
                          hint_weight=cfg.hint_weight)
        return parts.total, out.logits[-1]
    return loss


def run(s: Session, on_round) -> list[RoundResult]:
    results = [s.fit(s.new_model(0), loss_fn(s.cfg), round_idx=0)]
    on_round(results)
    return results
