"""Training recipes: one module per recipe (kd_rounds, single, dml), each a ``run(session, on_round)`` over
sdcore.engine. The entry points that run a config end to end live in sdcore.training."""
from __future__ import annotations

import importlib
from typing import Callable

from sdcore import terms
from sdcore.config import RunConfig


def recipe(cfg: RunConfig) -> Callable:
    """The training recipe of the config's method: sdcore.methods.<terms.recipe(cfg)>.run."""
    return importlib.import_module(f"sdcore.methods.{terms.recipe(cfg)}").run
