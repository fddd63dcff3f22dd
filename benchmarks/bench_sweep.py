"""A seed sweep on local Ray vs the same runs one after another; or how many trials one GPU packs.

    python benchmarks/bench_sweep.py [--seeds 4] [--preset demo]
    python benchmarks/bench_sweep.py --gpu-pack 1,2,4,8 [--preset demo] [--set epochs=5 ...]

Times ``python -m sdcore sweep --preset P --grid seed=0,...`` (1 CPU per trial, so as many trials at
once as the machine has cores; Ray's start-up included) against ``python -m sdcore train`` once per
seed in sequence (each using every core), as a user would run them. A trial is an ordinary run: the
script checks that ``train`` with the trial's one thread gives seed 0's trial the same test accuracies
bit for bit. (With a different thread count they differ: CPU convolutions then sum in another order,
and noisy-label training amplifies the last bits.) Prints a Markdown section for BENCHMARKS.md.

``--gpu-pack K1,K2,…``: for each k, k trials (seeds 0..k-1 of the preset) started together on the one GPU,
what ``sweep --gpus-per-trial 1/k`` runs there: Ray's fractional GPU is bookkeeping (it admits k tasks per
GPU and sets CUDA_VISIBLE_DEVICES; it caps neither memory nor compute), so each trial here is a process
calling ``sdcore.sweep.run_trial`` with 1 thread, as a Ray worker with 1 CPU does, without Ray itself
(which a lent GPU machine may lack: its wheel is over the device tool's 64 MiB transfer limit). Per k: the
batch's wall time (process start-up included, as a fresh Ray worker pays it), trials/hour, the median time
inside a trial, torch's peak allocated memory per trial (read in the trial: exact, without the ~0.5 GiB
CUDA context) and the GPU's peak memory.used from ``nvidia-smi`` sampled every 250 ms, above its level
before the batch, divided by k (contexts included).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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


def pack_trial(runs_dir: str, index: int, config: str) -> None:
    """One packed trial (a child process): what a Ray worker runs, then its own figures as one JSON line."""
    import torch

    from sdcore.engine import describe_device, resolve_device
    from sdcore.sweep import run_trial

    cfg = json.loads(config)
    t0 = time.perf_counter()
    out = run_trial(runs_dir, "gpu-pack", index, cfg, None, 1)
    seconds = time.perf_counter() - t0
    device = resolve_device(cfg.get("device", "auto"))
    gpu = device.type == "cuda"
    mib = lambda b: round(b / 2**20, 1)
    print(json.dumps({**out, "seconds": seconds, "device": describe_device(device),
                      "peak_allocated_mib": mib(torch.cuda.max_memory_allocated(device)) if gpu else None,
                      "peak_reserved_mib": mib(torch.cuda.max_memory_reserved(device)) if gpu else None}))


class GpuMemory:
    """Peak ``nvidia-smi`` memory.used (MiB) of the first visible GPU while a batch runs, sampled every 250 ms
    by one ``nvidia-smi -lms`` process; ``None`` without nvidia-smi or when it reports nothing."""

    def __init__(self):
        gpu = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
        self.cmd = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", gpu]
        self.proc: subprocess.Popen | None = None
        self.peak: float | None = None

    def now(self) -> float | None:
        if not shutil.which("nvidia-smi"):
            return None
        try:
            return float(subprocess.run(self.cmd, capture_output=True, text=True, timeout=10).stdout.split()[0])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    def __enter__(self) -> "GpuMemory":
        self.peak = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(self.cmd + ["-lms", "250"], stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True)
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.peak = max(self.peak or 0.0, float(line))
            except ValueError:
                pass

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
            self.reader.join(timeout=5)
            self.proc = None


def gpu_pack(ks: list[int], preset_name: str, overrides: list[str]) -> None:
    import torch

    from sdcore.config import apply_overrides, preset

    base = apply_overrides(preset(preset_name), overrides).validate()
    mem = GpuMemory()
    name = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True).stdout.strip().splitlines() if shutil.which(
                              "nvidia-smi") else []
    sets = "".join(f" --set {o}" for o in overrides)
    print(f"### Trials packed on one GPU (issue 18; {time.strftime('%Y-%m-%d')}, "
          f"{name[0] if name else 'no nvidia-smi: no GPU seen'}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, {os.cpu_count()} CPUs)\n")
    print(f"`python benchmarks/bench_sweep.py --gpu-pack {','.join(map(str, ks))} --preset {preset_name}{sets}`: "
          f"k trials of `{preset_name}` (seeds 0..k-1; {base.rounds + 1} round(s) of {base.epochs} epochs) started "
          "together, each a process running `sdcore.sweep.run_trial` with 1 thread — what `sweep --gpus-per-trial "
          "1/k` runs on the GPU, without Ray's scheduler (see the script's docstring). Wall time includes each "
          "process's start-up (Python, torch, CUDA context).\n")
    print("| trials at once (k) | GPU share each | done | batch wall (s) | trials/hour | median time in a trial (s) "
          "| torch peak allocated per trial (MiB) | nvidia-smi peak above idle / k (MiB) | ran on |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    rates = {}
    for k in ks:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "1"}  # Ray gives a 1-CPU task OMP_NUM_THREADS=1
        with tempfile.TemporaryDirectory() as tmp:
            idle = mem.now()
            logs = [(open(Path(tmp) / f"{i}.out", "w+"), open(Path(tmp) / f"{i}.err", "w+")) for i in range(k)]
            with mem:
                t0 = time.perf_counter()
                procs = [subprocess.Popen([sys.executable, __file__, "--pack-trial", str(Path(tmp) / "runs"), str(i),
                                           json.dumps(base.replace(seed=i).to_dict())],
                                          stdout=out, stderr=err, cwd=ROOT, env=env) for i, (out, err) in
                         enumerate(logs)]
                codes = [proc.wait() for proc in procs]
                wall = time.perf_counter() - t0
            results, errors = [], []
            for i, ((out, err), code) in enumerate(zip(logs, codes)):
                out.seek(0)
                err.seek(0)
                lines = out.read().strip().splitlines()
                try:
                    r = json.loads(lines[-1]) if code == 0 and lines else None
                except ValueError:  # the child's last line was not its figures
                    r = None
                if r is not None and r["status"] == "done":
                    results.append(r)
                else:
                    why = r["error"] if r else (err.read().strip().splitlines() or [f"exit {code}"])[-1]
                    errors.append(f"trial {i} (k={k}): {why}")
                out.close()
                err.close()
        peak = mem.peak
        rates[k] = len(results) / wall * 3600
        fmt = lambda v: "n/a" if v is None else f"{v:,.0f}"
        alloc = max((r["peak_allocated_mib"] for r in results if r["peak_allocated_mib"] is not None), default=None)
        smi = None if peak is None or idle is None else (peak - idle) / k
        devices = sorted({r["device"] for r in results}) or ["–"]
        inside = statistics.median(r["seconds"] for r in results) if results else float("nan")
        print(f"| {k} | 1/{k} | {len(results)}/{k} | {wall:.1f} | {rates[k]:.0f} | {inside:.1f} | {fmt(alloc)} "
              f"| {fmt(smi)} | {'; '.join(devices)} |", flush=True)
        for e in errors:
            print(f"\n- FAILED {e}", flush=True)
    best = max(rates, key=rates.get)
    one = rates.get(1)
    gain = f", {rates[best] / one:.2f}× one at a time" if one else ""
    print(f"\nMost trials/hour: k={best} at once ({rates[best]:.0f}/h{gain}).")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--preset", default="demo")
    p.add_argument("--gpu-pack", metavar="K1,K2,...",
                   help="trials at once to measure on one GPU, e.g. 1,2,4,8 (instead of the sweep vs sequential)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the preset for --gpu-pack's trials (repeatable), e.g. epochs=5")
    p.add_argument("--pack-trial", nargs=3, help=argparse.SUPPRESS)  # a --gpu-pack child: RUNS_DIR INDEX CONFIG
    args = p.parse_args()
    if args.pack_trial:
        runs_dir, index, config = args.pack_trial
        return pack_trial(runs_dir, int(index), config)
    if args.gpu_pack:
        try:
            ks = [int(k) for k in args.gpu_pack.split(",")]
            if not ks or min(ks) < 1:
                raise ValueError
        except ValueError:
            p.error(f"--gpu-pack takes trial counts like 1,2,4,8, got {args.gpu_pack!r}")
        from sdcore.config import ConfigError

        try:
            return gpu_pack(ks, args.preset, args.set)
        except ConfigError as e:
            p.error(str(e))
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
