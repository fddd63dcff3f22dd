"""What several test files share that is not a fixture: the CLI run in this process, a sweep trained without Ray."""
from __future__ import annotations

import contextlib
import io
from typing import Sequence

from sdcore import cli
from sdcore import sweep as sw
from sdcore.runs import RunStore
from sdcore.training import execute, prepare


def in_process(*args: str) -> tuple[int, str, str]:
    """``python -m sdcore ARGS`` in this process: ``cli.main``'s exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def trained_sweep(store: RunStore, base, grid: Sequence[str], trials: Sequence[int]) -> sw.Sweep:
    """A sweep of ``base`` over ``grid`` whose ``trials`` are trained here, in order, without Ray; the rest pending."""
    spec = sw.SweepSpec.build(base, list(grid))
    sweep = sw.create_sweep(store, spec)
    for i in trials:
        run = prepare(spec.trial_config(i), store, status_fields={"sweep": sweep.id, "trial": i})
        lock = run.lock()
        try:
            execute(run)
        finally:
            lock.release()
    return sweep
