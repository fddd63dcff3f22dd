"""Deep mutual learning on the demo's data: do two peers trained together beat one network trained alone?

    python benchmarks/demo_dml.py [--seeds 0,1,2]

Trains `demo-dml` (two CNNs, mutual KL) and the same CNN alone (`demo` with rounds=0, i.e. the
demo's teacher) per seed, in a temporary runs folder; prints a Markdown table of test accuracy.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from sdcore.config import preset
from sdcore.training import train


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {"trained alone": [], "DML peer 1": [], "DML peer 2": [], "DML ensemble of peers": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            alone, _ = train(preset("demo").replace(rounds=0, seed=seed), runs_dir=tmp)
            dml, _ = train(preset("demo-dml").replace(seed=seed), runs_dir=tmp)
            r = dml.summary().rounds[0]
            rows["trained alone"].append(alone.summary().rounds[0].test_acc)
            rows["DML peer 1"].append(r.peer_accs[0])
            rows["DML peer 2"].append(r.peer_accs[1])
            rows["DML ensemble of peers"].append(r.ensemble_acc)
    print(f"### Deep mutual learning on the demo ({time.strftime('%Y-%m-%d')})\n")
    print(f"`python benchmarks/demo_dml.py --seeds {args.seeds}` ({time.perf_counter() - t0:.0f} s); "
          "test accuracy (%), "
          "each round's best-validation epoch.\n")
    print("| model | mean ± std | per seed | seeds above 'trained alone' |\n|---|---|---|---|")
    base = rows["trained alone"]
    for name, v in rows.items():
        above = "–" if name == "trained alone" else f"{sum(a > b for a, b in zip(v, base))}/{len(v)}"
        print(f"| {name} | {statistics.fmean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f} | "
              f"{', '.join(f'{x:.2f}' for x in v)} | {above} |")


if __name__ == "__main__":
    main()
