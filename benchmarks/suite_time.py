"""Wall time of the README's test command, idle and beside two busy processes, in one run; prints a Markdown
table for BENCHMARKS.md.

    python benchmarks/suite_time.py [--busy 2] [-- PYTEST ARGS]

Each measurement is `.venv/bin/python -m pytest -q -p no:cacheprovider` from the repository root (the
README's command, without pytest's cache so that no run reorders the next), after removing torch.compile's
on-disk cache (a fresh machine has none). "Busy" starts N `yes > /dev/null` processes first, as a laptop
running something else would, and stops them after. Reports the wall seconds, pytest's own summary line, and
busy / idle.
"""
from __future__ import annotations

import argparse
import glob
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def suite(args: list[str]) -> tuple[float, str, int]:
    for cache in glob.glob(os.path.join(tempfile.gettempdir(), "torchinductor_*")):
        shutil.rmtree(cache, ignore_errors=True)
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                       capture_output=True, text=True)
    seconds = time.monotonic() - start
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    return seconds, (lines[-1].strip("= ") if lines else p.stderr.strip()[-200:]), p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, default=2, help="busy processes beside the second measurement")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    a = ap.parse_args()
    rows = []
    idle = suite(a.pytest_args)
    rows.append(("idle", *idle))
    hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(a.busy)]
    try:
        busy = suite(a.pytest_args)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    rows.append((f"beside {a.busy} busy processes (`yes > /dev/null`)", *busy))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"`python benchmarks/suite_time.py` ({time.strftime('%Y-%m-%d')}, commit {commit}, "
          f"{os.cpu_count()} CPUs, {platform.machine()}):\n")
    print("| machine | wall time | pytest's summary | exit code |")
    print("|---|---|---|---|")
    for name, seconds, summary, code in rows:
        print(f"| {name} | {seconds / 60:.1f} min ({seconds:.0f} s) | {summary} | {code} |")
    print(f"\nbusy / idle: {busy[0] / idle[0]:.2f}x")
    return 0 if idle[2] == busy[2] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
