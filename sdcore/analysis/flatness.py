"""Weight-noise flatness (Zhang et al. 2019, "Be Your Own Teacher", Sec. 5 and Fig. 4, inspired by their
ref. [43], Deep Mutual Learning): add Gaussian noise of growing size to every parameter and watch the training
loss and accuracy; a model in a flat minimum degrades slowly.

Pham et al. ("Revisiting self-distillation", Sec. 5) warn that in high dimension a random Gaussian
perturbation probes the landscape poorly; read this next to the Hessian and the loss surfaces.

    r = noise_flatness(model, batches, sigmas=(0, 0.05, 0.1), draws=5, generator=g)
    r.loss_mean[i], r.loss_std[i]        # over the draws at sigmas[i]

Noise is relative to each tensor's norm: parameter θ_p (a whole tensor, with numel entries) gets
θ_p + σ · ||θ_p|| / sqrt(numel) · ε, ε ~ N(0, I) — i.e. std σ times the tensor's RMS entry, so σ is
a fraction of the typical weight size and one σ suits conv, linear, bias and BatchNorm tensors
alike (BYOT gives an absolute std; absolute sizes do not carry between architectures). A tensor
that is all zeros gets no noise. Buffers (BN running statistics) are never perturbed, and
evaluation runs in eval mode.

Draw k uses the same unit noise ε_k at every σ (common random numbers), so the curve over σ of one
draw is one ray from θ and differences between σ are not blurred by fresh noise. σ = 0 is the
model itself: its entries are the clean loss and accuracy, exactly, for every draw.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from sdcore.analysis.common import Batches, eval_mode, model_device, prepare_batches
from sdcore.analysis.landscape import JsonResult, default_chunk, evaluate_model, evaluate_points

SIGMAS = (0, 0.01, 0.02, 0.05, 0.1, 0.2)  # noise_flatness's default relative noise sizes
DRAWS = 5  # and draws per sigma


@dataclass(frozen=True)
class NoiseResult(JsonResult):
    sigmas: list[float]  # relative noise sizes (fractions of each tensor's RMS entry), as given
    loss_mean: list[float]  # per sigma: mean over draws of the mean cross-entropy
    loss_std: list[float]  # per sigma: sample std over draws (ddof 1; 0 with one draw, 0 at sigma 0)
    acc_mean: list[float]  # per sigma: mean accuracy, %
    acc_std: list[float]  # per sigma: sample std of the accuracy over draws
    loss: list[list[float]]  # [sigma][draw] raw values
    acc: list[list[float]]  # [sigma][draw] raw values, %
    clean_loss: float  # the unperturbed model's mean cross-entropy
    clean_acc: float  # the unperturbed model's accuracy, %
    draws: int  # noise draws per sigma
    chunk: int  # noisy parameter sets per vmap call
    examples: int  # examples the loss is averaged over
    points: int  # noisy parameter sets evaluated (sigma > 0 times draws), plus 1 for the clean model
    seconds: float  # wall time of the whole call
    device: str  # where it ran



def noise_flatness(model: nn.Module, batches: Batches, *,
                   sigmas: Sequence[float] = SIGMAS, draws: int = DRAWS,
                   generator: torch.Generator | None = None,
                   progress: Callable[[int], None] | None = None) -> NoiseResult:
    """Loss and accuracy under relative Gaussian weight noise (module doc), ``draws`` draws per sigma.

    The noise is drawn on the CPU from ``generator`` (None: a generator seeded 0), per draw one
    normal tensor per parameter in ``named_parameters`` order, then moved to the model's device;
    the sigmas > 0 of one draw are evaluated together with vmap (see ``landscape``), in chunks of
    ``default_chunk`` parameter sets. The model's weights, buffers, grads and modes are unchanged after.
    ``progress``: called with the parameter sets evaluated so far (of ``points``; the clean model first)
    after each chunk; raising from it stops the call.
    """
    t0 = time.perf_counter()
    sigmas = [float(s) for s in sigmas]
    if not sigmas or any(not (math.isfinite(s) and s >= 0) for s in sigmas):
        raise ValueError(f"sigmas must be a non-empty list of finite numbers >= 0, got {sigmas!r}")
    if not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    generator = generator or torch.Generator().manual_seed(0)
    device = model_device(model)
    data = prepare_batches(batches, device)
    params = {name: p.detach() for name, p in model.named_parameters()}
    rms = {name: p.norm() / math.sqrt(max(p.numel(), 1)) for name, p in params.items()}  # 0-dim tensors
    noisy = [i for i, s in enumerate(sigmas) if s > 0]
    sig = torch.tensor([sigmas[i] for i in noisy], device=device)
    buffers = dict(model.named_buffers())
    chunk = default_chunk(model, data, sum(p.numel() for p in params.values()))
    loss = [[0.0] * draws for _ in sigmas]
    acc = [[0.0] * draws for _ in sigmas]
    with eval_mode(model):
        clean_loss, clean_acc = evaluate_model(model, data)
        if progress is not None:
            progress(1)
        for k in range(draws):
            eps = {name: torch.randn(p.shape, generator=generator).to(device=p.device, dtype=p.dtype)
                   for name, p in params.items()}
            for start in range(0, len(noisy), chunk):
                s = sig[start:start + chunk]
                moving = {name: p + (s.view(-1, *[1] * p.dim()) * rms[name]).to(p.dtype) * eps[name]
                          for name, p in params.items()}  # [c, *shape]
                chunk_loss, chunk_acc = evaluate_points(model, data, moving, buffers, len(s))
                for j, i in enumerate(noisy[start:start + chunk]):
                    loss[i][k], acc[i][k] = chunk_loss[j].item(), chunk_acc[j].item()
                if progress is not None:
                    progress(1 + k * len(noisy) + start + len(s))
        for i, s in enumerate(sigmas):
            if s == 0:
                loss[i], acc[i] = [clean_loss] * draws, [clean_acc] * draws

    def std(v: list[float]) -> float:
        return statistics.stdev(v) if len(v) > 1 else 0.0

    # statistics.mean is exactly rounded, so at sigma 0 the mean is the clean value itself.
    return NoiseResult(sigmas=sigmas, loss_mean=[statistics.mean(v) for v in loss], loss_std=[std(v) for v in loss],
                       acc_mean=[statistics.mean(v) for v in acc], acc_std=[std(v) for v in acc], loss=loss,
                       acc=acc, clean_loss=clean_loss, clean_acc=clean_acc, draws=draws, chunk=chunk,
                       examples=sum(len(y) for _, y in data), points=len(noisy) * draws + 1,
                       seconds=time.perf_counter() - t0, device=str(device))
