"""Your own model in sdlab: ``model.arch`` as a builder in a file or package, a timm model or a torchvision one.

    model.arch = "my_nets.py:build"         # a file: build(num_classes=..., in_channels=...) -> nn.Module
    model.arch = "mypkg.nets:build"         # a module on the Python path, same call
    model.arch = "timm:resnet18"            # timm.create_model(name, num_classes=, in_chans=) (optional extra)
    model.arch = "torchvision:resnet18"     # torchvision.models.get_model(name, num_classes=, weights=None)

A user file is imported only when a model is built from it (training, or loading a round for an analysis),
never when runs are listed or configs validated. Every model is checked on a probe batch of the data's
shape, so a builder that returns something else than a module, or logits of another shape, fails with one
line naming the builder and the problem (``ConfigError`` on ``model.arch``) before anything trains.

BYOT / DMFL exits (``model.exits``) on such a model: ``Tapped`` taps the outputs of named submodules with
forward hooks and puts sdlab's shallow exit head (``exits.Exit``) on each; the deepest exit is the model's
own classifier, and its BYOT feature is the input of its last ``nn.Linear`` with ``num_classes`` outputs
(the pooled feature; timm's ``forward_head(pre_logits=True)``). The nodes are ``model.exit_nodes`` (submodule
names as ``model.named_modules()`` prints them, which are also torchvision's ``get_graph_node_names`` for
module outputs), else chosen automatically: timm's ``feature_info`` stage outputs (what ``features_only``
returns), otherwise the last module before each drop in spatial size, as found on the probe batch; at
most ``AUTO_EXITS`` of them, the deepest, the last stage excluded (its exit is the classifier).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from sdcore.config import ConfigError
from sdcore.models.exits import Exit, ExitOutputs

AUTO_EXITS = 3  # shallow exits chosen automatically: BYOT's ResNets have 3 besides the deepest
PROBE_BATCH = 2  # a probe batch of 2: BatchNorm in train mode needs more than one value per channel


def _fail(arch: str, problem: str) -> ConfigError:
    return ConfigError(f"model.arch {arch}: {problem}", field="model.arch")


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


# ---------------------------------------------------------------- finding the builder

def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


@functools.lru_cache(maxsize=64)
def _file_module(path: str, stamp: tuple[int, int, int]) -> Any:
    """The module a .py file defines, executed once per version of the file (``stamp``: inode, size, mtime)."""
    name = "sdlab_user_" + hashlib.sha1(f"{path}:{stamp}".encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _builder(arch: str) -> Callable[..., Any]:
    where, _, fn = arch.rpartition(":")
    if _is_file(where):
        path = os.path.abspath(os.path.expanduser(where))
        try:
            st = os.stat(path)
        except OSError:
            raise _fail(arch, f"no file {where} (relative paths are from {os.getcwd()})") from None
        if not os.path.isfile(path):
            raise _fail(arch, f"{where} is not a file")
        try:
            module = _file_module(path, (st.st_ino, st.st_size, st.st_mtime_ns))
        except SyntaxError as e:
            raise _fail(arch, f"syntax error in {where} line {e.lineno}: {e.msg}") from None
        except Exception as e:  # its top level raised: the person's code, reported as one line
            raise _fail(arch, f"importing {where} raised {_first_line(e)}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as e:
            raise _fail(arch, f"no module {e.name} on the Python path") from None
        except SyntaxError as e:
            raise _fail(arch, f"syntax error in {e.filename} line {e.lineno}: {e.msg}") from None
        except Exception as e:
            raise _fail(arch, f"importing {where} raised {_first_line(e)}") from None
    builder = getattr(module, fn, None)
    if not callable(builder):
        raise _fail(arch, f"{where} has no function {fn}")
    return builder


def _timm(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    try:
        import timm  # noqa: PLC0415 - optional extra; it takes a second to import
    except ImportError:
        raise _fail(arch, "needs timm: pip install -r requirements-extras.txt") from None
    name = arch.split(":", 1)[1]
    if not timm.is_model(name):
        raise _fail(arch, f"timm has no model {name} (timm.list_models() lists them)")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)


def _torchvision(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    import torchvision.models  # noqa: PLC0415 - torchvision takes seconds to import; only these models need it

    name = arch.split(":", 1)[1]
    if name not in torchvision.models.list_models():
        raise _fail(arch, f"torchvision has no model {name} (torchvision.models.list_models() lists them)")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _adapt_first_conv(model, in_channels)
    return model


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """torchvision's models take 3 channels: their first convolution is rebuilt for ``in_channels``
    (same kernel, stride and padding; freshly initialised)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            new = nn.Conv2d(in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                            m.groups, m.bias is not None, m.padding_mode)
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(parent, name.rpartition(".")[2], new)
            return


