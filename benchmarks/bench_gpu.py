"""The GPU fast path: images/s and epoch time of ResNet-18 on CIFAR-10-shaped synthetic data.

    python benchmarks/bench_gpu.py                       # on a CUDA machine: 50 000 images, batch 96 (Pham)
    python benchmarks/bench_gpu.py --device cpu --images 960 --epochs 1 --no-compile   # a smoke run anywhere
    python benchmarks/bench_gpu.py --images 9600 --max-seconds 170   # benchmarks/gpu_check.sh's short GPU run

Each variant trains the same ResNet-18 (10 classes) on the same uint8 images resident on the device
(normalization and crop + flip as batched tensor ops, as sdlab does) for ``--epochs`` timed epochs after
one warm-up epoch (which also pays torch.compile's compilation); times are taken with the device
synchronized. Variants:

    bare loop fp32                the loop a person writes: index, normalize, flip/crop, forward, CE,
                                  backward, clip, SGD — nothing else
    engine fp32                   sdcore.engine.train_epoch with the same settings
    bare loop bf16 + NHWC         the bare loop under bf16 autocast with channels_last
    engine bf16                   precision=bf16
    engine bf16 + NHWC            + channels_last=true
    engine bf16 + NHWC + compile  + compile=true

The engine/bare ratios (goal ≤ 1.02, issue 18) come from alternating the eager variants round-robin; the
speed-ups are against "bare loop fp32". The compile variant is warmed up and timed last, on its own, so
that its compilation (tens of seconds) cannot cost the eager table. ``--max-seconds`` bounds the whole
benchmark for a lent machine's few minutes: timed rounds stop when the next would not fit, and the compile
variant is left out when the eager ones took half of it; SIGTERM (a caller's ``timeout``) prints what was
measured so far. The table says how many epochs each variant timed. Prints a Markdown section (device,
torch and CUDA versions, date) for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import platform
import signal
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdcore.config import OptimConfig  # noqa: E402
from sdcore.data import BatchTransform, TensorSource  # noqa: E402
from sdcore.engine import _compiled, build_optimizer, build_scheduler, resolve_device, train_epoch  # noqa: E402
from sdcore.models import create  # noqa: E402

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
PHAM = OptimConfig(name="sgd", lr=0.025, momentum=0.9, weight_decay=3e-4, batch_size=96, grad_clip=5.0,
                   schedule="cosine")


def synthetic(n: int, device: torch.device) -> TensorSource:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return TensorSource(x=x.to(device), y=y.to(device),
                        transform=BatchTransform(mean=CIFAR_MEAN, std=CIFAR_STD, pad=4, flip=True, device=device))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh_model(device: torch.device, channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create("resnet18", num_classes=10).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def engine(src: TensorSource, device, *, bf16: bool, channels_last: bool, compile: bool):
    model = fresh_model(device, channels_last)
    trained = _compiled(model, src, PHAM.batch_size) if compile else model
    opt = build_optimizer(model, PHAM)
    sched = build_scheduler(opt, PHAM, epochs=1000, steps_per_epoch=src.num_batches(PHAM.batch_size))
    gen = torch.Generator().manual_seed(0)

    def loss_fn(m, x, y, idx):
        z = m(x)
        return F.cross_entropy(z, y), z

    def epoch() -> None:
        train_epoch(trained, src, loss_fn, opt, sched, batch_size=PHAM.batch_size, grad_clip=PHAM.grad_clip,
                    augment=True, generator=gen, autocast=torch.bfloat16 if bf16 else None,
                    channels_last=channels_last)
    return epoch


def bare(src: TensorSource, device, *, bf16: bool, channels_last: bool):
    """No events, no metrics, no per-layer gradient log: the floor the engine is measured against."""
    model = fresh_model(device, channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=PHAM.lr, momentum=PHAM.momentum, weight_decay=PHAM.weight_decay)
    steps = src.num_batches(PHAM.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps * 1000)
    mean = torch.tensor(CIFAR_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, device=device).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(0)
    n, b = len(src), PHAM.batch_size

    def epoch() -> None:
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        shifts = torch.randint(0, 9, (n, 2), generator=gen).to(device)
        flips = (torch.rand(n, generator=gen) < 0.5).to(device)
        for i in range(0, n, b):
            idx = perm[i:i + b]
            x = (src.x[idx].float() / 255 - mean) / std
            x = torch.where(flips[idx].view(-1, 1, 1, 1), x.flip(3), x)
            x = F.pad(x, (4, 4, 4, 4))  # crop 32x32 at a random offset from the padded image, batched by gather
            rows = (shifts[idx, 0].view(-1, 1) + torch.arange(32, device=device)).view(-1, 1, 32, 1)
            cols = (shifts[idx, 1].view(-1, 1) + torch.arange(32, device=device)).view(-1, 1, 1, 32)
            x = x.gather(2, rows.expand(-1, 3, 32, 40)).gather(3, cols.expand(-1, 3, 32, 32))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x), src.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), PHAM.grad_clip)
            opt.step()
            sched.step()
    return epoch


def timed_epochs(epoch, device, epochs: int) -> list[float]:
    out = []
    for _ in range(epochs):
        sync(device)
        t0 = time.perf_counter()
        epoch()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


class Stopped(BaseException):
    """SIGTERM (a caller's ``timeout``) arrived: print what was measured so far. (Not an Exception, so that the
    compile variant's ``except Exception`` lets it through.)"""


def _stop(signum, frame):
    raise Stopped


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--images", type=int, default=50_000, help="training images per epoch (CIFAR-10: 50 000)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per variant, after one warm-up epoch")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    p.add_argument("--max-seconds", type=float, default=0,
                   help="wall budget for the whole benchmark (0: none); fewer timed rounds when it runs short")
    args = p.parse_args()
    start = time.perf_counter()
    elapsed = lambda: time.perf_counter() - start
    over = lambda seconds: 0 < args.max_seconds < elapsed() + seconds  # would `seconds` more break the budget?
    device = resolve_device(args.device)
    src = synthetic(args.images, device)
    on_gpu = device.type == "cuda"
    variants = {
        "bare loop fp32": lambda: bare(src, device, bf16=False, channels_last=False),
        "engine fp32": lambda: engine(src, device, bf16=False, channels_last=False, compile=False),
        "bare loop bf16 + NHWC": lambda: bare(src, device, bf16=True, channels_last=True),
        "engine bf16": lambda: engine(src, device, bf16=True, channels_last=False, compile=False),
        "engine bf16 + NHWC": lambda: engine(src, device, bf16=True, channels_last=True, compile=False),
    }
    compiled = "engine bf16 + NHWC + compile"
    names = list(variants) + ([] if args.no_compile else [compiled])
    times: dict[str, list[float]] = {name: [] for name in names}
    notes = []
    signal.signal(signal.SIGTERM, _stop)
    try:
        epochs = {}
        for name, make in variants.items():
            epochs[name] = make()
            epochs[name]()  # warm-up: allocator, cuDNN's algorithm choice
            print(f"  warmed up: {name} ({elapsed():.0f} s)", file=sys.stderr, flush=True)
        for k in range(args.epochs):  # round-robin, so drift in the machine's speed hits every variant alike
            t0 = elapsed()
            for name in (list(variants) if k % 2 == 0 else list(variants)[::-1]):
                times[name] += timed_epochs(epochs[name], device, 1)
            if k + 1 < args.epochs and over(elapsed() - t0):
                notes.append(f"--max-seconds {args.max_seconds:g} reached after {k + 1} of {args.epochs} rounds.")
                break
        # Compilation takes tens of seconds, so it comes last, timed after the eager variants (not round-robin):
        # a budget or a timeout that runs out during it still leaves the eager table.
        if not args.no_compile and over(args.max_seconds / 2):
            notes.append(f"The compile variant was left out: the eager variants took {elapsed():.0f} s of "
                         f"--max-seconds {args.max_seconds:g}.")
        elif not args.no_compile:
            try:
                epoch = engine(src, device, bf16=True, channels_last=True, compile=True)
                epoch()  # warm-up: compilation (eval-mode probe, then train mode)
                print(f"  warmed up: {compiled} ({elapsed():.0f} s)", file=sys.stderr, flush=True)
                for _ in range(len(times["bare loop fp32"])):
                    times[compiled] += timed_epochs(epoch, device, 1)
                    if over(times[compiled][-1]):
                        break
            except Exception as e:  # noqa: BLE001 - a compiler failure in training costs that row, not the table
                first = (str(e).splitlines() or [""])[0][:200]
                notes.append(f"The compile variant failed: {type(e).__name__}: {first}")
    except Stopped:
        notes.append(f"Stopped by SIGTERM after {elapsed():.0f} s (the caller's time limit); variants without "
                     "timed epochs show –.")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    what = (f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}" if on_gpu
            else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    print(f"### GPU fast path: ResNet-18, CIFAR-10-shaped synthetic data ({time.strftime('%Y-%m-%d')}, {what}, "
          f"torch {torch.__version__})\n")
    budget = f" --max-seconds {args.max_seconds:g}" if args.max_seconds > 0 else ""
    print(f"`python benchmarks/bench_gpu.py --device {args.device} --images {args.images} --epochs {args.epochs}"
          f"{' --no-compile' if args.no_compile else ''}{budget}`: batch {PHAM.batch_size}, SGD + clip + cosine, "
          f"crop + flip on the device; median of each variant's timed epochs (count in the table) after a warm-up "
          f"epoch, the eager variants taken round-robin; {elapsed():.0f} s in all. {' '.join(notes)}\n")
    med = {name: statistics.median(t) for name, t in times.items() if t}
    base = med.get("bare loop fp32")
    print("| variant | images/s | epoch (s) | vs bare loop fp32 | timed epochs |\n|---|---|---|---|---|")
    for name in names:
        t = med.get(name)
        row = f"{args.images / t:,.0f} | {t:.2f} | {base / t:.2f}×" if t and base else "– | – | –"
        print(f"| {name} | {row} | {len(times[name])} |")
    ratio = lambda a, b: f"{med[a] / med[b]:.3f}×" if a in med and b in med else "not measured"
    print(f"\nengine / bare loop at equal settings (goal ≤ 1.02): fp32 {ratio('engine fp32', 'bare loop fp32')}, "
          f"bf16 + NHWC {ratio('engine bf16 + NHWC', 'bare loop bf16 + NHWC')}")


if __name__ == "__main__":
    main()
