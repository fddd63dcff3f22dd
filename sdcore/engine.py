"""One epoch, evaluation, optimizer and schedule, and the round loop every recipe shares.

A recipe (sdcore.methods.*) supplies a model and a ``LossFn``; ``fit`` trains it for
``cfg.epochs``, evaluates on validation and test after each epoch, appends the epoch to
metrics.jsonl, keeps the best-validation weights (never the test split), and emits ``Event``s a UI
can follow. The step loop does no host syncs: loss and accuracy are summed on the device and read
once per epoch.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from sdcore.analysis.hessian import top_eigenvalue_warm, training_batches
from sdcore.config import ConfigError, OptimConfig, RunConfig
from sdcore.data import DataBundle, Source
from sdcore.models import has_exits, is_cohort, model_for_round, pretrained
from sdcore.runs import RoundSummary, Run
from sdcore.terms import num_rounds


class Diverged(RuntimeError):
    """The loss became NaN or infinite; the message says where."""


class Cancelled(RuntimeError):
    """``should_stop`` returned True between two batches."""


@dataclass(frozen=True)
class Event:
    kind: str  # "step" | "epoch" | "round" (a round finished)
    round: int  # 0 = teacher
    epoch: int  # 1-based; 0 before the first epoch ends
    step: int  # steps done in this epoch
    steps: int  # steps per epoch
    rounds: int  # rounds in the run (teacher included)
    epochs: int  # epochs per round
    metrics: dict[str, Any] = field(default_factory=dict)


class LossFn(Protocol):
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor) -> tuple[Tensor, ...]:
        """Return (scalar loss, [B, C] logits used for the training accuracy[, parts]); parts, optional,
        maps names to the loss terms' scalars, logged per epoch as ``train_parts`` (batch-weighted means)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device must be auto or cpu on this machine (no CUDA GPU is available), got {name!r}")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """'cuda:0 (NVIDIA H200)' or 'cpu (2 threads; no GPU found)': what a run trains on, for people."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    gpu = "a GPU is present: device=auto or cuda uses it" if torch.cuda.is_available() else "no GPU found"
    return f"cpu ({torch.get_num_threads()} threads; {gpu})"


