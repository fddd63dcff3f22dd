"""Losses of the self-distillation terms (sdcore.terms), as pure functions of tensors.

No module state and no host syncs. Teacher tensors are detached by the *caller* (visibly, at the
call site) except in ``byot_loss``, whose teacher is the deepest exit of the same forward pass and
is detached here because the paper defines it so (BYOT Sec. 3.2).

Shapes: B = batch, C = classes, D = feature dim, K = exits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# BYOT's exit loss as each codebase computes it (sdcore.terms' module doc compares them); byot_style picks one.

@dataclass(frozen=True)
class ByotStyle:
    name: str
    label: str
    source: str
    distill: str  # "kl": KL(p_C || p_i); "soft_ce": -sum p_C log p_i (the authors' code)
    tau_squared: bool  # the distillation term is multiplied by tau^2
    deepest_ce: str  # weight on the deepest exit's CE: "one" or "alpha"
    hint: str  # "mean_sq" | "adapter_l2" | "masked_sse"
    skip_nearest_hint: bool  # no hint on the shallow exit nearest the deepest (zhang's `index != 1`)
    adapters: bool  # learned Linear(D, D) per shallow exit, applied to F_i before the hint


BYOT_STYLES: dict[str, ByotStyle] = {s.name: s for s in (
    ByotStyle("sdlab", "sdlab (τ² on the KL, mean-squared hint)", "sdlab's convention (Pham et al.'s τ²)",
              distill="kl", tau_squared=True, deepest_ce="one", hint="mean_sq", skip_nearest_hint=False,
              adapters=False),
    ByotStyle("zhang", "Zhang et al.'s final code (no τ², adapter L2 hint)",
              "ArchipLab-LinfengZhang/pytorch-self-distillation-final, train.py",
              distill="soft_ce", tau_squared=False, deepest_ce="one", hint="adapter_l2", skip_nearest_hint=True,
              adapters=True),
    ByotStyle("luan", "luanyunteng's code, seed paper 003's BYOT (τ², masked sum of squares)",
              "luanyunteng/pytorch-be-your-own-teacher, train.py; seed paper 003 Eq. 2",
              distill="soft_ce", tau_squared=True, deepest_ce="alpha", hint="masked_sse", skip_nearest_hint=False,
              adapters=False),
)}


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


def soft_target_ce(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """-sum_c softmax(t/tau)_c log softmax(s/tau)_c, averaged over the batch; no tau^2.

    The BYOT authors' distillation term (their ``CrossEntropy`` / ``kd_loss_function``): KL(p_t || p_s)
    plus the teacher's entropy, so the same gradient as the KL and the value their code logs.
    student_logits, teacher_logits: [B, C]. Returns a scalar.
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    return -(F.softmax(teacher_logits / temperature, dim=1) * log_p_s).sum(dim=1).mean()


def target_ce(logits: Tensor, target: Tensor) -> Tensor:
    """CE against class ids [B] (int64) or a distribution [B, C] (float: PS-KD's soft targets)."""
    return soft_cross_entropy(logits, target) if target.is_floating_point() else F.cross_entropy(logits, target)


class ByotLoss(NamedTuple):
    total: Tensor  # scalar, the sum over exits that is back-propagated (the deepest exit's CE included)
    ce: Tensor  # [K] CE of each exit against its target (labels or soft targets)
    kl: Tensor  # [K] distillation term of each shallow exit, as the style scales it (0 for the deepest)
    hint: Tensor  # [K] feature hint of each exit, as the style measures it (0 where none)


