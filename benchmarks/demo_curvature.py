"""Do the demo's students sit in flatter minima than their teacher? λ_max and trace over seeds.

    python benchmarks/demo_curvature.py [--preset demo] [--seeds 0,1,2] [--subset 512] [--set select=last]

Trains the preset once per seed (temporary runs folder), then runs the Hessian analysis
(sdcore.analysis.runner.analyze: top eigenvalue by Lanczos, the app's deflated Hutchinson trace) on
every round's kept model, on the same fixed 512-example training subset. Prints mean ± std per round,
how many seeds have each student below its teacher (Pham et al. Sec. 5: students flatter), how many
have it above the teacher's test accuracy, how many have all three on the same seed (the kept models
are the same for accuracy and curvature), and the mean training seconds per run (the `train` call
alone; absolute seconds depend on the machine's load).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from sdcore.analysis.runner import AnalysisSpec, analyze
from sdcore.config import apply_overrides, preset
from sdcore.training import train


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="demo")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--subset", type=int, default=512)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    lam: list[list[float]] = []
    tr: list[list[float]] = []
    acc: list[list[float]] = []
    secs: list[float] = []
    t0 = time.perf_counter()
    sets = "".join(f" --set {o}" for o in args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            cfg = apply_overrides(preset(args.preset), args.overrides + [f"seed={seed}"]).validate()
            t_train = time.perf_counter()
            run, _ = train(cfg, runs_dir=tmp)
            secs.append(time.perf_counter() - t_train)
            rounds = tuple(range(cfg.rounds + 1))
            res = analyze(run, AnalysisSpec(rounds=rounds, top_k=1, density=False, subset=args.subset,
                                                device="cpu"))
            lam.append([res[("eigen", r)].values[0] for r in rounds])
            tr.append([res[("trace", r)].trace for r in rounds])
            acc.append([run.summary().rounds[r].test_acc for r in rounds])
    names = ["teacher (round 0)"] + [f"student {k}" for k in range(1, len(lam[0]))]
    cell = lambda xs: f"{statistics.mean(xs):.3g} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.2g}"
    print(f"### Curvature of the `{args.preset}{sets}` rounds ({time.strftime('%Y-%m-%d')})\n")
    print(f"`python benchmarks/demo_curvature.py --preset {args.preset} --seeds {args.seeds}{sets}` "
          f"({time.perf_counter() - t0:.0f} s); Hessian of the mean cross-entropy on a fixed "
          f"{args.subset}-example training subset, BatchNorm in eval mode.\n")
    print("| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    print("| test accuracy % (mean ± std) | " + " | ".join(cell(c) for c in zip(*acc)) + " |")
    for label, table in (("λ_max (mean ± std)", lam), ("trace (mean ± std)", tr)):
        cols = list(zip(*table))
        print(f"| {label} | " + " | ".join(cell(c) for c in cols) + " |")
        below = [sum(s < t for s, t in zip(c, cols[0])) for c in cols[1:]]
        print(f"| seeds with {label.split()[0]} below the teacher's | – | "
              + " | ".join(f"{b}/{len(seeds)}" for b in below) + " |")
    n_rounds = len(acc[0])
    beats = [sum(a[k] > a[0] for a in acc) for k in range(1, n_rounds)]
    print("| seeds where the student beats the teacher's test accuracy | – | "
          + " | ".join(f"{b}/{len(seeds)}" for b in beats) + " |")
    all3 = [sum(a[k] > a[0] and l[k] < l[0] and t[k] < t[0] for a, l, t in zip(acc, lam, tr))
            for k in range(1, n_rounds)]
    print("| all three on the same seed (accuracy higher, λ_max and trace lower) | – | "
          + " | ".join(f"{b}/{len(seeds)}" for b in all3) + " |")
    print(f"\ntraining: {statistics.mean(secs):.1f} s per run (mean over {len(secs)} runs of "
          f"{n_rounds} rounds: " + ", ".join(f"{x:.1f}" for x in secs) + " s)")
    for seed, a_row, l_row, t_row in zip(seeds, acc, lam, tr):
        print(f"\nseed {seed}: test accuracy " + ", ".join(f"{v:.2f}" for v in a_row)
              + "; λ_max " + ", ".join(f"{v:.4g}" for v in l_row)
              + "; trace " + ", ".join(f"{v:.4g}" for v in t_row))


if __name__ == "__main__":
    main()
