"""Fault injection on run folders: every damage of tests/faults.py on every surface, every hostile command line
of tests/hostile.py, and the SIGKILL figures; prints a Markdown section for BENCHMARKS.md.

    python benchmarks/fault_injection.py [--only TEXT] [--no-pages] [--no-hostile] [--kills N] [--seed 0]

Damages: tests/faults.py corrupts one file of a tiny run folder (a finished 2-round KD run, or an interrupted
one with checkpoint.pt) in one way: deleted, empty, truncated, not UTF-8, nested 100000 deep, the wrong JSON
type, fields of the wrong type, a folder, a symlink out of the folder or to nothing, a FIFO, 2 GiB sparse,
another architecture's weights, a malicious pickle... Each surface then meets it on its own copy, in a runs
folder that also holds an intact run: `runs`, `analyze`, `resume`, `train` of a new run beside it, and the
Runs, Live and Compare pages (Streamlit AppTest). Handled cleanly: the exit code the damage calls for (0, or
2 with exactly one `error:` line), no traceback, no wait on a FIFO, the intact run still listed, the damaged
one listed as `unreadable: <file>: <reason>` (or readable where the damage is harmless), no page exception,
nothing done outside the run folder (the pickle's command, a write through a symlink).

Bad inputs: each command line of tests/hostile.py refused with exit 2, one `error:` line, nothing on stdout,
nothing written. Kills: the SIGKILL row of BENCHMARKS.md (benchmarks/reliability.py), or `--kills N` fresh
trials with reliability.py's own machinery.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `python -m sdcore` does, before torch loads
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from tests import faults  # noqa: E402

CLI = {  # surface -> (argv for a case, its checker)
    "`runs`": (lambda c: ["runs", "--runs-dir", str(c.runs)], faults.check_listing),
    "`analyze`": (faults.analyze_argv, faults.check_analyze),
    "`resume`": (faults.resume_argv, faults.check_resume),
    "`train` beside it": (faults.train_argv, faults.check_train),
}
PAGE_SURFACES = {"runs": "Runs page", "live": "Live page", "compare": "Compare page"}


def run_damages(bases, damages, tmp: Path, pages: bool) -> dict[str, dict[str, list[str]]]:
    """{damage name: {surface: problems}}; each surface on a fresh copy."""
    results = {}
    for i, d in enumerate(damages):
        t0 = time.perf_counter()
        found: dict[str, list[str]] = {}
        for n, (surface, (argv, check)) in enumerate(CLI.items()):
            try:
                case = faults.stage(bases, d, tmp / f"d{i}-{n}")
                found[surface] = check(case, faults.cli(argv(case), watch=case.dir))
            except Exception as e:  # noqa: BLE001 - the harness itself tripped: count it, say so
                found[surface] = [f"harness error: {type(e).__name__}: {faults._first(str(e))}"]
        if pages:
            try:
                case = faults.stage(bases, d, tmp / f"d{i}-pages")
                for page, problems in faults.check_pages(case).items():
                    found[PAGE_SURFACES[page]] = problems
            except Exception as e:  # noqa: BLE001
                for page in PAGE_SURFACES.values():
                    found.setdefault(page, [f"harness error: {type(e).__name__}: {faults._first(str(e))}"])
        results[d.name] = found
        bad = sum(bool(p) for p in found.values())
        print(f"[{i + 1}/{len(damages)}] {d.name}: {len(found) - bad}/{len(found)} clean "
              f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    return results


def run_hostile(tmp: Path) -> tuple[int, list[tuple[str, str]]] | None:
    """(inputs, [(what, symptom)] of those not refused cleanly), or None without tests/hostile.py."""
    try:
        import hostile  # tests/hostile.py
    except ImportError:
        return None
    tmp.mkdir()
    hostile.prepare(tmp)
    failures = []
    cwd = os.getcwd()
    os.chdir(tmp)  # a default ./runs lands here, and shows as a write
    try:
        for what, argv in hostile.BAD_INPUTS:
            before = hostile.tree(tmp)
            o = faults.cli(hostile.fill(argv, tmp), watch=tmp)
            lines = [l for l in o.err.splitlines() if l.strip()]
            problems = faults._hard(o)
            if o.code != 2:
                problems.append(f"exit {o.code}: {faults._first(' | '.join(lines) or o.out)}")
            elif len(lines) != 1 or not lines[0].startswith("error: "):
                problems.append(f"{len(lines)} stderr lines: {faults._first(' | '.join(lines))}")
            if o.code == 2 and o.out:
                problems.append(f"printed on stdout: {faults._first(o.out)}")
            if hostile.tree(tmp) != before:
                problems.append("wrote files")
            if problems:
                failures.append((what, "; ".join(problems)))
    finally:
        os.chdir(cwd)
    return len(hostile.BAD_INPUTS), failures


def kills_from_benchmarks() -> tuple[str, str] | None:
    """(survived/trials, where from) from BENCHMARKS.md's SIGKILL row of reliability.py."""
    text = (ROOT / "BENCHMARKS.md").read_text()
    row = re.search(r"^\| SIGKILL[^|]*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", text, re.M)
    if row is None:
        return None
    trials, cut, _damaged, lost = map(int, row.groups())
    return f"{trials - lost} / {trials} ({cut} cut short mid-run)", "BENCHMARKS.md, `benchmarks/reliability.py`"