def byot_loss(exit_logits: Sequence[Tensor], exit_features: Sequence[Tensor], targets: Tensor | Sequence[Tensor], *,
              alpha: float, temperature: float, hint_weight: float, style: str = "sdlab",
              adapters: Sequence[Callable[[Tensor], Tensor]] | None = None) -> ByotLoss:
    """BYOT's loss over every exit in one of ``BYOT_STYLES`` (alpha: sdlab's hard-label weight).

    exit_logits: K tensors [B, C], shallow first, deepest last; exit_features: K tensors [B, D];
    targets: [B] class ids, or K targets (one per exit, each [B] ids or [B, C] soft targets: PS-KD).
    Style "sdlab": shallow exit i: alpha*CE(y, z_i) + (1-alpha)*tau^2*KL(p_C^tau || p_i^tau)
    + beta*mean((F_i - F_C)^2); deepest exit C: CE(y, z_C). The other styles are the BYOT codebases'
    (terms.py's module doc); ``adapters``: the zhang style's K-1 learned maps A_i, shallow first.
    The deepest logits and features are detached in the distillation and hint terms, so they teach
    the shallow exits without being pulled towards them (BYOT Sec. 3.2; both codebases).
    """
    s = BYOT_STYLES[style]
    k = len(exit_logits)
    per_exit = list(targets) if isinstance(targets, (list, tuple)) else [targets] * k
    teacher_logits = exit_logits[-1].detach()
    teacher_feat = exit_features[-1].detach()
    ce = torch.stack([target_ce(z, t) for z, t in zip(exit_logits, per_exit)])
    zero = ce.new_zeros(())
    if s.distill == "kl":
        distill = [soft_kl(z, teacher_logits, temperature) / (1.0 if s.tau_squared else temperature**2)
                   for z in exit_logits[:-1]]
    else:
        distill = [soft_target_ce(z, teacher_logits, temperature) * (temperature**2 if s.tau_squared else 1.0)
                   for z in exit_logits[:-1]]
    kl = torch.stack(distill + [zero])
    hinted = range(k - 2) if s.skip_nearest_hint else range(k - 1)
    hint = torch.stack([_hint(s.hint, exit_features[i], teacher_feat, adapters[i] if adapters else None)
                        if i in hinted else zero for i in range(k - 1)] + [zero])
    shallow = torch.ones_like(ce)
    shallow[-1] = 0.0
    deepest = 1.0 if s.deepest_ce == "one" else alpha
    weight_ce = alpha * shallow + deepest * (1.0 - shallow)
    total = (weight_ce * ce).sum() + (1.0 - alpha) * kl.sum() + hint_weight * hint.sum()
    return ByotLoss(total, ce, kl, hint)


def _hint(kind: str, f: Tensor, teacher: Tensor, adapter: Callable[[Tensor], Tensor] | None) -> Tensor:
    """One shallow exit's feature hint; f, teacher: [B, D] (teacher detached)."""
    if kind == "mean_sq":  # sdlab: the mean over elements
        return F.mse_loss(f, teacher)
    if kind == "adapter_l2":  # zhang: torch.dist(adapter(F_i), F_C), the unsquared L2 norm over the whole batch
        if adapter is None:
            raise ValueError("the adapter_l2 hint needs the model's hint adapters")
        return torch.linalg.vector_norm(adapter(f) - teacher)
    # luan: squared differences where either feature is active, summed over batch and channels
    return ((f - teacher) ** 2 * ((f > 0) | (teacher > 0)).to(f.dtype)).sum()


def dmfl_loss(exit_features: Sequence[Tensor], *, temperature: float) -> Tensor:
    """Deep mutual feature learning (seed paper 003 Eq. 3), averaged over the K-1 shallow exits:

        1/(K-1) sum_{i<K} [KL(q_i || q_K) + KL(q_K || q_i)],  q_i = softmax(F_i / T) over the D channels

    exit_features: K tensors [B, D] (sdlab's pooled exit features, deepest last); KL batch-averaged.
    The paper does not say how a feature map becomes a distribution: the softmax of the pooled
    feature at a temperature makes every exit's feature one distribution over the same D channels
    (they all have the deepest's size), the way DML compares peers' class distributions. Nothing is
    detached: the learning is mutual, the deepest feature moves towards the shallow ones too.
    """
    if len(exit_features) < 2:
        raise ValueError("dmfl_loss needs the deepest feature and at least one shallow exit's")
    log_q = [F.log_softmax(f.to(torch.promote_types(f.dtype, torch.float32)) / temperature, dim=1)  # bf16 -> fp32
             for f in exit_features]
    deep = log_q[-1]
    pairs = [F.kl_div(deep, lq, log_target=True, reduction="batchmean")  # KL(q_i || q_K)
             + F.kl_div(lq, deep, log_target=True, reduction="batchmean")  # KL(q_K || q_i)
             for lq in log_q[:-1]]
    return torch.stack(pairs).mean()


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
