"""One network trained on any combination of the single-network terms (sdcore.terms: ce, pskd, byot, dmfl):
seed paper 003's Table 1 grid, BYOT (Zhang et al.) and PS-KD (Kim et al.) among them.

The objective is composed from the terms' registry entries, in registry order: each ``target`` hook may
replace the deepest output's CE target (PS-KD: (1 - a_t) y + a_t p_prev-epoch, from its per-example memory),
then each ``loss`` adds its share (a term's ``replaces`` drops another's: BYOT's exit loss holds the deepest
CE). ``state`` tensors (PS-KD's memory, float32 also under bf16 autocast) are checkpointed with the model;
``at_epoch`` values (PS-KD's a_t) are set at each epoch's start. Validation selects on the deepest exit;
evaluation reports every exit and their softmax ensemble.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from sdcore import terms
from sdcore.config import RunConfig
from sdcore.engine import LossFn, RoundResult, Session
from sdcore.terms import TERMS, Step


def loss_fn(cfg: RunConfig, *, state: dict[str, Tensor] | None = None,
            epoch: dict[str, float] | None = None) -> LossFn:
    """The config's loss; returns (total, deepest logits, parts): parts are each term's weighted share of
    the total (they add up to it), which metrics.jsonl logs per epoch (``train_parts``). ``state`` holds
    the terms' ``state`` tensors and ``epoch`` their current ``at_epoch`` values (``run`` keeps both)."""
    used = [TERMS["ce"]] + [TERMS[t] for t in terms.terms_of(cfg)]
    replaced = {r for t in used for r in t.replaces}
    targets = [t.target for t in used if t.target is not None]
    losses = [t.loss for t in used if t.loss is not None and t.name not in replaced]
    state, epoch = state if state is not None else {}, epoch if epoch is not None else {}
    missing = [t.name for t in used if t.state is not None and not state]
    if missing:
        raise ValueError(f"the {missing[0]} term needs its state (sdcore.terms: its entry's state)")
    exits = terms.needs_exits(cfg)

    def loss(model, x, y, idx):
        out = model.forward_exits(x) if exits else None
        logits = out.logits if exits else [model(x)]
        s = Step(cfg=cfg, model=model, y=y, idx=idx, logits=logits, features=out.features if exits else [],
                 target=y, state=state, epoch=epoch)
        for target in targets:
            s.target = target(s)
        total: Any = 0
        parts: dict[str, Tensor] = {}
        for term_loss in losses:
            share, logged = term_loss(s)
            total = total + share
            parts.update(logged)
        return total, logits[-1], parts
    return loss


def run(s: Session, on_round) -> list[RoundResult]:
    cfg = s.cfg
    used = [TERMS[t] for t in terms.terms_of(cfg)]
    state = {k: v for t in used if t.state is not None for k, v in t.state(cfg, s.data).items()}
    epoch: dict[str, float] = {}
    hooks = [t.at_epoch for t in used if t.at_epoch is not None]

    def on_epoch_start(e: int) -> None:
        for at_epoch in hooks:
            epoch.update(at_epoch(cfg, e))

    results = [s.fit(s.new_model(0), loss_fn(cfg, state=state, epoch=epoch), round_idx=0,
                     on_epoch_start=on_epoch_start if hooks else None, state=state)]
    on_round(results)
    return results
