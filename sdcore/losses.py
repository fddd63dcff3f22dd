"""Losses of the three self-distillation recipes, as pure functions of tensors.

No module state and no host syncs. Teacher tensors are detached by the *caller* (visibly, at the
call site) except in ``byot_loss``, whose teacher is the deepest exit of the same forward pass and
is detached here because the paper defines it so (BYOT Sec. 3.2).

Shapes: B = batch, C = classes, D = feature dim, K = exits.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """tau^2 * KL(softmax(teacher/tau) || softmax(student/tau)), averaged over the batch.

    student_logits, teacher_logits: [B, C]. Returns a scalar. The tau^2 factor keeps the gradient
    scale independent of tau (Hinton et al.; Pham et al. Eq. 2).
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * temperature**2


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, *,
            alpha: float, temperature: float) -> Tensor:
    """alpha * CE(targets, student) + (1 - alpha) * tau^2 * KL(p_t^tau || p_s^tau)  (Pham et al. Eq. 1).

    student_logits, teacher_logits: [B, C]; targets: [B] int64 class ids. Returns a scalar.
    alpha is the weight on the hard label (sdlab's convention everywhere).
    """
    ce = F.cross_entropy(student_logits, targets)
    if alpha == 1.0:  # skip the KL: no teacher influence, and no wasted softmaxes
        return ce
    return alpha * ce + (1.0 - alpha) * soft_kl(student_logits, teacher_logits, temperature)


class ByotLoss(NamedTuple):
    total: Tensor  # scalar, the sum over exits that is back-propagated
    ce: Tensor  # [K] hard-label CE of each exit
    kl: Tensor  # [K] tau^2 * KL to the deepest exit (0 for the deepest)
    hint: Tensor  # [K] mean squared feature distance to the deepest exit (0 for the deepest)


def byot_loss(exit_logits: Sequence[Tensor], exit_features: Sequence[Tensor], targets: Tensor, *,
              alpha: float, temperature: float, hint_weight: float) -> ByotLoss:
    """BYOT Eq. 5 in sdlab's convention (alpha on the hard label; BYOT's own alpha is 1 - ours).

    exit_logits: K tensors [B, C], shallow first, deepest last; exit_features: K tensors [B, D].
    Shallow exit i: alpha*CE(y, z_i) + (1-alpha)*tau^2*KL(p_C^tau || p_i^tau) + beta*mean((F_i - F_C)^2);
    deepest exit C: CE(y, z_C) only. The deepest logits and features are detached in the KL and hint
    terms, so they teach the shallow exits without being pulled towards them. The hint is the mean
    over elements, as in the authors' code (their beta=0.03 is calibrated for that).
    """
    teacher_logits = exit_logits[-1].detach()
    teacher_feat = exit_features[-1].detach()
    ce = torch.stack([F.cross_entropy(z, targets) for z in exit_logits])
    zero = ce.new_zeros(())
    kl = torch.stack([soft_kl(z, teacher_logits, temperature) for z in exit_logits[:-1]] + [zero])
    hint = torch.stack([F.mse_loss(f, teacher_feat) for f in exit_features[:-1]] + [zero])
    shallow = torch.ones_like(ce)
    shallow[-1] = 0.0
    weight_ce = alpha * shallow + (1.0 - shallow)  # deepest exit: plain CE with weight 1
    total = (weight_ce * ce).sum() + (1.0 - alpha) * kl.sum() + hint_weight * hint.sum()
    return ByotLoss(total, ce, kl, hint)


def pskd_prev_weight(epoch: int, epochs: int, alpha: float) -> float:
    """Weight on the previous epoch's predictions at 0-based ``epoch`` (PS-KD, Kim et al. Eq. 5).

    alpha_t = alpha_T * (epoch + 1) / epochs with alpha_T = 1 - alpha, so the hard-label weight falls
    linearly from ~1 to ``alpha`` at the last epoch (sdlab's convention: alpha on the hard label).
    """
    return (1.0 - alpha) * (epoch + 1) / epochs


def pskd_targets(targets: Tensor, prev_probs: Tensor, *, prev_weight: float) -> Tensor:
    """Soft targets (1 - a_t) * onehot(y) + a_t * p_prev.

    targets: [B] int64; prev_probs: [B, C] the model's softmax on these examples in the previous epoch
    (one-hot before the first epoch); prev_weight: a_t in [0, 1]. Returns [B, C], rows sum to 1.
    """
    onehot = F.one_hot(targets, prev_probs.shape[1]).to(prev_probs.dtype)
    return (1.0 - prev_weight) * onehot + prev_weight * prev_probs


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """-sum_c q_c log softmax(z)_c, averaged over the batch. logits, target_probs: [B, C]."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def dml_loss(peer_logits: Sequence[Tensor], targets: Tensor, *, alpha: float, temperature: float) -> Tensor:
    """Deep mutual learning (Zhang et al. 2018) in sdlab's convention, summed over the K peers:

    peer i: alpha * CE(y, z_i) + (1 - alpha) * tau^2 * mean_{j != i} KL(p_j^tau || p_i^tau), every other
    peer's prediction detached (a target), so the gradient reaching peer i is that of its own loss.
    DML's own loss CE + mean KL is alpha = 0.5, tau = 1 up to a factor 2. One peer: plain CE.
    """
    if not peer_logits:
        raise ValueError("dml_loss needs at least one peer")
    if len(peer_logits) == 1:
        return F.cross_entropy(peer_logits[0], targets)
    total = peer_logits[0].new_zeros(())
    for i, z in enumerate(peer_logits):
        others = [t.detach() for j, t in enumerate(peer_logits) if j != i]
        total = total + sum(kd_loss(z, t, targets, alpha=alpha, temperature=temperature) for t in others) / len(others)
    return total
