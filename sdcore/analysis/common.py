"""What every analysis that takes a model and batches shares (STYLE.md rule 5): the batches' type, where the
model lives, its mode and parameter state restored on exit, and the batches brought to its device.

Hessian (hessian.py), loss landscapes (landscape.py) and weight-noise flatness (flatness.py) use these; none
of them leaves the model changed.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

# Re-iterable (a list) of (inputs [B, ...], int64 targets [B]) pairs, or (idx [B], inputs, targets) triples
# as a Source's batches yield them.
Batches = Iterable[Sequence[Tensor]]


def model_tensor(model: nn.Module) -> Tensor:
    """A parameter of ``model`` (its device and dtype are the model's); ValueError if it has none."""
    p = next(model.parameters(), None)
    if p is None:
        raise ValueError("the model has no parameters, so its loss has no Hessian")
    return p


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """model.eval() inside; afterwards every module gets back its own previous training flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


@contextlib.contextmanager
def grad_state(model: nn.Module) -> Iterator[None]:
    """Eval mode and grad mode on inside (second-order analyses differentiate the loss); every module's flag,
    and every parameter's .grad and requires_grad, as before afterwards."""
    params = [(p, p.grad, p.requires_grad) for p in model.parameters()]
    try:
        with eval_mode(model), torch.enable_grad():
            yield
    finally:
        for p, grad, requires_grad in params:
            p.grad = grad
            p.requires_grad_(requires_grad)


def prepare_batches(batches: Batches, device: torch.device,
                    dtype: torch.dtype | None = None) -> list[tuple[Tensor, Tensor]]:
    """A list of (x, y) on ``device`` (floating inputs in ``dtype`` if given), materialized because the analyses
    read every batch many times. ValueError for a batch that is neither a pair nor a triple, or no example."""
    out = []
    for batch in batches:
        if len(batch) not in (2, 3):
            raise ValueError(f"each batch must be (inputs, targets) or (idx, inputs, targets), got {len(batch)} items")
        x, y = batch[-2], batch[-1]
        x = x.to(device, dtype) if dtype is not None and x.is_floating_point() else x.to(device)
        out.append((x, y.to(device)))
    if not out or sum(len(y) for _, y in out) == 0:
        raise ValueError("batches is empty: the analysis needs at least one example")
    return out
