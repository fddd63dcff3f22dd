"""Speed of the training core as ratios measured in one run (this machine is noisy; ratios aren't).

    python benchmarks/bench_core.py [--trials 5] [--epochs 30]

1. engine.train_epoch vs a minimal hand-written loop on the same model, tensors and settings;
2. a KD round (cached teacher logits) vs a teacher round, and vs a KD round that runs the teacher
   every step (what the cache saves);
3. a BYOT epoch vs a plain epoch of the same backbone, for the demo CNN and a CIFAR-shaped ResNet-18;
4. wall time of `python -m sdcore train --preset demo` (a whole demo, as a user runs it).
Timings alternate between the two sides of each ratio and report medians, so drift in machine
load hits both sides alike. Prints a Markdown section for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sdcore.config import preset
from sdcore.data import BatchTransform, TensorSource, load
from sdcore.engine import Session, build_optimizer, build_scheduler, train_epoch
from sdcore.losses import kd_loss
from sdcore.methods.kd_rounds import distill_loss, label_loss
from sdcore.methods.single import loss_fn as single_loss_fn
from sdcore.models import create
from sdcore.runs import RunStore

ROOT = Path(__file__).resolve().parents[1]


def session(tmp: str, **changes) -> Session:
    cfg = preset("demo").replace(**changes).validate()
    return Session(cfg=cfg, data=load(cfg.data, seed=0), device=torch.device("cpu"), run=RunStore(tmp).create(cfg))


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def alternate(a, b, trials: int) -> tuple[float, float]:
    """Median seconds of a() and b(), run alternately (a, b, b, a, ...) after one warm-up each."""
    a(), b()
    ta, tb = [], []
    for i in range(trials):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        t1, t2 = timed(first), timed(second)
        (ta, tb)[first is b].append(t1)
        (ta, tb)[second is b].append(t2)
    return statistics.median(ta), statistics.median(tb)


def engine_epoch(s: Session, loss_fn, model, epochs: int = 1):
    o = s.cfg.optim
    steps = s.data.train.num_batches(o.batch_size)
    opt = build_optimizer(model, o)
    sched = build_scheduler(opt, o, epochs=epochs, steps_per_epoch=steps)
    gen = torch.Generator().manual_seed(0)
    return lambda: [train_epoch(model, s.data.train, loss_fn, opt, sched, batch_size=o.batch_size,
                                grad_clip=o.grad_clip, augment=False, generator=gen) for _ in range(epochs)]


def hand_epoch(s: Session, model):
    """The loop a person writes by hand: pre-normalized tensors, randperm, CE, clip, SGD, cosine."""
    o = s.cfg.optim
    x_all = torch.cat([x for _, x, _ in s.data.train.batches(4096, shuffle=False, augment=False)])
    y_all = s.data.train.y
    n = len(y_all)
    steps = -(-n // o.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps * 1000)
    gen = torch.Generator().manual_seed(0)

    def epoch():
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, o.batch_size):
            idx = perm[i:i + o.batch_size]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            opt.step()
            sched.step()
    return epoch


def cifar_shaped(n: int = 128) -> TensorSource:
    """Synthetic uint8 3x32x32 images with CIFAR normalization: FLOP-bound steps, unlike 8x8 digits."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 100, (n,), generator=g)
    return TensorSource(x=x, y=y, transform=BatchTransform(mean=(0.5,) * 3, std=(0.25,) * 3, pad=4, flip=True,
                                                          device=torch.device("cpu")))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--epochs", type=int, default=30, help="epochs per timed round (the demo preset's 30)")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        s = session(tmp)
        n = len(s.data.train)
        te, th = alternate(engine_epoch(s, label_loss, s.new_model(0)), hand_epoch(s, s.new_model(0)), 3 * args.trials)
        rows.append(("engine epoch / hand-written loop (demo CNN, digits)", te / th, "≤ 1.05",
                     f"{n / te:.0f} img/s engine, {n / th:.0f} img/s hand"))

        teacher = s.new_model(0)
        E = args.epochs
        # A round = a fresh model trained E epochs; the KD side includes building its teacher-logit cache.
        round_with = lambda make_loss: lambda: engine_epoch(s, make_loss(), s.new_model(1), E)()
        teacher_round = round_with(lambda: label_loss)
        kd_cached = round_with(lambda: distill_loss(s, teacher))

        def per_step_teacher(model, x, y, idx):
            with torch.no_grad():
                t = teacher.eval()(x)
            z = model(x)
            return kd_loss(z, t, y, alpha=s.cfg.alpha, temperature=s.cfg.temperature), z
        t_teacher, t_kd = alternate(teacher_round, kd_cached, args.trials)
        rows.append((f"KD round / teacher round, no augmentation ({E} epochs, demo CNN, cached teacher logits)",
                     t_kd / t_teacher, "≤ 1.05", ""))
        t_cached, t_uncached = alternate(kd_cached, round_with(lambda: per_step_teacher), args.trials)
        rows.append(("KD round with a teacher forward every step / with cached logits", t_uncached / t_cached,
                     "(what the cache saves)", ""))

        sb = session(tmp, method="byot", rounds=0, **{"model.exits": True})
        t_plain, t_byot = alternate(engine_epoch(s, label_loss, s.new_model(0)),
                                    engine_epoch(sb, single_loss_fn(sb.cfg), sb.new_model(0)), 3 * args.trials)
        rows.append(("BYOT epoch / plain epoch (demo CNN, 3 exits, 8x8 digits)", t_byot / t_plain, "≤ 1.15",
                     "tiny convs: per-op overhead, not FLOPs, dominates"))

        src = cifar_shaped()
        r18 = session(tmp, method="byot", rounds=0, **{"model.exits": True, "optim.batch_size": 32})
        r18.data.train = src

        def r18_epoch(exits: bool):
            model = create("resnet18", num_classes=100, exits=exits)
            return engine_epoch(r18, single_loss_fn(r18.cfg) if exits else label_loss, model)
        t_plain, t_byot = alternate(r18_epoch(False), r18_epoch(True), args.trials)
        rows.append(("BYOT epoch / plain epoch (ResNet-18, 4 exits, 3x32x32, batch 32)", t_byot / t_plain, "≤ 1.15",
                     f"{len(src) / t_plain:.0f} img/s plain"))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        demo = timed(lambda: subprocess.run([sys.executable, "-m", "sdcore", "train", "--preset", "demo", "--quiet",
                                             "--runs-dir", tmp], check=True, env=env, capture_output=True))

    print(f"### Training core ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, CPU)\n")
    print(f"`python benchmarks/bench_core.py --trials {args.trials} --epochs {args.epochs}`; "
          "medians of alternating trials.\n")
    print("| ratio | measured | goal | note |\n|---|---|---|---|")
    for name, ratio, goal, note in rows:
        print(f"| {name} | {ratio:.3f}× | {goal} | {note} |")
    print(f"\n`python -m sdcore train --preset demo` (teacher + 2 students, 30 epochs each, startup included): "
          f"**{demo:.1f} s** wall time on this machine.")


if __name__ == "__main__":
    main()
