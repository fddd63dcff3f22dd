"""Seed paper 003's Table 1 grid on the demo's data: every combination of PS-KD, BYOT and DMFL.

    python benchmarks/demo_terms.py [--seeds 0,1,2]

Trains the eight `demo-<row>` presets (config.SEED003_ROWS) per seed in a temporary runs folder and
prints a Markdown table, one row per combination: the deepest exit's test accuracy, the shallow exits'
and the exits' ensemble where the network has exits, the calibration metrics of the deepest output
on the test split with PS-KD's conventions (top-5 error, NLL, ECE, AURC; sdcore.analysis.calibration) —
mean ± std over the seeds, plus how many seeds beat the baseline. Time per epoch is left out: runs in a
row on a laptop see different load; benchmarks/bench_terms.py measures the terms' cost as a ratio.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from sdcore.analysis.calibration import run_calibration
from sdcore.config import SEED003_ROWS, preset
from sdcore.training import train


def _cell(v: list[float], digits: int = 2) -> str:
    return f"{statistics.fmean(v):.{digits}f} ± {statistics.stdev(v) if len(v) > 1 else 0:.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    cols = ("acc", "exits", "ensemble", "top5", "nll", "ece", "aurc")
    table = {row: {c: [] for c in cols} for row in SEED003_ROWS}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for row in SEED003_ROWS:
                run, _ = train(preset(f"demo-{row}").replace(seed=seed), runs_dir=tmp)
                r = run.summary().rounds[0]
                deepest = [m for m in run_calibration(run) if not m.ensemble][-1].report
                t = table[row]
                t["acc"].append(r.test_acc)
                if r.exit_accs:
                    t["exits"].append(list(r.exit_accs[:-1]))
                    t["ensemble"].append(r.ensemble_acc)
                t["top5"].append(deepest.top5_err)
                t["nll"].append(deepest.nll)
                t["ece"].append(100 * deepest.ece)
                t["aurc"].append(1000 * deepest.aurc)
    print(f"### Seed paper 003's grid on the demo ({time.strftime('%Y-%m-%d')})\n")
    print(f"`python benchmarks/demo_terms.py --seeds {args.seeds}` ({time.perf_counter() - t0:.0f} s, "
          f"{torch.get_num_threads()} torch threads); digits with 30% label noise, the demo's CNN, 30 epochs, "
          "each run's best-validation epoch; calibration of the deepest output on the test split, PS-KD's "
          "conventions. Exits: the two shallow exits' test accuracy (mean over seeds).\n")
    print("| row | method | test acc % | seeds above baseline | shallow exits % | ensemble % | top-5 err % | NLL "
          "| ECE % | AURC ×10³ |\n|---|---|---|---|---|---|---|---|---|---|")
    base = table["baseline"]["acc"]
    for row, t in table.items():
        above = "–" if row == "baseline" else f"{sum(a > b for a, b in zip(t['acc'], base))}/{len(base)}"
        exits = ", ".join(f"{statistics.fmean(e[i] for e in t['exits']):.1f}" for i in range(len(t["exits"][0]))) \
            if t["exits"] else "–"
        ens = _cell(t["ensemble"]) if t["ensemble"] else "–"
        method = preset(f"demo-{row}").method
        print(f"| {row} | `{method}` | {_cell(t['acc'])} ({', '.join(f'{x:.2f}' for x in t['acc'])}) | {above} | "
              f"{exits} | {ens} | {_cell(t['top5'])} | {_cell(t['nll'], 3)} | {_cell(t['ece'])} | {_cell(t['aurc'])} |")


if __name__ == "__main__":
    main()
