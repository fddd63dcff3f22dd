"""Multi-round self-distillation (Pham et al. Sec. 3, Fig. 1).

Round 0 trains the teacher f0 on the labels (``model.teachers`` = N > 1: N networks, trained
independently on the same batches from different inits, whose mean logits are the teacher; Pham et
al. Sec. 4, Fig. 3 "ensemble as teacher"). Round k trains f_k *from scratch* on
kd_loss(f_k, f_{k-1}) with the selected model of round k-1 as teacher (eval mode, frozen).
Without augmentation the teacher's logits on the training split are computed once per round and
looked up by example index: the same numbers as a teacher forward per step, at a fraction of the cost.
With ``model.teacher_weights`` round 0 is that file's model, evaluated and saved but not trained.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdcore.engine import LossFn, RoundResult, Session, predict_logits
from sdcore.losses import kd_loss


def label_loss(model: nn.Module, x: Tensor, y: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def distill_loss(s: Session, teacher: nn.Module) -> LossFn:
    alpha, tau = s.cfg.alpha, s.cfg.temperature
    teacher.eval().requires_grad_(False)
    if s.cfg.data.augment:  # every batch is new: the teacher must see the same augmented pixels
        def loss(model, x, y, idx):
            with torch.no_grad():
                t = teacher(x)
            z = model(x)
            return kd_loss(z, t.detach(), y, alpha=alpha, temperature=tau), z
        return loss
    cached = predict_logits(teacher, s.data.train)  # [N_train, C], eval mode, no augmentation

    def loss(model, x, y, idx):
        z = model(x)
        return kd_loss(z, cached[idx].detach(), y, alpha=alpha, temperature=tau), z
    return loss


def ensemble_label_loss(model: nn.Module, x: Tensor, y: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """N teachers trained independently in one loop: the sum of their own CEs (disjoint parameters,
    so each gets exactly its own gradient; clipping is per teacher); accuracy of their mean logits."""
    zs = model.forward_peers(x)
    return sum(F.cross_entropy(z, y) for z in zs), torch.stack(zs).mean(0).detach()


def run(s: Session, on_round) -> list[RoundResult]:
    results = s.completed_rounds()  # empty unless resuming
    teachers = s.cfg.model.teachers
    for r in range(len(results), s.rounds):
        if r == 0 and s.cfg.model.teacher_weights is not None:  # your own teacher: loaded, not trained
            results.append(s.load_pretrained(r, s.cfg.model.teacher_weights))
            on_round(results)
            continue
        if r == 0:
            loss = ensemble_label_loss if teachers > 1 else label_loss
        else:
            loss = distill_loss(s, results[-1].model)
        results.append(s.fit(s.new_model(r), loss, round_idx=r))
        on_round(results)
    return results
