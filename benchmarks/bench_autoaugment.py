"""AutoAugment on a batch: sdcore's grouped application vs torchvision's AutoAugment one image at a time.

    python benchmarks/bench_autoaugment.py [--batch 256] [--trials 5] [--device cpu]

Random uint8 CIFAR-sized images; the two are alternated, medians; prints a Markdown row.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.transforms import v2

from sdcore.data import BatchAutoAugment


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 3, 32, 32), generator=g, dtype=torch.uint8).to(args.device)
    ours, theirs = BatchAutoAugment(), v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    draws = [t.to(args.device) for t in ours.draw(args.batch, g)]
    fns = {"sdcore (grouped)": lambda: ours(x, *draws), "torchvision, per image": lambda: [theirs(img) for img in x]}
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for i in range(args.trials):
        for k in (list(fns) if i % 2 == 0 else list(fns)[::-1]):
            t0 = time.perf_counter()
            fns[k]()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"| AutoAugment, batch of {args.batch} 32x32 RGB, {args.device}, 1 thread | "
          f"{1e3 * med['sdcore (grouped)']:.1f} ms | {1e3 * med['torchvision, per image']:.1f} ms | "
          f"{med['torchvision, per image'] / med['sdcore (grouped)']:.2f}x |")


if __name__ == "__main__":
    main()
