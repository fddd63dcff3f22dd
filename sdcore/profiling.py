"""``train --profile``: a torch.profiler trace of a few training steps of every round.

Profile before optimizing: the trace shows where a step's time goes (which operators, the
optimizer, the loss, host syncs, and on a GPU the kernels and the gaps between them).

    <run>/profile/round<k>.trace.json   Chrome trace: open in https://ui.perfetto.dev or chrome://tracing
    <run>/profile/round<k>.ops.txt      the operators, by self time (device time on a GPU)

The profiler is an event sink: it runs in the training thread (step events are emitted there), starts
after ``skip`` steps of the round's first epoch (past the first steps' one-off costs: allocator warm-up,
cuDNN autotuning, torch.compile) and stops after ``active`` more, so the trace holds steady-state steps.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from sdcore.engine import Event


class StepProfiler:
    def __init__(self, out_dir: Path, *, skip: int = 3, active: int = 10):
        if skip < 0 or active < 1:
            raise ValueError(f"profile skip >= 0 and active >= 1, got {skip}, {active}")
        self.out_dir, self.skip, self.active = Path(out_dir), skip, active
        self._prof: profile | None = None
        self._round: int | None = None
        self._start = self._last = 0  # steps done in the epoch when it started, and at the latest event
        self._done: set[int] = set()
        self.written: list[tuple[int, int, Path]] = []  # (round, steps profiled, ops table)

    def __call__(self, e: Event) -> None:
        if self._prof is not None:
            if e.kind == "step" and e.round == self._round:
                self._last = e.step
            if e.kind != "step" or e.round != self._round or e.step >= self._start + self.active:
                self._finish()  # enough steps, or the epoch ended first
        if e.kind == "step" and self._prof is None and e.round not in self._done and \
                e.step >= min(self.skip, e.steps - 1):
            self._begin(e)

    def _begin(self, e: Event) -> None:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self._prof = profile(activities=activities, record_shapes=True)
        self._prof.__enter__()
        self._round, self._start = e.round, e.step
        self._last = e.step
        self._done.add(e.round)

    def _finish(self) -> None:
        prof, self._prof = self._prof, None
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        prof.__exit__(None, None, None)
        steps = self._last - self._start
        self.out_dir.mkdir(parents=True, exist_ok=True)
        trace = self.out_dir / f"round{self._round}.trace.json"
        prof.export_chrome_trace(str(trace))
        sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=40)
        ops = self.out_dir / f"round{self._round}.ops.txt"
        ops.write_text(f"{steps} training steps of round {self._round}'s first epoch, after {self.skip} "
                       f"warm-up steps; sorted by {sort}\n\n{table}\n")
        self.written.append((self._round, steps, ops))

    def close(self) -> None:
        """Write a trace still open (the run ended or stopped inside the profiled steps)."""
        if self._prof is not None:
            self._finish()
