"""Your own pretrained teacher: round 0 of a KD run loaded from a state-dict file instead of trained.

    model.teacher_weights = "teacher.pt"    # torch.save(model.state_dict(), "teacher.pt") of the same model.arch

The file is read with ``torch.load(weights_only=True)`` (a pickle that would run code is refused), must be
a dict of tensors (a checkpoint dict holding one under "state_dict" or "model" is unwrapped), and must fit
the model the config builds: every tensor present, none extra, each of the same shape, else one line
naming the file and the first misfit. For a model with BYOT exits, the weights of the model alone load
into it and its exit heads keep their initialisation.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from sdcore import files
from sdcore.config import ConfigError

_WRAPPERS = ("state_dict", "model", "model_state_dict", "net")  # keys a training script's checkpoint uses


def _fail(path: str, problem: str) -> ConfigError:
    return ConfigError(f"model.teacher_weights {path}: {problem}", field="model.teacher_weights")


def read(path: str) -> dict[str, Tensor]:
    """The state dict in ``path`` (CPU tensors)."""
    try:
        sd = files.load_torch(Path(path).expanduser(), map_location="cpu")
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except files.FileProblem as e:
        raise _fail(path, str(e)) from None
    except OSError as e:
        raise _fail(path, e.strerror or str(e)) from None
    if isinstance(sd, dict):
        for key in _WRAPPERS:
            if isinstance(sd.get(key), dict) and all(isinstance(v, Tensor) for v in sd[key].values()):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) and isinstance(v, Tensor)
                                                     for k, v in sd.items()):
        raise _fail(path, "does not hold a state dict (torch.save(model.state_dict(), path) writes one)")
    return {k.removeprefix("module."): v for k, v in sd.items()}  # DataParallel's prefix


def _misfit(model: nn.Module, sd: dict[str, Tensor]) -> str:
    from sdcore.runs import misfit  # noqa: PLC0415 - a cycle: runs imports the models

    return misfit({k: tuple(v.shape) for k, v in model.state_dict().items()},
                  {k: tuple(v.shape) for k, v in sd.items()})


def target(model: nn.Module, sd: dict[str, Tensor], path: str) -> nn.Module:
    """The module ``sd`` loads into: ``model``, or the model inside its exits wrapper (``external.Tapped``)
    when the file holds the model alone. ConfigError naming the first misfit otherwise."""
    problem = _misfit(model, sd)
    if not problem:
        return model
    inner = getattr(model, "net", None)
    if isinstance(inner, nn.Module) and not _misfit(inner, sd):
        return inner
    raise _fail(path, f"its weights do not fit the config's model ({problem})")


def load_into(model: nn.Module, path: str) -> nn.Module:
    """``model`` with the teacher's weights from ``path`` (on the model's device)."""
    sd = read(path)
    with torch.no_grad():
        target(model, sd, path).load_state_dict(sd)
    return model