def rerun_kills(n: int, seed: int, tmp: Path) -> tuple[str, str]:
    """``n`` SIGKILL trials with reliability.py's machinery: killed at a random time, recovered, resumed, and
    compared with an uninterrupted run."""
    import random
    import subprocess

    import reliability

    from sdcore.config import preset
    from sdcore.jobs import JobManager
    from sdcore.training import train

    rng = random.Random(seed)
    reference, _ = train(preset("demo").replace(**reliability.SETTINGS), runs_dir=tmp / "reference")
    want = reliability.comparable(reference)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sdcore", "train", "--quiet", "--runs-dir", str(tmp / "timing"),
                    *sum([["--set", f"{k}={v}"] for k, v in reliability.SETTINGS.items()], [])],
                   cwd=ROOT, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    full = time.perf_counter() - t0
    survived = cut = 0
    for i in range(n):
        runs = tmp / f"kill{i}"
        folder = reliability.kill_trial(runs, rng.uniform(0.5, full))
        if folder is None:  # killed before the folder existed: nothing to lose
            survived += 1
            continue
        was_cut, status = reliability.recover_and_resume(runs, folder)
        cut += was_cut
        final = JobManager(runs).store.get(folder.name)
        survived += status == "done" and reliability.intact(folder) and reliability.comparable(final) == want
    return f"{survived} / {n} ({cut} cut short mid-run)", f"rerun now: `--kills {n} --seed {seed}`"


def report(damages, results, hostile, kills, pages: bool, seconds: float, argv: list[str]) -> str:
    surfaces = list(CLI) + (list(PAGE_SURFACES.values()) if pages else [])
    out = [f"### Damaged run folders ({time.strftime('%Y-%m-%d')})", ""]
    out.append(f"`python benchmarks/fault_injection.py{' ' + ' '.join(argv) if argv else ''}` "
               f"({seconds / 60:.1f} min): "
               f"{len(damages)} damages of tests/faults.py, each applied to a copy of a tiny run beside an intact "
               "run and met by every surface on its own copy; the hostile command lines of tests/hostile.py; "
               "the SIGKILL trials of benchmarks/reliability.py. *Cleanly*: the expected exit code (0, or 2 with "
               "exactly one `error:` line), no traceback, no wait on a FIFO, the intact run still listed, the "
               "damaged one listed as `unreadable: <file>: <reason>` (or readable where harmless), no page "
               "exception, nothing done outside the run folder.")
    out += ["", "| surface | handled cleanly |", "|---|---|"]
    for s in surfaces:
        ok = sum(not results[d.name].get(s) for d in damages if s in results[d.name])
        out.append(f"| {s} | {ok} / {len(damages)} |")
    handled = sum(all(not p for p in results[d.name].values()) for d in damages)
    out.append(f"| **damage kinds handled** (clean on every surface) | **{handled} / {len(damages)}** |")
    if hostile is not None:
        total, failures = hostile
        out.append(f"| **bad inputs refused cleanly** (tests/hostile.py) | **{total - len(failures)} / {total}** |")
    else:
        out.append("| bad inputs refused cleanly | (not run: --no-hostile, or no tests/hostile.py) |")
    if kills is not None:
        out.append(f"| **kills survived** (SIGKILL of `train` at a random time; {kills[1]}) | **{kills[0]}** |")
    by_file: dict[str, list[bool]] = {}
    for d in damages:
        by_file.setdefault(d.file, []).append(all(not p for p in results[d.name].values()))
    out += ["", "| file | damages handled on every surface |", "|---|---|"]
    out += [f"| `{f}` | {sum(v)} / {len(v)} |" for f, v in by_file.items()]
    failures = [(d.name, s, p) for d in damages for s, ps in results[d.name].items() for p in ps]
    if failures or (hostile and hostile[1]):
        out += ["", "Not handled cleanly (damage · surface: symptom):", ""]
        out += [f"- `{name}` · {s}: {p}" for name, s, p in failures]
        out += [f"- bad input `{what}`: {p}" for what, p in (hostile[1] if hostile else [])]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--only", help="only the damages whose name contains this text")
    p.add_argument("--no-pages", action="store_true", help="skip the dashboard pages (the slowest surface)")
    p.add_argument("--no-hostile", action="store_true", help="skip tests/hostile.py's command lines")
    p.add_argument("--kills", type=int, default=0, help="rerun this many SIGKILL trials (default: read "
                   "BENCHMARKS.md's figures)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    args = p.parse_args()
    import logging

    import torch
    torch.set_num_threads(1)  # tiny nets: as the tests run them
    logging.getLogger("streamlit").setLevel(logging.ERROR)  # AppTest's "missing ScriptRunContext" chatter
    damages = [d for d in faults.DAMAGES if args.only is None or args.only in d.name]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("training the base runs", file=sys.stderr, flush=True)
        bases = faults.build_bases(tmp / "bases", curvature=not args.no_pages)
        results = run_damages(bases, damages, tmp / "cases", pages=not args.no_pages)
        hostile = None if args.no_hostile else run_hostile(tmp / "hostile")
        kills = rerun_kills(args.kills, args.seed, tmp / "kills") if args.kills else kills_from_benchmarks()
    print(report(damages, results, hostile, kills, not args.no_pages, time.perf_counter() - t0, sys.argv[1:]))


if __name__ == "__main__":
    main()
