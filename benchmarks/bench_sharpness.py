"""Sharpness during training (RunConfig.track_sharpness): what it costs per epoch, and how well it tracks.

    python benchmarks/bench_sharpness.py [--trials 5] [--epochs 6] [--threads 1] [--track-epochs 30]

1. Cost: the demo preset's CNN and data, one round of ``--epochs`` epochs through Session.fit (training,
   the sharpness estimate, validation + test evaluation, checkpoint: a whole epoch as a run sees it),
   without tracking and with sharpness_steps 3, 5 and 10, alternated trial by trial so that drift in
   machine load hits every side alike. An epoch's time is the gap between two of fit's epoch events
   (epoch 1 left out: it pays the one-off costs). Ratios = median epoch with tracking / median without.
2. Tracking: the demo-last preset (select=last, so each round's saved model is its last epoch) trained with
   tracking on (5 steps); per round the last epoch's logged value against the runner's eigen (the
   Hessian page's top-20 Lanczos, tol 1e-3) on the tracker's own 256 examples and on the page's 512, and
   against 5 cold (random-start) Lanczos steps on the same model.
3. Analysis units: seconds per Hessian-vector product and per loss evaluation of the runner on the demo
   teacher (512 examples), the ratio analysis progress weighs stages by before anything is timed.
One torch thread by default: on a 2-core machine shared with other processes a second intra-op thread
spin-waits (the test suite's reason for one_thread) and made single epochs vary widely (BENCHMARKS.md,
"Threads on a busy laptop"). Prints a Markdown section for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch

from sdcore.analysis import hessian
from sdcore.analysis.runner import AnalysisSpec, analyze
from sdcore.config import preset
from sdcore.data import load
from sdcore.engine import Session
from sdcore.methods.kd_rounds import label_loss
from sdcore.models import model_for_round
from sdcore.runs import RunStore
from sdcore.training import train

STEPS = (3, 5, 10)


def epoch_times(tmp: str, data, epochs: int, steps: int | None) -> list[float]:
    """Seconds of epochs 2..epochs of one teacher round (steps None: tracking off)."""
    cfg = preset("demo").replace(rounds=0, epochs=epochs, track_sharpness=steps is not None,
                                 sharpness_steps=steps or 5).validate()
    stamps: list[float] = []
    s = Session(cfg=cfg, data=data, device=torch.device("cpu"), run=RunStore(tmp).create(cfg),
                emit=lambda e: stamps.append(time.perf_counter()) if e.kind == "epoch" else None)
    s.fit(s.new_model(0), label_loss, round_idx=0)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def cost(trials: int, epochs: int) -> dict[int | None, float]:
    """Median epoch seconds per setting (None = off), settings alternated within each trial, order rotated."""
    data = load(preset("demo").data, seed=0)
    sides: list[int | None] = [None, *STEPS]
    times: dict[int | None, list[float]] = {k: [] for k in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for k in sides:  # warm-up
            epoch_times(tmp, data, 2, k)
        for t in range(trials):
            for k in sides[t % len(sides):] + sides[:t % len(sides)]:
                times[k] += epoch_times(tmp, data, epochs, k)
    return {k: statistics.median(v) for k, v in times.items()}


def tracking(epochs: int) -> tuple[list[tuple[int, float, float, float, float]], tuple[float, float]]:
    """Per round: (round, tracked at the last epoch, eigen on the tracker's 256, eigen on 512, 5 cold steps);
    and the runner's units."""
    cfg = preset("demo-last").replace(track_sharpness=True, sharpness_steps=5, epochs=epochs).validate()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = train(cfg, runs_dir=tmp)[0]
        rounds = tuple(run.finished_rounds())
        spec = dict(rounds=rounds, trace_samples=2, density=False, device="cpu")
        on_256 = analyze(run, AnalysisSpec(subset=cfg.sharpness_subset, seed=cfg.seed, **spec))
        on_512 = analyze(run, AnalysisSpec(**spec))
        data = load(cfg.data, seed=cfg.seed)
        batches = hessian.training_batches(data.train, cfg.sharpness_subset,
                                           generator=torch.Generator().manual_seed(cfg.seed))
        for r in rounds:
            model = model_for_round(cfg, r, num_classes=data.num_classes, in_channels=data.in_channels,
                                    image_size=data.image_size)
            model.load_state_dict(run.load_state_dict(r))
            cold = hessian.top_eigenvalue_warm(model, batches, None, 5, torch.Generator().manual_seed(1)).value
            tracked = [m["sharpness"] for m in run.metrics() if m["round"] == r][-1]
            rows.append((r, tracked, on_256[("eigen", r)].values[0], on_512[("eigen", r)].values[0], cold))
        units = _units(run)
    return rows, units


def _units(run) -> tuple[float, float]:
    """(seconds per HVP, seconds per loss evaluation) of the runner on round 0, 512 examples."""
    got = analyze(run, AnalysisSpec(rounds=(0,), hessian=True, density=True, landscape="2d", device="cpu"))
    hvp = statistics.median(got[(k, 0)].seconds / got[(k, 0)].hvps for k in ("eigen", "trace", "density"))
    return hvp, got[("surface", 0)].seconds / got[("surface", 0)].points


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--track-epochs", type=int, default=preset("demo-last").epochs)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    med = cost(args.trials, args.epochs)
    rows, (hvp, point) = tracking(args.track_epochs)
    print(f"### Measured {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, CPU\n")
    print(f"`python benchmarks/bench_sharpness.py --trials {args.trials} --epochs {args.epochs} --threads "
          f"{args.threads} --track-epochs {args.track_epochs}`: demo CNN, digits, sharpness_subset 256; medians "
          f"over {args.trials} alternated trials x {args.epochs - 1} epochs.\n")
    print("| sharpness_steps | epoch with tracking / without | seconds per epoch |\n|---|---|---|")
    print(f"| off | 1 | {med[None]:.3f} s |")
    for k in STEPS:
        print(f"| {k} | {med[k] / med[None]:.3f}× | {med[k]:.3f} s |")
    print(f"\nTracking: demo-last, {args.track_epochs} epochs per round, sharpness_steps 5.\n")
    print("| round | tracked λ_max, last epoch (5 warm steps) | runner eigen, same 256 examples | rel. error | "
          "runner eigen, 512 examples (Hessian page) | 5 cold steps, same 256 |\n|---|---|---|---|---|---|")
    for r, tracked, e256, e512, cold in rows:
        print(f"| {r} | {tracked:.4f} | {e256:.4f} | {(tracked - e256) / e256:+.1e} | {e512:.4f} | {cold:.4f} "
              f"({(cold - e256) / e256:+.1e}) |")
    print(f"\nRunner units on the demo teacher, 512 examples: {1e3 * hvp:.1f} ms per HVP, {1e3 * point:.1f} ms per "
          f"loss evaluation: one HVP = {hvp / point:.1f} loss evaluations.")


if __name__ == "__main__":
    main()
