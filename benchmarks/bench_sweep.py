"""A seed sweep on local Ray vs the same runs one after another.

    python benchmarks/bench_sweep.py [--seeds 4] [--preset demo]

Times ``python -m sdcore sweep --preset P --grid seed=0,...`` (1 CPU per trial, so as many trials at
once as the machine has cores; Ray's start-up included) against ``python -m sdcore train`` once per
seed in sequence (each using every core), as a user would run them. A trial is an ordinary run: the
script checks that ``train`` with the trial's one thread gives seed 0's trial the same test accuracies
bit for bit. (With a different thread count they differ: CPU convolutions then sum in another order,
and noisy-label training amplifies the last bits.) Prints a Markdown section for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sdcore(*args: str, threads: int | None = None) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sdcore", *args], check=True, capture_output=True, cwd=ROOT, env=env)
    return time.perf_counter() - t0


def accuracies(runs: Path) -> dict[int, list[float]]:
    out = {}
    for run in runs.iterdir():
        if run.name.startswith("."):
            continue
        seed = json.loads((run / "config.json").read_text())["seed"]
        out[seed] = [r["test_acc"] for r in json.loads((run / "summary.json").read_text())["rounds"]]
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--preset", default="demo")
    args = p.parse_args()
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory() as tmp:
        seq, swept = Path(tmp) / "sequential", Path(tmp) / "sweep"
        t_seq = sum(sdcore("train", "--preset", args.preset, "--set", f"seed={s}", "--quiet", "--runs-dir", str(seq))
                    for s in seeds)
        t_sweep = sdcore("sweep", "--preset", args.preset, "--grid", f"seed={','.join(map(str, seeds))}",
                         "--cpus-per-trial", "1", "--runs-dir", str(swept))
        one = Path(tmp) / "one-thread"
        sdcore("train", "--preset", args.preset, "--set", "seed=0", "--quiet", "--runs-dir", str(one), threads=1)
        a, b = accuracies(one), accuracies(swept)
    same = a[0] == b[0]
    print(f"### Sweeps on local Ray ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)\n")
    print(f"`python benchmarks/bench_sweep.py --seeds {args.seeds} --preset {args.preset}`\n")
    print("| | wall time (s) |\n|---|---|")
    print(f"| {args.seeds} × `train --preset {args.preset}`, one after another | {t_seq:.1f} |")
    print(f"| `sweep --grid seed=…` on local Ray, 1 CPU per trial | {t_sweep:.1f} |")
    print(f"\nsweep / sequential: **{t_sweep / t_seq:.2f}×**. Seed 0's trial vs `train` with 1 thread, test "
          f"accuracy by round: {'identical' if same else 'DIFFERENT: ' + json.dumps({'train': a[0], 'trial': b[0]})} "
          f"({' / '.join(f'{x:.2f}' for x in b[0])}).")


if __name__ == "__main__":
    main()
