"""sdcore.analysis.common: the model state every analysis restores, and the batches it brings to the model."""
import pytest
import torch
from torch import nn

from sdcore.analysis.common import eval_mode, grad_state, model_device, model_tensor, prepare_batches


def net() -> nn.Module:
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2))
    m[2].eval()  # a module whose own flag differs from its parent's
    return m


def test_eval_mode_restores_each_modules_own_flag():
    m = net()
    before = [x.training for x in m.modules()]
    with eval_mode(m):
        assert not any(x.training for x in m.modules())
    assert [x.training for x in m.modules()] == before == [True, True, True, False, True]


def test_grad_state_turns_grad_on_and_restores_grads_and_requires_grad():
    m = net()
    m[0].weight.requires_grad_(False)
    marker = torch.full_like(m[3].weight, 7.0)
    m[3].weight.grad = marker
    with torch.no_grad(), grad_state(m):
        assert torch.is_grad_enabled() and not m.training
        m[0].weight.requires_grad_(True)
        m(torch.randn(5, 3)).sum().backward()  # overwrites .grad inside
    assert [x.training for x in m.modules()] == [True, True, True, False, True]
    assert not m[0].weight.requires_grad and m[0].weight.grad is None
    assert m[3].weight.grad is marker and m[1].weight.grad is None


def test_prepare_batches_pairs_triples_dtype_and_errors():
    x, y = torch.arange(6.0).reshape(2, 3), torch.tensor([0, 1])
    (got,) = prepare_batches([(torch.tensor([4, 5]), x, y)], torch.device("cpu"), torch.float64)
    assert got[0].dtype == torch.float64 and torch.equal(got[0], x.double()) and torch.equal(got[1], y)
    ints = torch.tensor([[1, 2, 3]])
    assert prepare_batches([(ints, y[:1])], torch.device("cpu"), torch.float64)[0][0].dtype == torch.int64
    with pytest.raises(ValueError, match="batches is empty"):
        prepare_batches([], torch.device("cpu"))
    with pytest.raises(ValueError, match="got 1 items"):
        prepare_batches([(x,)], torch.device("cpu"))


def test_model_device_and_tensor():
    assert model_device(nn.Identity()) == torch.device("cpu")
    with pytest.raises(ValueError, match="no parameters"):
        model_tensor(nn.Identity())
    m = net()
    assert model_tensor(m) is m[0].weight and model_device(m) == m[0].weight.device
