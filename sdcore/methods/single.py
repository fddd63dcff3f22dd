"""One network trained on any combination of the terms ce, pskd, byot and dmfl (sdcore.terms):
seed paper 003's Table 1 grid, BYOT (Zhang et al.) and PS-KD (Kim et al.) among them.

PS-KD keeps the model's own softmax on each training example in the previous epoch in a per-example
memory [N_train, C] (float32, also under bf16 autocast) on the device — one-hot before the first
epoch, as in the authors' code — and mixes it into the deepest output's target: (1 - a_t) y + a_t
p_prev, a_t growing linearly to 1 - pskd_alpha; with byot and ``pskd_exits`` every exit's CE uses
that target too (seed paper 003). BYOT's exits learn from the deepest exit in the configured style
(``losses.byot_loss``); DMFL adds ``losses.dmfl_loss`` on the exits' features. Validation selects
on the deepest exit; evaluation reports every exit and their softmax ensemble.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from sdcore import terms
from sdcore.config import RunConfig
from sdcore.engine import LossFn, RoundResult, Session
from sdcore.losses import byot_loss, dmfl_loss, pskd_prev_weight, pskd_targets, target_ce
from sdcore.terms import BYOT_STYLES


def loss_fn(cfg: RunConfig, *, memory: Tensor | None = None, weight: list[float] | None = None) -> LossFn:
    """The config's loss; returns (total, deepest logits, parts): parts are each term's weighted share of
    the total (they add up to it), which metrics.jsonl logs per epoch (``train_parts``). ``memory``
    [N_train, C] and ``weight`` [a_t] are PS-KD's state, required with pskd."""
    use = set(terms.terms_of(cfg))
    deepest_w = cfg.alpha if "byot" in use and BYOT_STYLES[cfg.byot_style].deepest_ce == "alpha" else 1.0
    exits = terms.needs_exits(cfg)
    if "pskd" in use and (memory is None or weight is None):
        raise ValueError("the pskd term needs its memory and weight")

    def loss(model, x, y, idx):
        out = model.forward_exits(x) if exits else None
        z = out.logits[-1] if exits else model(x)
        target = y
        if "pskd" in use:
            target = pskd_targets(y, memory[idx], prev_weight=weight[0])
            memory[idx] = z.detach().to(memory.dtype).softmax(1)  # read above, before this update: p of the previous epoch
        if "byot" in use:
            shallow = target if cfg.pskd_exits else y
            b = byot_loss(out.logits, out.features, [shallow] * (len(out.logits) - 1) + [target],
                          alpha=cfg.alpha, temperature=cfg.temperature, hint_weight=cfg.hint_weight,
                          style=cfg.byot_style, adapters=getattr(model, "hint_adapters", None))
            total = b.total
            parts = {"ce": deepest_w * b.ce[-1], "byot_ce": cfg.alpha * b.ce[:-1].sum(),
                     "byot_distill": (1.0 - cfg.alpha) * b.kl.sum(), "byot_hint": cfg.hint_weight * b.hint.sum()}
        else:
            total = target_ce(z, target)
            parts = {"ce": total}
        if "dmfl" in use:
            d = dmfl_loss(out.features, temperature=cfg.dmfl_temperature)
            parts["dmfl"] = cfg.dmfl_weight * d
            total = total + parts["dmfl"]
        return total, z, parts
    return loss


def run(s: Session, on_round) -> list[RoundResult]:
    cfg = s.cfg
    state, weight, on_epoch_start = {}, [0.0], None
    if terms.has(cfg, "pskd"):
        state["memory"] = F.one_hot(s.data.train.y, s.data.num_classes).float()  # [N_train, C]
        final = terms.pskd_final_alpha(cfg)

        def on_epoch_start(epoch: int) -> None:
            weight[0] = pskd_prev_weight(epoch, cfg.epochs, final)

    results = [s.fit(s.new_model(0), loss_fn(cfg, memory=state.get("memory"), weight=weight), round_idx=0,
                     on_epoch_start=on_epoch_start, state=state)]
    on_round(results)
    return results
