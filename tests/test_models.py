"""Model registry, shapes, gradients, BYOT exits, no-skip ResNets and parameter counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sdcore.models import ExitOutputs, create, has_exits, list_models
from sdcore.models.registry import scale_width
from sdcore.models.resnet import BasicBlock

RESNETS = ["resnet8", "resnet18", "resnet20", "resnet56"]
BIG = {"resnet18", "resnet56", "vgg11", "vgg16"}  # run at width 0.25 on 32x32 to keep the suite fast
NUM_EXITS = {"cnn": 3, "resnet8": 3, "resnet20": 3, "resnet56": 3, "resnet18": 4, "vgg11": 4, "vgg16": 4}

# (in_channels, image size, num_classes): the embedded digits and a CIFAR-100-like input.
INPUTS = {"digits": (1, 8, 10), "cifar100": (3, 32, 100)}


def _build(name: str, inputs: str, exits: bool, seed: int = 0):
    c, size, k = INPUTS[inputs]
    width = 0.25 if inputs == "cifar100" and name in BIG else 1.0
    torch.manual_seed(seed)
    model = create(name, num_classes=k, in_channels=c, image_size=size, width=width, exits=exits)
    x = torch.randn(4, c, size, size)
    y = torch.randint(0, k, (4,))
    return model, x, y


def test_registry_lists_every_architecture():
    assert list_models() == sorted(NUM_EXITS)


@pytest.mark.parametrize("exits", [False, True], ids=["plain", "exits"])
@pytest.mark.parametrize("inputs", list(INPUTS))
@pytest.mark.parametrize("name", list_models())
def test_forward_shape_and_every_parameter_gets_a_gradient(name, inputs, exits):
    model, x, y = _build(name, inputs, exits)
    logits = model(x)
    assert logits.shape == (4, INPUTS[inputs][2])
    assert model.arch == name and model.num_classes == INPUTS[inputs][2]

    if exits:
        # forward() skips the exits: exit parameters stay untouched, backbone ones do not.
        F.cross_entropy(logits, y).backward()
        for n, p in model.named_parameters():
            assert (p.grad is None) == n.startswith("exit_heads."), n
        model.zero_grad(set_to_none=True)
        out = model.forward_exits(x)
        loss = sum(F.cross_entropy(z, y) for z in out.logits)
        loss = loss + sum(((f - out.features[-1]) ** 2).mean() for f in out.features[:-1])
    else:
        loss = F.cross_entropy(logits, y)
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        assert torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n


@pytest.mark.parametrize("exits", [False, True], ids=["plain", "exits"])
@pytest.mark.parametrize("inputs", list(INPUTS))
@pytest.mark.parametrize("name", list_models())
def test_eval_is_deterministic_and_exits_agree(name, inputs, exits):
    model, x, _ = _build(name, inputs, exits)
    model.eval()
    with torch.no_grad():
        logits = model(x)
        assert torch.equal(logits, model(x))
        out = model.forward_exits(x)
        assert isinstance(out, ExitOutputs)
        assert has_exits(model) == exits
        assert model.num_exits == (NUM_EXITS[name] if exits else 1)
        assert len(out.logits) == len(out.features) == model.num_exits
        for z, f in zip(out.logits, out.features):
            assert z.shape == logits.shape
            assert f.shape == (4, model.feature_dim)
        torch.testing.assert_close(out.logits[-1], logits, rtol=0, atol=1e-6)
        for i in range(model.num_exits):
            torch.testing.assert_close(model.forward_exit(x, i), out.logits[i], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list_models())
def test_exit_bottleneck_matches_deepest_feature_map(name):
    # Each exit downsamples as often as the backbone does after its section, so at 32x32 its
    # bottleneck output has the deepest section's shape [B, D, h, w] before pooling.
    model = create(name, width=0.25, exits=True).eval()
    h, maps = torch.randn(2, 3, 32, 32), []
    with torch.no_grad():
        for section in model.sections:
            h = section(h)
            maps.append(h)
        for head, m in zip(model.exit_heads, maps):
            assert head.bottleneck(m).shape == maps[-1].shape


@pytest.mark.parametrize("name", ["cnn", "resnet20"])
def test_forward_exit_runs_only_the_sections_it_needs(name):
    model = create(name, in_channels=1, exits=True).eval()
    calls = []
    for k, section in enumerate(model.sections):
        section.register_forward_hook(lambda *_, k=k: calls.append(k))
    with torch.no_grad():
        model.forward_exit(torch.randn(2, 1, 8, 8), 0)
        assert calls == [0]
        calls.clear()
        model.forward_exit(torch.randn(2, 1, 8, 8), model.num_exits - 1)
        assert calls == list(range(len(model.sections)))
    with pytest.raises(IndexError):
        model.forward_exit(torch.randn(2, 1, 8, 8), model.num_exits)


def test_forward_exit_without_exits_is_the_deepest_classifier():
    model = create("resnet8", in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_exit(x, 0), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("size", [28, 32])
def test_cnn_accepts_mnist_and_cifar_sizes(size):
    model = create("cnn", in_channels=1, image_size=size, exits=True)
    out = model.forward_exits(torch.randn(2, 1, size, size))
    assert [z.shape for z in out.logits] == [(2, 10)] * 3


@pytest.mark.parametrize("name", RESNETS)
def test_no_skip_shares_weights_but_changes_the_function(name):
    width = 0.25 if name in BIG else 1.0
    torch.manual_seed(0)
    with_skip = create(name, width=width).eval()
    no_skip = create(name, width=width, skip=False).eval()
    result = no_skip.load_state_dict(with_skip.state_dict(), strict=False)
    # Only projection shortcuts (1x1 conv + BN) exist in one net and not the other.
    assert result.missing_keys == []
    assert result.unexpected_keys and all(".shortcut." in k for k in result.unexpected_keys)
    assert all(b.shortcut is None for b in no_skip.modules() if isinstance(b, BasicBlock))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(with_skip(x), no_skip(x), atol=1e-3)


def _branch(block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    """The residual branch written out with raw parameters, eval-mode BN."""

    def bn(z, m):
        return F.batch_norm(z, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    z = F.relu(bn(F.conv2d(x, block.conv1.weight, stride=block.conv1.stride, padding=1), block.bn1))
    return bn(F.conv2d(z, block.conv2.weight, padding=1), block.bn2)


@pytest.mark.parametrize("skip", [True, False])
def test_block_with_and_without_skip_matches_manual_computation(skip):
    torch.manual_seed(0)
    block = BasicBlock(8, 16, stride=2, skip=skip).eval()
    for m in block.modules():  # non-trivial BN statistics so eval-mode BN is not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    x = torch.randn(2, 8, 9, 9)
    expected = _branch(block, x)
    if skip:
        proj, bn = block.shortcut
        expected = expected + F.batch_norm(F.conv2d(x, proj.weight, stride=2), bn.running_mean, bn.running_var,
                                           bn.weight, bn.bias, False, 0.0, bn.eps)
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(expected))


@pytest.mark.parametrize("name", ["cnn", "vgg11", "vgg16"])
def test_no_skip_on_a_net_without_skips_is_an_error(name):
    with pytest.raises(ValueError, match="skip=False"):
        create(name, skip=False)


# Independent reference counts (num_classes=10, 3 input channels): He et al. 2016 Table 6 for the
# CIFAR ResNets (option A; our 1x1 projections add 2,752), kuangliu/pytorch-cifar for resnet18 and
# VGG16-BN with one Linear(512, 10).
@pytest.mark.parametrize("name, reference", [
    ("resnet20", 0.27e6), ("resnet56", 0.85e6), ("resnet18", 11.17e6), ("vgg16", 14.7e6),
])
def test_parameter_counts_match_the_literature(name, reference):
    count = sum(p.numel() for p in create(name).parameters())
    assert abs(count - reference) / reference < 0.02, count


def test_unknown_name_lists_known_models():
    with pytest.raises(ValueError, match="unknown model 'resnet1000'") as err:
        create("resnet1000")
    assert all(name in str(err.value) for name in list_models())
    assert "\n" not in str(err.value)


def test_seeded_create_is_reproducible():
    def weights(seed):
        torch.manual_seed(seed)
        return create("resnet20", exits=True).state_dict()

    a, b, c = weights(1), weights(1), weights(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_width_scales_channels_and_never_reaches_zero():
    assert scale_width(64, 0.25) == 16 and scale_width(16, 0.01) == 1
    model = create("resnet20", width=0.5)
    assert model.feature_dim == 32
    assert create("cnn", width=0.001, in_channels=1)(torch.randn(2, 1, 8, 8)).shape == (2, 10)
