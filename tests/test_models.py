"""Model registry, shapes, gradients, BYOT exits, no-skip ResNets and parameter counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from sdcore.models import ExitOutputs, create, has_exits, list_models
from sdcore.models.registry import scale_width
from sdcore.models.resnet import BasicBlock, Bottleneck

RESNETS = ["resnet8", "resnet18", "resnet20", "resnet56", "resnet50", "resnext50_32x4d"]
BOTTLENECK_NETS = ["resnet50", "resnext50_32x4d"]
BIG = {"resnet18", "resnet56", "vgg11", "vgg16"}  # run at width 0.25 on 32x32 to keep the suite fast
HUGE = set(BOTTLENECK_NETS)  # width 0.25 on every input: at full width ~1 s per test even on 8x8
NUM_EXITS = {"cnn": 3, "resnet8": 3, "resnet20": 3, "resnet56": 3, "resnet18": 4, "vgg11": 4, "vgg16": 4,
             "resnet50": 4, "resnext50_32x4d": 4}

# (in_channels, image size, num_classes): the embedded digits and a CIFAR-100-like input.
INPUTS = {"digits": (1, 8, 10), "cifar100": (3, 32, 100)}


def _build(name: str, inputs: str, exits: bool, seed: int = 0):
    c, size, k = INPUTS[inputs]
    width = 0.25 if (inputs == "cifar100" and name in BIG) or name in HUGE else 1.0
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
def test_eval_is_deterministic_and_exits_agree_with_the_timm_surface(name, inputs, exits):
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

        # timm's surface (timm/models/resnet.py): forward = forward_head(forward_features(x)), the head a
        # global average pool and the linear classifier; pre_logits=True stops before the classifier.
        fmap = model.forward_features(x)
        by_hand = x
        for section in model.sections:
            by_hand = section(by_hand)
        assert torch.equal(fmap, by_hand)
        assert fmap.dim() == 4 and fmap.shape[:2] == (4, model.feature_dim)
        assert torch.equal(logits, model.forward_head(fmap))
        pooled = model.forward_head(fmap, pre_logits=True)
        assert pooled.shape == (4, model.feature_dim)
        mean = fmap.mean(dim=(2, 3))
        torch.testing.assert_close(pooled, mean, rtol=0, atol=1e-6)
        torch.testing.assert_close(logits, F.linear(mean, model.fc.weight, model.fc.bias), rtol=0, atol=1e-5)
        assert torch.equal(out.logits[-1], logits)
        assert torch.equal(out.features[-1], pooled)
        assert torch.equal(model.forward_exit(x, model.num_exits - 1), logits)


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
    width = 0.25 if name in BIG | HUGE else 1.0
    torch.manual_seed(0)
    with_skip = create(name, width=width).eval()
    no_skip = create(name, width=width, skip=False).eval()
    result = no_skip.load_state_dict(with_skip.state_dict(), strict=False)
    # Only projection shortcuts (1x1 conv + BN) exist in one net and not the other.
    assert result.missing_keys == []
    assert result.unexpected_keys and all(".shortcut." in k for k in result.unexpected_keys)
    blocks = [b for b in no_skip.modules() if isinstance(b, (BasicBlock, Bottleneck))]
    assert blocks and all(b.shortcut is None for b in blocks)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(with_skip(x), no_skip(x), atol=1e-3)


def _bn(z, m):
    """Eval-mode BN from raw parameters."""
    return F.batch_norm(z, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def _basic_branch(block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    """The residual branch of BasicBlock(8, 16, stride=2) written out with raw parameters."""
    z = F.relu(_bn(F.conv2d(x, block.conv1.weight, stride=2, padding=1), block.bn1))
    return _bn(F.conv2d(z, block.conv2.weight, padding=1), block.bn2)


def _bottleneck_branch(block: Bottleneck, x: torch.Tensor) -> torch.Tensor:
    """The residual branch of Bottleneck(8, 16, stride=2, mid_channels=8, groups=4): torchvision's
    layout, the stride on the grouped 3x3 conv."""
    z = F.relu(_bn(F.conv2d(x, block.conv1.weight), block.bn1))
    z = F.relu(_bn(F.conv2d(z, block.conv2.weight, stride=2, padding=1, groups=4), block.bn2))
    return _bn(F.conv2d(z, block.conv3.weight), block.bn3)


BLOCKS = {
    "basic": (lambda skip: BasicBlock(8, 16, stride=2, skip=skip), _basic_branch),
    "bottleneck": (lambda skip: Bottleneck(8, 16, stride=2, skip=skip, mid_channels=8, groups=4), _bottleneck_branch),
}


@pytest.mark.parametrize("kind", list(BLOCKS))
@pytest.mark.parametrize("skip", [True, False])
def test_block_with_and_without_skip_matches_manual_computation(kind, skip):
    make, branch = BLOCKS[kind]
    torch.manual_seed(0)
    block = make(skip).eval()
    for m in block.modules():  # non-trivial BN statistics so eval-mode BN is not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    x = torch.randn(2, 8, 9, 9)
    expected = branch(block, x)
    if skip:
        proj, bn = block.shortcut
        expected = expected + _bn(F.conv2d(x, proj.weight, stride=2), bn)
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


@pytest.mark.parametrize("name", BOTTLENECK_NETS)
def test_bottleneck_nets_are_torchvisions_with_a_cifar_stem(name):
    # Independent twin: torchvision's net with its 7x7 stride-2 stem and max-pool replaced by a 3x3
    # stride-1 stem. Same parameter count (torchvision's minus 7*7*3*64, plus 3*3*3*64) and, with the
    # same tensors in the same order, the same function.
    torch.manual_seed(0)
    ours = create(name, num_classes=100).eval()
    reference = getattr(torchvision.models, name)(num_classes=100).eval()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(reference) - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64
    reference.conv1 = torch.nn.Conv2d(3, 64, 3, 1, padding=1, bias=False)
    reference.maxpool = torch.nn.Identity()
    src, dst = list(ours.state_dict().values()), reference.state_dict()
    assert [t.shape for t in src] == [t.shape for t in dst.values()]
    reference.load_state_dict(dict(zip(dst, src)))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


@pytest.mark.parametrize("name", BOTTLENECK_NETS)
def test_bottleneck_nets_have_four_stages_of_4x_planes_as_exits(name):
    width = 0.25
    model = create(name, num_classes=100, width=width, exits=True).eval()
    assert [s[-1].conv3.out_channels for s in model.sections] == [scale_width(c, width) for c in (256, 512, 1024, 2048)]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert model(x).shape == (2, 100)
        out = model.forward_exits(x)
    assert [z.shape for z in out.logits] == [(2, 100)] * 4
    assert [f.shape for f in out.features] == [(2, scale_width(2048, width))] * 4
    if name == "resnext50_32x4d":  # cardinality fixed, each group's width scales: 4w .. 32w channels per group
        convs = [s[-1].conv2 for s in model.sections]
        assert [(c.groups, c.out_channels) for c in convs] == [(32, 32 * scale_width(g, width)) for g in (4, 8, 16, 32)]


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
