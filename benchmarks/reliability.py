"""Fault injection: kill or cancel training at random moments, recover, resume; count what is lost.

    python benchmarks/reliability.py [--kills 20] [--cancels 20] [--seed 0]

Each trial trains the same tiny KD config (teacher + 2 students on digits). A *kill* trial runs
`python -m sdcore train` in a subprocess and SIGKILLs it after a random delay; a *cancel* trial
cancels a JobManager job at a random step. Then a fresh JobManager recovers the folder and
resumes it to the end. A run counts as lost if it cannot be resumed, if any file in it fails to
parse, or if its final metrics differ from an uninterrupted reference run. Prints a Markdown
section for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sdcore.config import preset
from sdcore.files import unreadable
from sdcore.jobs import JobManager
from sdcore.training import train

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"epochs": 4, "rounds": 2, "data.subset": 400, "model.width": 0.5, "name": "fault"}


def comparable(run):
    return ([{k: v for k, v in m.items() if k != "epoch_time"} for m in run.metrics()], run.summary().rounds)


def kill_trial(runs: Path, delay: float) -> Path | None:
    args = [sys.executable, "-m", "sdcore", "train", "--quiet", "--runs-dir", str(runs)]
    for k, v in SETTINGS.items():
        args += ["--set", f"{k}={v}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        proc.wait(timeout=delay)  # finished before the kill: nothing to recover, still a valid trial
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    found = sorted(runs.glob("*/config.json"))
    return found[-1].parent if found else None


def cancel_trial(runs: Path, at_step: int) -> Path:
    manager = JobManager(runs)
    seen = {"n": 0}
    reached = threading.Event()

    def on_event(e):
        seen["n"] += e.kind == "step"
        if seen["n"] == at_step:
            reached.set()
    handle = manager.submit(preset("demo").replace(**SETTINGS), on_event=on_event)
    reached.wait(120)
    handle.cancel()
    handle.wait(120)
    manager.shutdown()
    return handle.run.path


def recover_and_resume(runs: Path, folder: Path) -> tuple[bool, str]:
    """(was the run cut short, its status after recovery and resume)."""
    manager = JobManager(runs)
    try:
        if manager.store.get(folder.name).status() == "done":
            return False, "done"
        handle = manager.resume(folder.name)
        handle.wait(300)
        return True, handle.progress().status
    finally:
        manager.shutdown()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--cancels", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        reference, _ = train(preset("demo").replace(**SETTINGS), runs_dir=Path(tmp) / "reference")
        want = comparable(reference)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sdcore", "train", "--quiet", "--runs-dir", str(Path(tmp) / "timing"),
                        *sum([["--set", f"{k}={v}"] for k, v in SETTINGS.items()], [])],
                       cwd=ROOT, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        full = time.perf_counter() - t0
        results = {"kill": [0, 0, 0, 0], "cancel": [0, 0, 0, 0]}  # tried, cut short mid-run, damaged, lost
        for i in range(args.kills + args.cancels):
            kind = "kill" if i < args.kills else "cancel"
            runs = Path(tmp) / f"trial{i}"
            folder = kill_trial(runs, rng.uniform(0.5, full)) if kind == "kill" else \
                cancel_trial(runs, rng.randint(1, 60))
            results[kind][0] += 1
            if folder is None:  # killed before the run folder existed: nothing was there to lose
                continue
            results[kind][2] += bool(unreadable(folder))
            cut, status = recover_and_resume(runs, folder)
            results[kind][1] += cut
            final = JobManager(runs).store.get(folder.name)
            results[kind][3] += status != "done" or bool(unreadable(folder)) or comparable(final) != want
    print(f"### Fault injection ({time.strftime('%Y-%m-%d')})\n")
    print(f"`python benchmarks/reliability.py --kills {args.kills} --cancels {args.cancels} --seed {args.seed}`: "
          f"tiny KD run (teacher + 2 students, {SETTINGS['epochs']} epochs each, {full:.1f} s uninterrupted); "
          "each trial interrupted at a random moment, then recovered by a fresh JobManager and resumed.\n")
    print("| fault | trials | cut short mid-run | runs with a damaged file | runs lost (not resumable, or final "
          "metrics ≠ uninterrupted run) |")
    print("|---|---|---|---|---|")
    names = {"kill": "SIGKILL of `python -m sdcore train` at a random time",
             "cancel": "cancel at a random training step"}
    for kind, (tried, cut, damaged, lost) in results.items():
        print(f"| {names[kind]} | {tried} | {cut} | {damaged} | {lost} |")
    print("\nTrials not cut short were killed before the run folder existed (during start-up) or after "
          "the run finished.")


if __name__ == "__main__":
    main()
