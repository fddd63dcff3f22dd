"""Each loss term against a transcription of its authors' code on fixed tensors (value and gradient),
DMFL against a hand computation, and the term registry's rules.

The transcriptions are the reference: they follow the authors' files line by line (named above each),
with only the argument plumbing changed (their ``args.*`` become parameters).
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sdcore import terms
from sdcore.config import ConfigError, RunConfig, preset
from sdcore.losses import byot_loss, dmfl_loss, pskd_prev_weight
from sdcore.methods.single import loss_fn
from sdcore.models import ExitOutputs

B, C, D, K = 6, 5, 8, 4  # batch, classes, feature dim, exits (3 shallow + deepest, like ResNet-18's)


def _tensors(seed=0, positive_features=False):
    g = torch.Generator().manual_seed(seed)
    logits = [torch.randn(B, C, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(K)]
    feats = [torch.randn(B, D, generator=g, dtype=torch.float64) for _ in range(K)]
    if positive_features:  # post-ReLU pooled features, with some exact zeros for luan's mask
        feats = [f.clamp(min=0) for f in feats]
    feats = [f.requires_grad_(True) for f in feats]
    y = torch.randint(0, C, (B,), generator=g)
    return logits, feats, y


def _grads(total, tensors):
    return torch.autograd.grad(total, tensors, allow_unused=True)


# ---------------------------------------------------------------- BYOT, the first author's final code

def zhang_reference(outputs, outputs_feature, labels, adaptation_layers, *, loss_coefficient,
                    feature_loss_coefficient, temperature):
    """ArchipLab-LinfengZhang/pytorch-self-distillation-final, train.py (commit eda2f2b), the loss part of
    the training loop. ``outputs`` and ``outputs_feature`` are deepest first, as its resnet.py returns them."""
    criterion = nn.CrossEntropyLoss()

    def CrossEntropy(outputs, targets):
        log_softmax_outputs = F.log_softmax(outputs / temperature, dim=1)
        softmax_targets = F.softmax(targets / temperature, dim=1)
        return -(log_softmax_outputs * softmax_targets).sum(dim=1).mean()

    loss = torch.zeros(1, dtype=outputs[0].dtype)
    loss += criterion(outputs[0], labels)
    teacher_output = outputs[0].detach()
    teacher_feature = outputs_feature[0].detach()
    for index in range(1, len(outputs)):
        loss += CrossEntropy(outputs[index], teacher_output) * loss_coefficient
        loss += criterion(outputs[index], labels) * (1 - loss_coefficient)
        if index != 1:
            loss += torch.dist(adaptation_layers[index - 1](outputs_feature[index]), teacher_feature) * \
                feature_loss_coefficient
    return loss[0]


def test_zhang_style_equals_the_first_authors_code():
    logits, feats, y = _tensors(1)
    torch.manual_seed(0)
    ours_adapters = [nn.Linear(D, D).double() for _ in range(K - 1)]  # shallow first, as SectionNet holds them
    # Their list is built deepest-first over outputs_feature[1:]: theirs[j - 1] belongs to exit K - 1 - j.
    theirs = [ours_adapters[K - 1 - j] for j in range(1, K)]
    ref = zhang_reference(logits[::-1], feats[::-1], y, theirs, loss_coefficient=0.3,
                          feature_loss_coefficient=0.03, temperature=3.0)
    ours = byot_loss(logits, feats, y, alpha=0.7, temperature=3.0, hint_weight=0.03, style="zhang",
                     adapters=ours_adapters)
    assert ours.total.item() == pytest.approx(ref.item(), rel=1e-12)
    params = [p for a in ours_adapters for p in a.parameters()]
    for g_ours, g_ref in zip(_grads(ours.total, logits + feats + params), _grads(ref, logits + feats + params)):
        if g_ref is None:
            assert g_ours is None or torch.count_nonzero(g_ours) == 0
        else:
            torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)
    # The exit nearest the deepest gets no hint (their `index != 1`), and its adapter no gradient.
    assert ours.hint[K - 2] == 0 and ours.hint[0] > 0
    assert all(p.grad is None for p in ours_adapters[K - 2].parameters())


def test_zhang_style_has_no_tau_squared_and_equals_the_kl_gradient():
    """The authors' soft-target CE differs from KL(p_C || p_i) by the teacher's entropy only."""
    logits, feats, y = _tensors(2)
    zhang = byot_loss(logits, feats, y, alpha=0.7, temperature=3.0, hint_weight=0.0, style="zhang",
                      adapters=[nn.Identity()] * (K - 1))
    p_t = F.softmax(logits[-1].detach() / 3.0, dim=1)
    entropy = -(p_t * p_t.log()).sum(1).mean()
    kl_no_tau2 = [F.kl_div(F.log_softmax(z / 3.0, 1), p_t, reduction="batchmean") for z in logits[:-1]]
    assert zhang.kl[:-1].tolist() == pytest.approx([(k + entropy).item() for k in kl_no_tau2], rel=1e-12)


# ---------------------------------------------------------------- BYOT as luanyunteng's code (seed paper 003)

def luan_reference(output, middle_outputs, final_fea, middle_feas, target, *, alpha, beta, temperature):
    """luanyunteng/pytorch-be-your-own-teacher, train.py: run_training's loss, kd_loss_function and
    feature_loss_function, for any number of middle exits (theirs has 3). Features are [B, D, 1, 1]."""
    criterion = nn.CrossEntropyLoss()

    def kd_loss_function(output, target_output):
        output = output / temperature
        output_log_softmax = torch.log_softmax(output, dim=1)
        loss_kd = -torch.mean(torch.sum(output_log_softmax * target_output, dim=1))
        return loss_kd

    def feature_loss_function(fea, target_fea):
        loss = (fea - target_fea) ** 2 * ((fea > 0) | (target_fea > 0)).float()
        return torch.abs(loss).sum()

    loss = criterion(output, target)
    middle_losses = [criterion(m, target) for m in middle_outputs]
    temp4 = output / temperature
    temp4 = torch.softmax(temp4, dim=1)
    kd = [kd_loss_function(m, temp4.detach()) * (temperature ** 2) for m in middle_outputs]
    fl = [feature_loss_function(f, final_fea.detach()) for f in middle_feas]
    return (1 - alpha) * (loss + sum(middle_losses)) + alpha * sum(kd) + beta * sum(fl)


@pytest.mark.parametrize("beta", [1e-6, 0.05])
def test_luan_style_equals_luanyunteng_code(beta):
    logits, feats, y = _tensors(3, positive_features=True)
    as_maps = [f[:, :, None, None] for f in feats]
    ref = luan_reference(logits[-1], logits[:-1], as_maps[-1], as_maps[:-1], y, alpha=0.1, beta=beta,
                         temperature=3.0)
    ours = byot_loss(logits, feats, y, alpha=0.9, temperature=3.0, hint_weight=beta, style="luan")
    assert ours.total.item() == pytest.approx(ref.item(), rel=1e-12)
    for g_ours, g_ref in zip(_grads(ours.total, logits + feats), _grads(ref, logits + feats)):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------- PS-KD, lgcnsai/PS-KD-Pytorch

def pskd_reference_epoch(net, batches, all_predictions, *, alpha_T, epoch, end_epoch, num_classes):
    """lgcnsai/PS-KD-Pytorch main.py, ``train`` with --PSKD (no distribution), and its
    loss/pskd_loss.py ``Custom_CrossEntropy_PSKD``; returns the per-step losses and gradients."""
    def criterion_CE_pskd(output, targets):
        log_probs = F.log_softmax(output, dim=1)
        return (- targets * log_probs).mean(0).sum()

    alpha_t = alpha_T * ((epoch + 1) / end_epoch)
    alpha_t = max(0, alpha_t)
    out = []
    for inputs, targets, input_indices in batches:
        identity_matrix = torch.eye(num_classes, dtype=torch.float64)
        targets_one_hot = identity_matrix[targets]
        if epoch == 0:
            all_predictions[input_indices] = targets_one_hot
        soft_targets = ((1 - alpha_t) * targets_one_hot) + (alpha_t * all_predictions[input_indices])
        outputs_student = net(inputs)
        softmax_output = F.softmax(outputs_student, dim=1)
        loss = criterion_CE_pskd(outputs_student, soft_targets)
        out.append((loss.detach(), torch.autograd.grad(loss, list(net.parameters()))))
        all_predictions[input_indices] = softmax_output.detach()
    return out


def test_pskd_term_equals_the_authors_training_loop_over_epochs():
    """sdlab's pskd loss (memory one-hot at start, a_t = alpha_T (t+1)/T) step by step against theirs
    (memory set to one-hot during epoch 0), over three epochs of the same batches and weights."""
    g = torch.Generator().manual_seed(4)
    n, epochs = 12, 3
    x = torch.randn(n, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (n,), generator=g)
    batches = [(x[i:i + 4], y[i:i + 4], torch.arange(i, i + 4)) for i in range(0, n, 4)]
    net = nn.Linear(7, C).double()
    cfg = RunConfig(method="pskd", rounds=0, alpha=0.2, epochs=epochs)  # alpha_T = 0.8
    memory, current = F.one_hot(y, C).double(), {"pskd_weight": 0.0}
    ours_loss = loss_fn(cfg, state={"memory": memory}, epoch=current)
    theirs_memory = torch.zeros(n, C, dtype=torch.float64)
    for epoch in range(epochs):
        ref = pskd_reference_epoch(net, batches, theirs_memory, alpha_T=0.8, epoch=epoch, end_epoch=epochs,
                                   num_classes=C)
        current["pskd_weight"] = pskd_prev_weight(epoch, epochs, terms.pskd_final_alpha(cfg))
        for (xb, yb, idx), (ref_loss, ref_grads) in zip(batches, ref):
            total, _, parts = ours_loss(net, xb, yb, idx)
            assert total.item() == pytest.approx(ref_loss.item(), rel=1e-12)
            for a, b in zip(torch.autograd.grad(total, list(net.parameters())), ref_grads):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(memory, theirs_memory.to(memory.dtype))
        with torch.no_grad():  # move the weights, so the next epoch's predictions differ
            for p in net.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


# ---------------------------------------------------------------- DMFL (seed paper 003 Eq. 3)

def _dmfl_by_hand(features, temperature):
    """Eq. 3 written out: q = exp(f/T) / sum exp(f/T); KL(a || b) = sum a (log a - log b), batch mean."""
    def q(f):
        e = torch.exp(f / temperature)
        return e / e.sum(1, keepdim=True)

    def kl(a, b):
        return (a * (torch.log(a) - torch.log(b))).sum(1).mean()

    qs = [q(f) for f in features]
    return sum(kl(qi, qs[-1]) + kl(qs[-1], qi) for qi in qs[:-1]) / (len(qs) - 1)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_dmfl_value_and_gradient_by_hand(temperature):
    _, feats, _ = _tensors(5)
    ours = dmfl_loss(feats, temperature=temperature)
    hand = _dmfl_by_hand(feats, temperature)
    assert ours.item() == pytest.approx(hand.item(), rel=1e-12)
    g_ours = _grads(ours, feats)
    for a, b in zip(g_ours, _grads(hand, feats)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    # Mutual: the deepest feature learns too (nothing is detached), and the gradient is that of a
    # finite difference of the hand formula.
    eps = 1e-6
    f = feats[-1].detach().clone()
    e = torch.zeros_like(f)
    e[0, 0] = eps
    plus = _dmfl_by_hand(feats[:-1] + [f + e], temperature)
    minus = _dmfl_by_hand(feats[:-1] + [f - e], temperature)
    assert g_ours[-1][0, 0].item() == pytest.approx(((plus - minus) / (2 * eps)).item(), rel=1e-6)


def test_dmfl_is_zero_for_equal_features_and_symmetric():
    f = torch.randn(3, D, dtype=torch.float64)
    assert dmfl_loss([f, f.clone()], temperature=1.0).item() == pytest.approx(0.0, abs=1e-15)
    a, b = torch.randn(3, D, dtype=torch.float64), torch.randn(3, D, dtype=torch.float64)
    assert dmfl_loss([a, b], temperature=1.0).item() == pytest.approx(dmfl_loss([b, a], temperature=1.0).item(),
                                                                      rel=1e-12)


# ---------------------------------------------------------------- seed paper 003: all three terms at once

class _FixedExits(nn.Module):
    """A stand-in model whose forward_exits returns fixed tensors (so the loss can be compared)."""

    def __init__(self, logits, feats):
        super().__init__()
        self.out = ExitOutputs(list(logits), list(feats))

    def forward_exits(self, x):
        return self.out


def test_pskd_byot_dmfl_equals_the_papers_sum_of_the_authors_terms():
    """L = luan's BYOT with PS-KD's soft targets in every CE (seed 003 Eq. 2) + DMFL (Eq. 3)."""
    logits, feats, y = _tensors(6, positive_features=True)
    cfg = preset("demo-pskd-byot-dmfl").replace(epochs=10)
    memory = torch.softmax(torch.randn(B, C, dtype=torch.float64), 1)
    soft = (1 - 0.4) * F.one_hot(y, C).double() + 0.4 * memory
    ours, deepest, parts = loss_fn(cfg, state={"memory": memory.clone()}, epoch={"pskd_weight": 0.4})(
        _FixedExits(logits, feats), None, y, torch.arange(B))

    def soft_criterion(output, target):  # PS-KD's Custom_CrossEntropy_PSKD, soft target in place of labels
        return (-soft * F.log_softmax(output, dim=1)).mean(0).sum()

    as_maps = [f[:, :, None, None] for f in feats]
    temperature, a = cfg.temperature, 1 - cfg.alpha
    byot = ((1 - a) * sum(soft_criterion(z, soft) for z in logits)
            + a * sum(-(F.log_softmax(z / temperature, 1) * torch.softmax(logits[-1].detach() / temperature, 1))
                      .sum(1).mean() * temperature ** 2 for z in logits[:-1])
            + cfg.hint_weight * sum(((f - as_maps[-1].detach()) ** 2 * ((f > 0) | (as_maps[-1] > 0)).float()).sum()
                                    for f in as_maps[:-1]))
    ref = byot + cfg.dmfl_weight * _dmfl_by_hand(feats, cfg.dmfl_temperature)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    for g1, g2 in zip(_grads(ours, logits + feats), _grads(ref, logits + feats)):
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-13)
    assert deepest is logits[-1] and set(parts) == {"ce", "byot_ce", "byot_distill", "byot_hint", "dmfl"}
    assert sum(parts.values()).item() == pytest.approx(ours.item(), rel=1e-12)  # the weighted shares add up


def test_pskd_exits_false_keeps_the_labels_for_the_shallow_exits():
    logits, feats, y = _tensors(7, positive_features=True)
    cfg = preset("demo-pskd-byot").replace(pskd_exits=False, epochs=10)
    memory = torch.softmax(torch.randn(B, C, dtype=torch.float64), 1)
    _, _, parts = loss_fn(cfg, state={"memory": memory}, epoch={"pskd_weight": 0.5})(_FixedExits(logits, feats), None,
                                                                                      y, torch.arange(B))
    assert parts["byot_ce"].item() == pytest.approx(
        cfg.alpha * sum(F.cross_entropy(z, y) for z in logits[:-1]).item(), rel=1e-12)


# ---------------------------------------------------------------- the registry

def test_every_method_parses_and_names_itself():
    methods = terms.all_methods()
    assert len(methods) == len(set(methods)) == 10
    for m in methods:
        assert terms.method_name(terms.parse_method(m)) == m
    assert terms.canonical("dmfl+byot+pskd") == "pskd+byot+dmfl"
    assert terms.canonical("ce+byot") == "byot"
    assert RunConfig(method="byot+pskd", rounds=0).method == "pskd+byot"


@pytest.mark.parametrize("method, message", [
    ("kd+byot", "method kd combines with no other term"),
    ("dml+pskd", "method dml combines with no other term"),
    ("byot+byot", "each term once"),
    ("byot+hint", "unknown: hint"),
    ("", "method must be"),
])
def test_invalid_combinations_are_one_line_config_errors(method, message):
    with pytest.raises(ConfigError, match=message) as e:
        preset("demo").replace(method=method, rounds=0).validate()
    assert "\n" not in str(e.value) and e.value.field == "method"


@pytest.mark.parametrize("method", terms.all_methods())
def test_the_registry_decides_rounds_exits_and_sam(method):
    cfg = preset("demo").replace(method=method, rounds=0, **{"model.exits": terms.needs_exits(
        preset("demo").replace(method=method))}).validate()
    assert terms.num_rounds(cfg) == 1
    with pytest.raises(ConfigError, match="model.exits"):
        cfg.replace(**{"model.exits": not cfg.model.exits}).validate()
    sam = cfg.replace(**{"optim.sam_rho": 0.05})
    if not any(terms.TERMS[t].no_sam for t in terms.terms_of(cfg)):
        sam.validate()
    else:
        with pytest.raises(ConfigError, match="optim.sam_rho"):
            sam.validate()
    assert terms.formula(cfg).startswith(r"\begin{aligned}")


def test_formula_shows_each_terms_numbers():
    f = terms.formula(preset("demo-pskd-byot-dmfl"))
    assert "0.90" in f and "0.10" in f and r"\tilde y" in f and "q_i" in f and "0.80" in f  # a_T = 0.8
    z = terms.formula(preset("byot-cifar100-resnet18"))
    assert "A_i F_i" in z and "3^2" not in z and "0.70" in z and "0.30" in z


def test_seed003_presets_cover_the_table():
    for row in ("baseline", "byot", "pskd", "dmfl", "pskd-byot", "pskd-dmfl", "byot-dmfl", "pskd-byot-dmfl"):
        cfg = preset(f"demo-{row}").validate()
        assert cfg.method == ("ce" if row == "baseline" else row.replace("-", "+"))
        assert math.isclose(cfg.alpha, 0.9) and cfg.byot_style == "luan" and cfg.pskd_alpha == 0.2


# ---------------------------------------------------------------- the paper presets compute their authors' loss

class _FixedWithAdapters(_FixedExits):
    def __init__(self, logits, feats, adapters):
        super().__init__(logits, feats)
        self.hint_adapters = nn.ModuleList(adapters)


def test_byot_preset_computes_the_first_authors_loss_with_their_defaults():
    """byot-cifar100-resnet18 through sdlab's training loss = their train.py with its argparse defaults
    (loss_coefficient 0.3, feature_loss_coefficient 0.03, temperature 3.0)."""
    cfg = preset("byot-cifar100-resnet18")
    logits, feats, y = _tensors(8)
    torch.manual_seed(1)
    adapters = [nn.Linear(D, D).double() for _ in range(K - 1)]
    ours, _, _ = loss_fn(cfg)(_FixedWithAdapters(logits, feats, adapters), None, y, None)
    ref = zhang_reference(logits[::-1], feats[::-1], y, [adapters[K - 1 - j] for j in range(1, K)],
                          loss_coefficient=0.3, feature_loss_coefficient=0.03, temperature=3.0)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)


@pytest.mark.parametrize("name", ["demo-byot", "pskdml-cifar100-resnet18-byot", "pskdml-cifar100-resnet50-byot"])
def test_seed003_byot_presets_compute_luanyuntengs_loss_with_their_defaults(name):
    """Seed 003's BYOT rows = luanyunteng's train.py with its defaults (alpha 0.1, beta 1e-6, temperature 3)."""
    cfg = preset(name)
    logits, feats, y = _tensors(9, positive_features=True)
    ours, _, _ = loss_fn(cfg)(_FixedExits(logits, feats), None, y, None)
    maps = [f[:, :, None, None] for f in feats]
    ref = luan_reference(logits[-1], logits[:-1], maps[-1], maps[:-1], y, alpha=0.1, beta=1e-6, temperature=3)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)


@pytest.mark.parametrize("name", ["pskd-cifar100-resnet18", "demo-pskd", "pskdml-cifar100-resnext50_32x4d-pskd"])
def test_pskd_presets_use_the_authors_alpha_T(name):
    """Their main.py defaults to alpha_T = 0.8: a_t = 0.8 (t+1)/T."""
    cfg = preset(name)
    final = terms.pskd_final_alpha(cfg)
    for epoch in (0, cfg.epochs // 2, cfg.epochs - 1):
        assert pskd_prev_weight(epoch, cfg.epochs, final) == pytest.approx(0.8 * ((epoch + 1) / cfg.epochs))


def test_a_new_term_is_one_registry_entry(monkeypatch, tmp_path):
    """A term registered with its loss trains through sdcore.methods.single with no other change: its share
    adds to the objective, its part is logged every epoch, and the charts name it from its entry."""
    from sdcore import plots
    from sdcore.training import train

    def penalty(s):
        share = 0.01 * s.logits[-1].pow(2).mean()
        return share, {"toy": share}

    toy = terms.Term("toy", "toy", "a penalty on the deepest logits' square", "this test", lambda cfg: r"0.01\,z^2",
                     logs={"toy": "toy: logit penalty"}, loss=penalty)
    monkeypatch.setitem(terms.TERMS, "toy", toy)
    model, x, y = nn.Linear(4, 3).double(), torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    total, z, parts = loss_fn(RunConfig(method="toy"))(model, x, y, torch.arange(5))
    assert set(parts) == {"ce", "toy"}
    assert total.item() == pytest.approx((F.cross_entropy(z, y) + 0.01 * z.pow(2).mean()).item(), rel=1e-12)
    assert plots.part_name("toy") == "· toy: logit penalty" and plots.part_name("ce") == "· deepest exit's CE"

    run, _ = train(preset("demo-baseline").replace(method="toy", epochs=2, **{"data.subset": 200}), runs_dir=tmp_path)
    logged = [m["train_parts"] for m in run.metrics()]
    assert len(logged) == 2 and all(set(p) == {"ce", "toy"} and p["toy"] > 0 for p in logged)
