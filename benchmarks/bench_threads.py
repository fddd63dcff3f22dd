"""How many torch threads should a training step use on a laptop CPU, idle and beside busy processes?

    python benchmarks/bench_threads.py [--steps 40] [--trials 3]

For models of growing size (the demo CNN, a wider CNN, a CIFAR-shaped ResNet-18), times training steps
(forward, backward, SGD step) in a fresh subprocess per setting: intra-op threads 1 or all cores, OpenMP
wait policy ACTIVE (spin, the default) or PASSIVE (sleep), on an idle machine and beside
``yes > /dev/null`` processes (one per core, a busy laptop). Settings alternate within each trial, so
drift hits all alike; medians. Prints a Markdown section for BENCHMARKS.md: ms per step, and each
setting's busy / idle ratio.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import time

MODELS = {  # name -> (arch, width, image size, channels, batch, fraction of --steps: big steps need fewer)
    "demo CNN (8x8 digits, batch 64; 0.08 GFLOP)": ("cnn", 1.0, 8, 1, 64, 1.0),
    "CNN x4 (8x8, batch 64; 1.2 GFLOP)": ("cnn", 4.0, 8, 1, 64, 0.5),
    "ResNet-18 (32x32, batch 64; 71 GFLOP)": ("resnet18", 1.0, 32, 3, 64, 0.1),
}

CHILD = r"""
import sys, time, torch, torch.nn.functional as F
from sdcore.models import create
arch, width, size, ch, batch, steps = (sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                       int(sys.argv[5]), int(sys.argv[6]))
torch.manual_seed(0)
m = create(arch, num_classes=10, in_channels=ch, image_size=size, width=width)
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(batch, ch, size, size), torch.randint(0, 10, (batch,))
def step():
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(m(x), y).backward()
    opt.step()
for _ in range(3):
    step()
t0 = time.perf_counter()
for _ in range(steps):
    step()
print((time.perf_counter() - t0) / steps * 1000)
"""


def step_ms(model: tuple, threads: int, policy: str, steps: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": policy}
    *spec, share = model
    out = subprocess.run([sys.executable, "-c", CHILD, *map(str, spec), str(max(2, round(steps * share)))], env=env,
                         check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


class Busy:
    """``n`` ``yes > /dev/null`` processes for the duration of a with block."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self) -> "Busy":
        self.procs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(self.n)]
        time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--trials", type=int, default=3)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    settings = [(t, pol) for t in sorted({1, cores}) for pol in ("ACTIVE", "PASSIVE")]
    times: dict[tuple, list[float]] = {}
    t0 = time.perf_counter()
    for trial in range(args.trials):
        for busy in (False, True) if trial % 2 == 0 else (True, False):
            ctx = Busy(cores) if busy else None
            if ctx:
                ctx.__enter__()
            try:
                order = list(itertools.product(MODELS, settings))
                for name, (threads, pol) in order if trial % 2 == 0 else reversed(order):
                    times.setdefault((name, threads, pol, busy), []).append(
                        step_ms(MODELS[name], threads, pol, args.steps))
            finally:
                if ctx:
                    ctx.__exit__()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"## Threads on a busy laptop: ms per training step ({time.strftime('%Y-%m-%d')}, {cores} cores)\n")
    print(f"`python benchmarks/bench_threads.py --steps {args.steps} --trials {args.trials}` "
          f"({time.perf_counter() - t0:.0f} s); busy = beside {cores} `yes > /dev/null` processes; medians of "
          f"{args.trials} trials, settings alternating.\n")
    print("| model | threads | OpenMP wait | idle ms/step | busy ms/step | busy / idle | busy / best idle |")
    print("|---|---|---|---|---|---|---|")
    for name in MODELS:
        best_idle = min(med[(name, t, pol, False)] for t, pol in settings)
        for t, pol in settings:
            idle, busy = med[(name, t, pol, False)], med[(name, t, pol, True)]
            print(f"| {name} | {t} | {pol.lower()} | {idle:.2f} | {busy:.2f} | {busy / idle:.2f} | "
                  f"{busy / best_idle:.2f} |")


if __name__ == "__main__":
    main()
