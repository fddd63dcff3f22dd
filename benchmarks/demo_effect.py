"""Does the demo preset show students beating the teacher? Mean ± std of test accuracy over seeds.

    python benchmarks/demo_effect.py --preset demo --seeds 0,1,2 [--set key=value ...] [--markdown]

Each seed is a full run of the preset (teacher + students) in a temporary runs folder. The test
accuracy per round is that of the model the run selected (best validation epoch by default), read
back from summary.json, so this measures exactly what `python -m sdcore train` reports.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from sdcore.config import apply_overrides, preset
from sdcore.training import train


def measure(name: str, seeds: list[int], overrides: list[str]) -> tuple[list[list[float]], float]:
    """Per seed, the test accuracy (%) of every round; and the mean wall time of one run (s)."""
    accs, times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            cfg = apply_overrides(preset(name), overrides + [f"seed={seed}"]).validate()
            t0 = time.perf_counter()
            run, _ = train(cfg, runs_dir=tmp)
            times.append(time.perf_counter() - t0)
            accs.append([r.test_acc for r in run.summary().rounds])
    return accs, statistics.mean(times)


def table(accs: list[list[float]]) -> str:
    cols = list(zip(*accs))
    names = ["teacher (round 0)"] + [f"student {k}" for k in range(1, len(cols))]
    cell = lambda xs: f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.2f}"
    wins = [sum(s > t for s, t in zip(col, cols[0])) for col in cols]
    head = "| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names)
    return (f"{head}\n| test acc % (mean ± std) | " + " | ".join(cell(c) for c in cols) + " |\n"
            "| seeds beating the teacher | – | " + " | ".join(f"{w}/{len(accs)}" for w in wins[1:]) + " |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="demo")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    accs, secs = measure(args.preset, seeds, args.overrides)
    print(f"preset {args.preset} {' '.join(args.overrides)}; seeds {args.seeds}; {secs:.1f} s per run")
    for seed, row in zip(seeds, accs):
        print(f"  seed {seed}: " + "  ".join(f"{a:.2f}" for a in row))
    print(table(accs))


if __name__ == "__main__":
    main()