def build_optimizer(model: nn.Module, o: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                               weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


def lr_factor(o: OptimConfig, *, step: int, epochs: int, steps_per_epoch: int) -> float:
    """Multiplier on the peak lr at a 0-based optimizer step: linear warm-up, then the schedule.

    Cosine decays to 0 over the post-warm-up steps; step multiplies by gamma at each milestone
    (fractions of all epochs); constant keeps 1.
    """
    total = epochs * steps_per_epoch
    warm = round(o.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if o.schedule == "cosine":
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if o.schedule == "step":
        epoch = step / steps_per_epoch
        return o.step_gamma ** sum(epoch >= m * epochs for m in o.step_milestones)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, o: OptimConfig, *, epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(o, step=s, epochs=epochs, steps_per_epoch=steps_per_epoch))


def train_epoch(model: nn.Module, source: Source, loss_fn: LossFn, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, *, batch_size: int, grad_clip: float,
                augment: bool, generator: torch.Generator,
                on_step: Callable[[int], None] | None = None,
                should_stop: Callable[[], bool] | None = None, sam_rho: float | None = None,
                autocast: torch.dtype | None = None, channels_last: bool = False,
                clean_y: Tensor | None = None) -> dict[str, float]:
    """One pass over ``source``; returns train_loss (mean of the optimized objective), train_ce (mean
    cross-entropy of the reported logits against the split's labels, noisy ones included) and train_acc (%)
    against them, all from the forward at the current weights; with ``clean_y`` (int64 [N], the labels
    before label noise, indexed like the split) also train_ce_clean and train_acc_clean against those. The
    objective differs between recipes (a student's adds the KD term), the cross-entropies do not: they are
    what compares rounds. Also grad_abs: per backbone convolution weight (BYOT exit
    heads left out) the mean over steps of mean |gradient| (the gradient the optimizer uses, before
    clipping) — BYOT Fig. 5's per-layer gradient magnitude; train_parts: the mean of each part the
    loss function reports (``LossFn``), when it reports any.

    ``sam_rho``: sharpness-aware minimization (Foret et al. 2021) around the optimizer: per step the
    gradient at the weights w gives e = rho * g / ||g|| (global norm), the loss is evaluated again at
    w + e with BatchNorm's running statistics frozen (they update on the first pass only), w is
    restored, and the optimizer steps with that second gradient (clipped like any other). rho = 0
    gives exactly the plain optimizer's steps, at twice the cost.

    ``autocast``: run the forward (loss included) under torch.autocast with this dtype (bf16; the
    weights and their gradients stay fp32). ``channels_last``: feed the batches in NHWC layout.
    """
    model.train()
    loss_sum = torch.zeros((), device=source.y.device)
    ce_sum = torch.zeros(2, device=source.y.device)  # against the split's labels, against clean_y
    correct = torch.zeros(2, device=source.y.device, dtype=torch.long)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    clip_groups = model.clip_groups() if is_cohort(model) else [params]  # a DML cohort: each peer its own norm
    convs = [(n, p) for n, p in getattr(model, "_orig_mod", model).named_parameters()  # (compiled: the inner names)
             if p.ndim == 4 and p.requires_grad and not n.startswith("exit_heads")]
    grad_abs = torch.zeros(len(convs), device=source.y.device)
    parts_sum: dict[str, Tensor] = {}
    steps = 0

    def mixed(device_type: str) -> torch.autocast:
        return torch.autocast(device_type, dtype=autocast or torch.bfloat16, enabled=autocast is not None)

    for step, (idx, x, y) in enumerate(source.batches(batch_size, shuffle=True, augment=augment,
                                                      generator=generator)):
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled")
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with mixed(x.device.type):
            loss, logits, *extra = loss_fn(model, x, y, idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if sam_rho is not None:
            def mixed_loss(m, *batch, device_type=x.device.type):  # called right here, in this step
                with mixed(device_type):
                    return loss_fn(m, *batch)
            _sam_gradient(model, params, mixed_loss, (x, y, idx), sam_rho, optimizer)
        if convs:
            grad_abs += torch.stack([p.grad.abs().mean() if p.grad is not None else grad_abs.new_zeros(())
                                     for _, p in convs])
        steps += 1
        if grad_clip > 0:
            for group in clip_groups:
                nn.utils.clip_grad_norm_(group, grad_clip)
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach().float() * y.shape[0]
        z = logits.detach().float()
        targets = torch.stack([y, y if clean_y is None else clean_y[idx]])  # [2, B]
        ce_sum += torch.stack([F.cross_entropy(z, t, reduction="sum") for t in targets])
        correct += (z.argmax(1) == targets).sum(1)
        for name, v in (extra[0] if extra else {}).items():
            parts_sum[name] = parts_sum.get(name, 0.0) + v.detach().float() * y.shape[0]
        if on_step is not None:
            on_step(step + 1)
    n = len(source)
    ce, hits = (ce_sum / n).tolist(), (100.0 * correct / n).tolist()
    out = {"train_loss": loss_sum.item() / n, "train_ce": ce[0], "train_acc": hits[0],
           **({"train_ce_clean": ce[1], "train_acc_clean": hits[1]} if clean_y is not None else {}),
           "grad_abs": {name: v / max(steps, 1) for (name, _), v in zip(convs, grad_abs.tolist())}}
    if parts_sum:  # one host sync for all parts
        out["train_parts"] = dict(zip(parts_sum, (torch.stack(list(parts_sum.values())) / n).tolist()))
    return out


def _sam_gradient(model: nn.Module, params: list[Tensor], loss_fn: LossFn, batch: tuple[Tensor, Tensor, Tensor],
                  rho: float, optimizer: torch.optim.Optimizer) -> None:
    """Replace every .grad (the gradient at w) by the gradient at w + rho * g / ||g|| (SAM's ascent step)."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = rho / (norm + 1e-12)
    with torch.no_grad():
        saved = [(p, p.detach().clone()) for p in params if p.grad is not None]
        for p, _ in saved:
            p.add_(p.grad * scale)
    optimizer.zero_grad(set_to_none=True)
    with _frozen_bn_statistics(model):
        loss = loss_fn(model, *batch)[0]
        loss.backward()
    with torch.no_grad():
        for p, w in saved:  # back to w exactly (w + e - e would round)
            p.copy_(w)


class _frozen_bn_statistics:
    """BatchNorm layers still normalize with batch statistics but leave running_mean/var and
    num_batches_tracked as they were (SAM's second pass must not count the batch twice)."""

    def __init__(self, model: nn.Module):
        self.bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self) -> None:
        self.saved = [(m, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
                      for m in self.bns]
        for m in self.bns:
            m.momentum = 0.0

    def __exit__(self, *exc: Any) -> None:
        for m, momentum, tracked in self.saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


@torch.inference_mode()
def predict_logits(model: nn.Module, source: Source, *, batch_size: int = 1024, exits: bool = False
                   ) -> Tensor | list[Tensor]:
    """Eval-mode logits for every example of ``source`` in index order: [N, C] (or K of them)."""
    was_training = model.training
    model.eval()
    try:
        parts: list[list[Tensor]] = []
        for _, x, _ in source.batches(batch_size, shuffle=False, augment=False):
            parts.append(list(model.forward_exits(x).logits) if exits else [model(x)])
        per_exit = [torch.cat(p) for p in zip(*parts)]
    finally:
        model.train(was_training)
    return per_exit if exits else per_exit[0]


def evaluate(model: nn.Module, source: Source, *, batch_size: int = 1024) -> dict[str, Any]:
    """loss (mean CE) and acc (%) of the deepest classifier; with exits also per-exit and ensemble acc."""
    y = source.y
    if is_cohort(model):  # DML (peer 1) or an ensemble teacher (mean logits); every peer reported too
        per_peer = [predict_logits(peer, source, batch_size=batch_size) for peer in model.peers]
        ens = torch.stack([z.softmax(1) for z in per_peer]).mean(0)
        out = torch.stack(per_peer).mean(0) if model.ensemble else per_peer[0]  # what forward returns
        return {"loss": F.cross_entropy(out, y).item(), "acc": _acc(out, y),
                "acc_peers": [_acc(z, y) for z in per_peer], "acc_ensemble": _acc(ens, y)}
    if not has_exits(model):
        logits = predict_logits(model, source, batch_size=batch_size)
        return {"loss": F.cross_entropy(logits, y).item(), "acc": _acc(logits, y)}
    per_exit = predict_logits(model, source, batch_size=batch_size, exits=True)
    # BYOT's ensemble adds the exits' softmax outputs (BYOT Sec. 4.2), equal weights.
    ens = torch.stack([z.softmax(1) for z in per_exit]).mean(0)
    return {"loss": F.cross_entropy(per_exit[-1], y).item(), "acc": _acc(per_exit[-1], y),
            "acc_exits": [_acc(z, y) for z in per_exit], "acc_ensemble": _acc(ens, y)}


def _acc(scores: Tensor, y: Tensor) -> float:
    return 100.0 * (scores.argmax(1) == y).sum().item() / y.shape[0]


@dataclass
class RoundResult:
    round: int
    model: nn.Module  # holding the selected (best-validation or last) weights, eval mode
    best_epoch: int
    val: dict[str, Any]
    test: dict[str, Any]


@dataclass
class Session:
    """What one run's recipe needs: config, data, device, run folder, event sink, stop flag.

    ``resume`` is the run's checkpoint when continuing an interrupted run: ``fit`` of that round
    restores model, optimizer, scheduler, batch-order generator, best-so-far weights and any
    recipe state from it and carries on at the next epoch, so the result equals an uninterrupted
    run's. ``rounds_done`` rounds are already finished on disk (``completed_rounds`` loads them).
    """
    cfg: RunConfig
    data: DataBundle
    device: torch.device
    run: Run
    emit: Callable[[Event], None] = lambda e: None
    should_stop: Callable[[], bool] = lambda: False
    resume: dict[str, Any] | None = None
    rounds_done: int = 0

    @property
    def rounds(self) -> int:
        return num_rounds(self.cfg)

    def new_model(self, round_idx: int) -> nn.Module:
        """A freshly initialised model; init is seeded by (seed, round) so every round starts anew."""
        with torch.random.fork_rng(devices=[]):  # leave the global RNG of the caller untouched
            torch.manual_seed(self.cfg.seed * 1009 + round_idx)
            model = model_for_round(self.cfg, round_idx, **self.data.shapes)
        return model.to(self.device)

    def completed_rounds(self) -> list[RoundResult]:
        """The rounds finished before a resume, rebuilt from summary.json and rounds/<k>/model.pt."""
        summary = self.run.summary()
        entries = summary.rounds[: self.rounds_done] if summary is not None else ()
        return [RoundResult(e.round, self.run.load_model(e.round, **self.data.shapes, device=self.device), e.best_epoch,
                            dict(e.val), dict(e.test)) for e in entries]

    def load_pretrained(self, round_idx: int, path: str) -> RoundResult:
        """Round ``round_idx`` as the weights in ``path`` (``models.pretrained``): evaluated on val and test and
        saved like a trained round, with best_epoch 0 and no epochs in metrics.jsonl."""
        model = pretrained.load_into(self.new_model(round_idx), path).eval()
        self.run.save_model(round_idx, _cpu_copy(model.state_dict()))
        val = evaluate(model, self.data.val) if len(self.data.val) else {}
        result = RoundResult(round_idx, model, 0, val, evaluate(model, self.data.test))
        self.emit(Event("round", epoch=self.cfg.epochs, step=0, round=round_idx, steps=0, rounds=self.rounds,
                        epochs=self.cfg.epochs, metrics=round_summary(result).to_dict()))
        return result

    def fit(self, model: nn.Module, loss_fn: LossFn, *, round_idx: int,
            on_epoch_start: Callable[[int], None] | None = None,
            state: dict[str, Tensor] | None = None) -> RoundResult:
        """Train ``model`` for cfg.epochs; ``state`` holds recipe tensors (PS-KD memory) to checkpoint."""
        cfg, o = self.cfg, self.cfg.optim
        state = state or {}
        train = self.data.train
        steps = train.num_batches(o.batch_size)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        trained = _compiled(model, train, o.batch_size) if cfg.compile else model  # shares model's parameters
        optimizer = build_optimizer(model, o)
        scheduler = build_scheduler(optimizer, o, epochs=cfg.epochs, steps_per_epoch=steps)
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + round_idx)
        # Its own subset and generator: the batch order (gen) and the global RNG are untouched.
        sharpness = SharpnessTracker(cfg, train, round_idx) if cfg.track_sharpness else None
        best: dict[str, Any] | None = None  # {"score", "epoch", "weights"} of the kept epoch so far
        start = 0
        ckpt = self.resume
        if ckpt is not None and ckpt["round"] == round_idx:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            gen.set_state(ckpt["generator"])
            _set_rng_states(ckpt["rng"])
            for k, t in state.items():
                t.copy_(ckpt["state"][k])
            best, start = ckpt["best"], ckpt["epoch"]
            self.resume = None
        base = dict(round=round_idx, steps=steps, rounds=self.rounds, epochs=cfg.epochs)
        for epoch in range(start, cfg.epochs):
            if on_epoch_start is not None:
                on_epoch_start(epoch)
            t0 = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            stats = train_epoch(trained, train, loss_fn, optimizer, scheduler, batch_size=o.batch_size,
                                grad_clip=o.grad_clip, augment=cfg.data.augment, generator=gen,
                                on_step=lambda s, epoch=epoch: self.emit(Event("step", epoch=epoch, step=s, **base)),
                                should_stop=self.should_stop, sam_rho=o.sam_rho,
                                autocast=torch.bfloat16 if cfg.precision == "bf16" else None,
                                channels_last=cfg.channels_last,
                                clean_y=self.data.train_clean_y if cfg.data.label_noise > 0 else None)
            if not math.isfinite(stats["train_loss"]):
                raise Diverged(f"diverged at round {round_idx} epoch {epoch + 1}: the training loss is "
                               f"{stats['train_loss']}; lower optim.lr or enable optim.grad_clip")
            train_time = time.perf_counter() - t0
            # host syncs: a few per Lanczos step (its scalars steer the next step)
            curvature = {"sharpness": sharpness(model)} if sharpness is not None else {}
            val = evaluate(model, self.data.val) if len(self.data.val) else {}
            test = evaluate(model, self.data.test)
            record = {"round": round_idx, "epoch": epoch + 1, "lr": lr, "epoch_time": train_time, **stats,
                      **curvature, **_prefixed("val_", val), **_prefixed("test_", test)}
            score = val["acc"] if cfg.select == "best_val" else float(epoch)
            if best is None or score > best["score"]:  # ties keep the earlier epoch
                best = {"score": score, "epoch": epoch + 1, "weights": _cpu_copy(model.state_dict())}
            self.run.append_metrics(record)
            self.run.save_checkpoint({
                "round": round_idx, "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "generator": gen.get_state(), "rng": _rng_states(), "state": state, "best": best})
            self.emit(Event("epoch", epoch=epoch + 1, step=steps, metrics=record, **base))
        model.load_state_dict(best["weights"])
        model.eval()
        self.run.save_model(round_idx, best["weights"])
        val = evaluate(model, self.data.val) if len(self.data.val) else {}
        result = RoundResult(round_idx, model, best["epoch"], val, evaluate(model, self.data.test))
        self.emit(Event("round", epoch=cfg.epochs, step=steps, metrics=round_summary(result).to_dict(), **base))
        return result


class SharpnessTracker:
    """λ_max of one round's training loss after each epoch (``RunConfig.track_sharpness``), logged as
    ``sharpness`` in metrics.jsonl.

    ``tracker(model)`` takes cfg.sharpness_steps Lanczos steps (HVPs; ``hessian.top_eigenvalue_warm``)
    on cfg.sharpness_subset examples of the training split, with its labels as given (noisy ones
    included), BatchNorm in eval mode: the Hessian page's loss. The subset is drawn once from cfg.seed
    (the same for every round, so rounds compare); each call starts from the previous call's top
    eigenvector, so a few steps follow λ_max as the weights move. A new round, and a resumed one, start
    cold from a random vector (drawn from the tracker's own generator, seeded from seed and round):
    the first epoch's value is then a cruder lower bound. The model's mode, weights and grads are
    restored; training draws nothing from it. Cost per epoch: BENCHMARKS.md, "Sharpness during training".
    """

    def __init__(self, cfg: RunConfig, train: Source, round_idx: int):
        self.steps = cfg.sharpness_steps
        self.batches = training_batches(train, min(cfg.sharpness_subset, len(train)),
                                        generator=torch.Generator().manual_seed(cfg.seed))
        self.generator = torch.Generator().manual_seed(cfg.seed * 104729 + round_idx)
        self.vector: Tensor | None = None  # the last top eigenvector, [d] on the model's device

    def __call__(self, model: nn.Module) -> float:
        est = top_eigenvalue_warm(model, self.batches, self.vector, self.steps, self.generator)
        self.vector = est.vector
        return est.value


def _compiled(model: nn.Module, source: Source, batch_size: int) -> nn.Module:
    """torch.compile(model), tried once on a real batch (eval mode, no grad, so nothing moves); on any
    failure (no compiler toolchain, an unsupported op) the eager model, with a RuntimeWarning."""
    try:
        compiled = torch.compile(model)
        _, x, _ = next(iter(source.batches(batch_size, shuffle=False, augment=False)))
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                compiled(x)
        finally:
            model.train(was)
        return compiled
    except Exception as e:  # noqa: BLE001 - any compile failure falls back to eager
        warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                      "training eagerly", RuntimeWarning, stacklevel=2)
        return model


def _rng_states() -> dict[str, Any]:
    """Global RNGs (nothing in sdlab's models draws from them today; dropout would): CPU and CUDA."""
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _cpu_copy(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}


def _prefixed(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in d.items()}


def round_summary(r: RoundResult) -> RoundSummary:
    """The per-round entry of summary.json: accuracies in percent of the selected model."""
    return RoundSummary(round=r.round, best_epoch=r.best_epoch, test=dict(r.test), val=dict(r.val))


# ---------------------------------------------------------------- CPU threads on a busy laptop

@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block (for the calling thread's OpenMP team), then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_train_step(model: nn.Module, x: Tensor, y: Tensor, *, threads: int, repeats: int = 3) -> float:
    """Median seconds of one training step (forward, cross-entropy, backward, SGD step) at ``threads``
    intra-op threads, on a copy of ``model`` (its weights and BatchNorm statistics are left as they are)."""
    m = copy.deepcopy(model).train()
    opt = torch.optim.SGD(m.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y).backward()
        opt.step()

    with cpu_threads(threads):
        step()  # warm-up: allocations, oneDNN primitive creation
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


# One batch's forward below this many FLOPs trains on one thread: its ops are too short to split across cores,
# and on a busy laptop every extra thread waits for a core (BENCHMARKS.md, "Threads on a busy laptop").
SMALL_FORWARD_FLOPS = 1e9


def forward_flops(model: nn.Module, x: Tensor) -> float:
    """FLOPs of one eval-mode forward of the batch ``x`` (torch's FlopCounterMode: convolutions and matmuls)."""
    was = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was)
    return float(counter.get_total_flops())


def threads_for(model: nn.Module, x: Tensor, *, most: int | None = None) -> int:
    """CPU intra-op threads for training ``model`` on batches like ``x``: 1 for a small model (a forward under
    SMALL_FORWARD_FLOPS), else ``most`` (default: torch's current count). A rule of the model's size, not a
    timing: the thread count changes floating-point sums, so a timing taken under varying load would make
    the same config train to different numbers from one run to the next."""
    most = most or torch.get_num_threads()
    return 1 if forward_flops(model, x) < SMALL_FORWARD_FLOPS else most


def training_threads(cfg: RunConfig, model: nn.Module, x: Tensor, device: torch.device) -> int:
    """cfg.threads, or threads_for(model, x) on the CPU; on a GPU the CPU only feeds it: torch's count."""
    if device.type != "cpu":
        return torch.get_num_threads()
    return cfg.threads or threads_for(model, x)


@dataclass(frozen=True)
class RunEstimate:
    """How long training ``cfg`` should take here, from a step measured just now (``estimate_run``)."""
    seconds: float  # training steps + per-epoch evaluation, every round
    threads: int  # what the run will train with (training_threads)
    step_s: float  # one training step at that count
    eval_s: float  # evaluating validation + test once
    steps: int  # training steps of the whole run


def estimate_run(cfg: RunConfig, data: DataBundle, device: torch.device | None = None) -> RunEstimate:
    """Time one training step of ``cfg``'s model on a real batch and one evaluation pass, now, on this
    machine (as loaded as it is), and scale by the run's step and epoch counts. Leaves out what a
    recipe adds per step (a student's KD term reads cached teacher logits; BYOT's exits are in the
    model) and per epoch (a checkpoint): BENCHMARKS.md compares the estimate with measured runs."""
    device = device or resolve_device(cfg.device)
    with torch.random.fork_rng(devices=[]):
        model = model_for_round(cfg, 0, **data.shapes).to(device)
    _, x, y = next(iter(data.train.batches(cfg.optim.batch_size, shuffle=False, augment=False)))
    threads = training_threads(cfg, model, x, device)
    step_s = time_train_step(model, x, y, threads=threads)
    with cpu_threads(threads):
        for _ in range(2):  # the first pass warms up (allocations, kernels); the second is timed
            t0 = time.perf_counter()
            for split in (data.val, data.test):
                if len(split):
                    predict_logits(model, split)
            eval_s = time.perf_counter() - t0
    steps = num_rounds(cfg) * cfg.epochs * data.train.num_batches(cfg.optim.batch_size)
    return RunEstimate(seconds=steps * step_s + num_rounds(cfg) * cfg.epochs * eval_s, threads=threads,
                       step_s=step_s, eval_s=eval_s, steps=steps)
