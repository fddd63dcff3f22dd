"""Cost of seed paper 003's terms: an epoch with PS-KD + BYOT + DMFL over a plain epoch, in one run.

    python benchmarks/bench_terms.py [--trials 5] [--device cpu] [--images 128]
    python benchmarks/bench_terms.py --device cuda --images 2048   # the GPU ratio, as benchmarks/gpu_check.sh runs it

Plain = the backbone alone on the labels (method "ce", no exits); all terms = the same backbone with its
BYOT exits trained on seed paper 003's loss (demo-pskd-byot-dmfl's settings: PS-KD soft targets on every
exit, BYOT as luanyunteng's code, DMFL). Two shapes: the demo CNN on 8x8 digits and ResNet-18 on synthetic
CIFAR-shaped 3x32x32 images with 100 classes (seed 003's network; it measured 32.1 s vs 25.3 s per epoch,
1.27x; its baseline's exits were attached, ours are not). A third row splits the demo CNN's cost: the
same network with its exits trained by BYOT alone. Medians of alternating trials (bench_core.alternate),
so load drift hits both sides alike. On a GPU every epoch ends in a host sync (train_epoch reads its
metrics once, after the loop), so wall-clock times are the device's.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch
import torch.nn.functional as F
from bench_core import alternate, cifar_shaped, engine_epoch, session

from sdcore.data import BatchTransform, TensorSource, load
from sdcore.engine import Session, resolve_device
from sdcore.methods.kd_rounds import label_loss
from sdcore.methods.single import loss_fn
from sdcore.models import create


def all_terms(s, model):
    memory = F.one_hot(s.data.train.y, s.data.num_classes).float()  # PS-KD's per-example memory
    return engine_epoch(s, loss_fn(s.cfg, state={"memory": memory}, epoch={"pskd_weight": 0.4}), model)


def on(s: Session, device: torch.device) -> Session:
    """bench_core's CPU session with its data (and so its models) on ``device``."""
    if device.type != "cpu":
        s.device, s.data = device, load(s.cfg.data, seed=0, device=device)
    return s


def to_device(src: TensorSource, device: torch.device) -> TensorSource:
    t = src.transform
    mean, std = tuple(t.mean.flatten().tolist()), tuple(t.std.flatten().tolist())
    return TensorSource(x=src.x.to(device), y=src.y.to(device),
                        transform=BatchTransform(mean=mean, std=std, pad=t.pad, flip=t.flip, device=device))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--images", type=int, default=128, help="synthetic CIFAR-shaped images in the ResNet-18 epoch")
    args = p.parse_args()
    device = resolve_device(args.device)
    what = (f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}" if device.type == "cuda" else
            f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, CPU")
    print(f"### PS-KD + BYOT + DMFL epoch / plain epoch ({time.strftime('%Y-%m-%d')}, {what}, "
          f"torch {torch.__version__})\n")
    print(f"`python benchmarks/bench_terms.py --trials {args.trials} --device {args.device} --images {args.images}`; "
          "medians of alternating trials.\n")
    print("| shape | all terms / plain | goal | note |\n|---|---|---|---|", flush=True)
    row = lambda name, ratio, goal, note: print(f"| {name} | {ratio:.3f}× | {goal} | {note} |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:  # rows print as they are measured: a time limit keeps the first
        plain = on(session(tmp, method="ce", rounds=0), device)
        terms = on(session(tmp, method="pskd+byot+dmfl", rounds=0, alpha=0.9, temperature=3.0, hint_weight=1e-6,
                           byot_style="luan", pskd_alpha=0.2, **{"model.exits": True}), device)
        t_plain, t_all = alternate(engine_epoch(plain, label_loss, plain.new_model(0)),
                                   all_terms(terms, terms.new_model(0)), 3 * args.trials)
        row("demo CNN, 3 exits, 8x8 digits, batch 64", t_all / t_plain, "≤ 1.3",
            f"{len(plain.data.train) / t_plain:.0f} img/s plain")
        exits = on(session(tmp, method="byot", rounds=0, alpha=0.9, temperature=3.0, hint_weight=1e-6,
                           byot_style="luan", **{"model.exits": True}), device)
        t_plain2, t_exits = alternate(engine_epoch(plain, label_loss, plain.new_model(0)),
                                      engine_epoch(exits, loss_fn(exits.cfg), exits.new_model(0)), 3 * args.trials)
        row("  of which the exits alone (BYOT, same network and style)", t_exits / t_plain2, "–",
            "what PS-KD and DMFL add is the rest")

        src = to_device(cifar_shaped(args.images), device)
        for s in (plain, terms):
            s.cfg = s.cfg.replace(**{"optim.batch_size": 32})
            s.data.train = src
            s.data.num_classes = 100

        def r18(exits: bool):
            model = create("resnet18", num_classes=100, exits=exits).to(device)
            return all_terms(terms, model) if exits else engine_epoch(plain, label_loss, model)
        t_plain, t_all = alternate(r18(False), r18(True), args.trials)
        row("ResNet-18, 4 exits, 3x32x32, 100 classes, batch 32", t_all / t_plain, "≤ 1.27 (seed 003's own)",
            f"{len(src) / t_plain:.0f} img/s plain")


if __name__ == "__main__":
    main()
