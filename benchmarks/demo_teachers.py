"""Pham et al. Fig. 3 on the demo: does a student distilled from an ensemble of N teachers improve with N?

    python benchmarks/demo_teachers.py [--teachers 1,3,5] [--seeds 0,1,2]

Trains the `demo` preset with one student (rounds=1) and model.teachers = N per seed, in a temporary
runs folder; prints a Markdown table of the ensemble teacher's and the student's test accuracy.
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
    p.add_argument("--teachers", default="1,3,5")
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args()
    counts = [int(s) for s in args.teachers.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            teacher, student = [], []
            for seed in seeds:
                run, _ = train(preset("demo").replace(rounds=1, seed=seed, **{"model.teachers": n}), runs_dir=tmp)
                r = run.summary().rounds
                teacher.append(r[0].test_acc)
                student.append(r[1].test_acc)
            rows.append((n, teacher, student))
    cell = lambda v: f"{statistics.fmean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}"  # noqa: E731
    print(f"### Ensemble as teacher on the demo ({time.strftime('%Y-%m-%d')})\n")
    print(f"`python benchmarks/demo_teachers.py --teachers {args.teachers} --seeds {args.seeds}` "
          f"({time.perf_counter() - t0:.0f} s); test accuracy (%), best-validation epochs.\n")
    print("| teachers N | ensemble teacher | student 1 | student above its teacher |\n|---|---|---|---|")
    for n, teacher, student in rows:
        print(f"| {n} | {cell(teacher)} | {cell(student)} | "
              f"{sum(s > t for s, t in zip(student, teacher))}/{len(seeds)} |")


if __name__ == "__main__":
    main()
