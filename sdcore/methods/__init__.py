"""Training recipes and the one entry point that runs a config end to end."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Callable

import torch

from sdcore import __version__
from sdcore.config import RunConfig
from sdcore.data import load
from sdcore.engine import Event, RoundResult, Session, resolve_device, round_summary
from sdcore.methods import byot, kd_rounds, pskd
from sdcore.runs import Run, RunStore

RECIPES = {"kd": kd_rounds.run, "byot": byot.run, "pskd": pskd.run}


def train(cfg: RunConfig, *, runs_dir: str | Path | None = None,
          on_event: Callable[[Event], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> tuple[Run, list[RoundResult]]:
    """Validate, load data, create the run folder, train every round; return the run and its rounds.

    Nothing is written when the config or the data is bad (ConfigError / DataError propagate first).
    summary.json is rewritten after every round, so finished rounds survive a later failure.
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    data = load(cfg.data, seed=cfg.seed, device=device)
    run = RunStore(runs_dir).create(cfg)
    session = Session(cfg=cfg, data=data, device=device, run=run,
                      emit=on_event or (lambda e: None), should_stop=should_stop or (lambda: False))

    def on_round(results: list[RoundResult]) -> None:
        run.write_summary({
            "method": cfg.method, "complete": len(results) == session.rounds, "device": str(device),
            "sdcore": __version__, "torch": torch.__version__, "host": platform.node(),
            "noisy_train_labels": int(data.noise_mask.sum()),
            "rounds": [round_summary(r) for r in results],
        })

    return run, RECIPES[cfg.method](session, on_round)