def _raw(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    if arch.startswith("timm:"):
        return _timm(arch, num_classes, in_channels)
    if arch.startswith("torchvision:"):
        return _torchvision(arch, num_classes, in_channels)
    builder = _builder(arch)
    try:
        model = builder(num_classes=num_classes, in_channels=in_channels)
    except Exception as e:
        raise _fail(arch, f"calling it with num_classes={num_classes}, in_channels={in_channels} raised "
                          f"{_first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise _fail(arch, f"returned an object of type {type(model).__name__}, not a torch.nn.Module")
    return model


# ---------------------------------------------------------------- the probe batch

class _Recorder:
    """Forward hooks on every submodule: the output shape and identity of each, in the order they finish."""

    def __init__(self, model: nn.Module):
        self.events: list[tuple[str, tuple[int, ...], int]] = []  # (name, shape, id of the output tensor)
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in model.named_modules() if n]

    def _hook(self, name: str):
        def hook(module, args, out):
            if isinstance(out, Tensor):
                self.events.append((name, tuple(out.shape), id(out)))
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _probe(arch: str, model: nn.Module, x: Tensor, num_classes: int, record: bool = False):
    """Run ``x`` through ``model`` in eval mode without gradients (no BatchNorm statistics change); check it
    gives logits [B, num_classes]. Returns the recorded submodule outputs when ``record``."""
    recorder = _Recorder(model) if record else None
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as e:
        raise _fail(arch, f"fails on a probe batch of shape {list(x.shape)}: {_first_line(e)}") from None
    finally:
        model.train(was_training)
        if recorder is not None:
            recorder.close()
    if not isinstance(out, Tensor):
        raise _fail(arch, f"its forward returns a {type(out).__name__}, not a tensor of logits")
    if tuple(out.shape) != (x.shape[0], num_classes):
        raise _fail(arch, f"gives output of shape {list(out.shape)} on a probe batch of shape {list(x.shape)}; "
                          f"expected [{x.shape[0]}, {num_classes}] (one logit per class)")
    return recorder.events if recorder is not None else None


def _auto_nodes(events: list[tuple[str, tuple[int, ...], int]]) -> list[str]:
    """The last module before each drop in spatial size: a stage boundary. Modules that finish with the same
    output tensor (a block and its final ReLU) count once, under the outermost (shortest) name."""
    groups: list[tuple[str, tuple[int, ...]]] = []
    last_id = None
    for name, shape, ident in events:
        if len(shape) != 4:
            continue
        if ident == last_id and groups and groups[-1][1] == shape:
            if name.count(".") <= groups[-1][0].count("."):
                groups[-1] = (name, shape)
        else:
            groups.append((name, shape))
        last_id = ident
    if len(groups) > 1 and groups[-1][1][-2:] == (1, 1) and groups[-2][1][-2:] != (1, 1):
        groups = groups[:-1]  # the global pool before the classifier: the stage it pools is the last one
    return [name for (name, shape), (_, nxt) in zip(groups, groups[1:]) if nxt[-2] < shape[-2]]


# ---------------------------------------------------------------- exits on any model

def _classifier(model: nn.Module, num_classes: int) -> tuple[str, nn.Linear] | None:
    """The model's last ``nn.Linear`` with ``num_classes`` outputs (its classifier), by registration order."""
    found = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.out_features == num_classes:
            found = (name, m)
    return found


class Tapped(nn.Module):
    """Any classifier with BYOT shallow exits on named submodules' outputs (``SectionNet``'s exit surface).

    ``forward(x)`` is the wrapped model's; ``forward_exits(x)`` runs it once with hooks on the tapped
    modules and its classifier, and returns every exit's logits and feature, shallow first, the deepest
    being the model's own logits and the input of its classifier."""

    def __init__(self, *, net: nn.Module, nodes: list[str], channels: list[int], steps: list[int],
                 classifier: str, feature_dim: int, num_classes: int):
        super().__init__()
        self.net = net
        self.nodes = list(nodes)
        self.classifier_name = classifier
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.exit_heads = nn.ModuleList(Exit(c, feature_dim, num_classes, steps=s) for c, s in zip(channels, steps))
        self.num_exits = len(self.exit_heads) + 1
        self.hint_adapters: nn.ModuleList | None = None
        for m in self.exit_heads.modules():  # sdlab's exit init (base.init_weights), not the model's
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def add_hint_adapters(self) -> None:
        """BYOT's learned hint adapters, one Linear(D, D) per shallow exit (``SectionNet.add_hint_adapters``)."""
        d = self.feature_dim
        self.hint_adapters = nn.ModuleList(nn.Linear(d, d) for _ in self.exit_heads)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _tapped(self, x: Tensor, upto: int | None = None) -> tuple[list[Tensor], Tensor | None, Tensor]:
        taps: dict[str, Tensor] = {}
        feature: list[Tensor] = []

        def keep(name):
            def hook(module, args, out):
                taps[name] = out
            return hook

        handles = [self.net.get_submodule(n).register_forward_hook(keep(n)) for n in self.nodes[:upto]]
        handles.append(self.net.get_submodule(self.classifier_name).register_forward_pre_hook(
            lambda module, args: feature.append(args[0])))
        try:
            logits = self.net(x)
        finally:
            for h in handles:
                h.remove()
        return [taps[n] for n in self.nodes[:upto]], (feature[-1] if feature else None), logits

    def forward_exits(self, x: Tensor) -> ExitOutputs:
        maps, feature, logits = self._tapped(x)
        outs = [head(m) for head, m in zip(self.exit_heads, maps)]
        return ExitOutputs([o[0] for o in outs] + [logits], [o[1] for o in outs] + [feature.flatten(1)])

    def forward_exit(self, x: Tensor, i: int) -> Tensor:
        """Logits of exit i. The whole model runs (hooks cannot stop it early), so a shallow exit of a
        user model is not cheaper than the deepest: the latency analysis says so."""
        if not 0 <= i < self.num_exits:
            raise IndexError(f"exit index must be in [0, {self.num_exits - 1}], got {i}")
        if i == self.num_exits - 1:
            return self.forward(x)
        maps, _, _ = self._tapped(x, upto=i + 1)
        return self.exit_heads[i](maps[i])[0]


def _with_exits(arch: str, net: nn.Module, x: Tensor, num_classes: int, nodes: tuple[str, ...]) -> Tapped:
    found = _classifier(net, num_classes)
    if found is None:
        raise _fail(arch, f"exits need a final nn.Linear classifier with {num_classes} outputs (its input is "
                          "the deepest exit's feature); this model has none")
    classifier, linear = found
    events = _probe(arch, net, x, num_classes, record=True)
    shapes = {name: shape for name, shape, _ in events}  # a module called twice: its last output
    modules = dict(net.named_modules())
    if nodes:
        for n in nodes:
            if n not in modules or not n:
                raise _fail(arch, f"model.exit_nodes names {n!r}, which is not a submodule of the model "
                                  "(print(model) or model.named_modules() lists them)")
            if n not in shapes or len(shapes[n]) != 4:
                got = list(shapes[n]) if n in shapes else "no tensor"
                raise _fail(arch, f"exit node {n} outputs {got} on the probe batch; an exit needs a feature map "
                                  "[B, C, H, W]")
        chosen = list(nodes)
    else:
        info = getattr(net, "feature_info", None)  # timm: the stage outputs features_only would return
        if isinstance(info, list) and info and all(isinstance(d, dict) and "module" in d for d in info):
            chosen = [d["module"] for d in info][:-1]  # the last stage's exit is the classifier
            chosen = [n for n in chosen if n in shapes and len(shapes[n]) == 4]
        else:
            chosen = _auto_nodes(events)
        chosen = chosen[-AUTO_EXITS:]
        if not chosen:
            raise _fail(arch, "found no stage boundary to put exits on (no feature map shrinks on the probe "
                              "batch); list the nodes in model.exit_nodes")
    order = {name: i for i, (name, _, _) in enumerate(events)}
    chosen.sort(key=lambda n: order[n])  # shallow first, as the exits are everywhere in sdlab
    deepest = [s for _, s, _ in events if len(s) == 4]
    final_h = deepest[-1][-2] if deepest else 1
    steps = [max(0, round(math.log2(max(shapes[n][-2], 1) / max(final_h, 1)))) for n in chosen]
    return Tapped(net=net, nodes=chosen, channels=[shapes[n][1] for n in chosen], steps=steps,
                  classifier=classifier, feature_dim=linear.in_features, num_classes=num_classes)


def build(arch: str, *, num_classes: int, in_channels: int, image_size: int, exits: bool = False,
          exit_nodes: tuple[str, ...] = (), input_size: tuple[int, int] | None = None) -> nn.Module:
    """The model ``arch`` names (see the module docstring), checked on a probe batch [2, in_channels, H, W]
    (``input_size`` = (H, W), else image_size x image_size); with ``exits``, wrapped in ``Tapped``. Raises
    ConfigError with one line."""
    net = _raw(arch, num_classes, in_channels)
    x = torch.zeros(PROBE_BATCH, in_channels, *(input_size or (image_size, image_size)))
    with torch.random.fork_rng(devices=[]):  # a model with dropout or noise: the probe draws nothing of ours
        if not exits:
            _probe(arch, net, x, num_classes)
            return net
        return _with_exits(arch, net, x, num_classes, exit_nodes)


def describe(arch: str) -> str:
    """What a person reads for ``arch`` in tables: the file's name, not its whole path."""
    where, _, fn = arch.rpartition(":")
    return f"{Path(where).name}:{fn}" if _is_file(where) else arch
