"""Cost of seed paper 003's terms: an epoch with PS-KD + BYOT + DMFL over a plain epoch, in one run.

    python benchmarks/bench_terms.py [--trials 5]

Plain = the backbone alone on the labels (method "ce", no exits); all terms = the same backbone with its
BYOT exits trained on seed paper 003's loss (demo-pskd-byot-dmfl's settings: PS-KD soft targets on every
exit, BYOT as luanyunteng's code, DMFL). Two shapes: the demo CNN on 8x8 digits and ResNet-18 on synthetic
CIFAR-shaped 3x32x32 images with 100 classes (seed 003's network; it measured 32.1 s vs 25.3 s per epoch,
1.27x; its baseline's exits were attached, ours are not). A third row splits the demo CNN's cost: the
same network with its exits trained by BYOT alone. Medians of alternating trials (bench_core.alternate),
so load drift hits both sides alike.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch
import torch.nn.functional as F
from bench_core import alternate, cifar_shaped, engine_epoch, session

from sdcore.methods.kd_rounds import label_loss
from sdcore.methods.single import loss_fn
from sdcore.models import create


def all_terms(s, model):
    memory = F.one_hot(s.data.train.y, s.data.num_classes).float()  # PS-KD's per-example memory
    return engine_epoch(s, loss_fn(s.cfg, memory=memory, weight=[0.4]), model)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=5)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plain = session(tmp, method="ce", rounds=0)
        terms = session(tmp, method="pskd+byot+dmfl", rounds=0, alpha=0.9, temperature=3.0, hint_weight=1e-6,
                        byot_style="luan", pskd_alpha=0.2, **{"model.exits": True})
        t_plain, t_all = alternate(engine_epoch(plain, label_loss, plain.new_model(0)),
                                   all_terms(terms, terms.new_model(0)), 3 * args.trials)
        rows.append(("demo CNN, 3 exits, 8x8 digits, batch 64", t_all / t_plain, "≤ 1.3",
                     f"{len(plain.data.train) / t_plain:.0f} img/s plain"))
        exits = session(tmp, method="byot", rounds=0, alpha=0.9, temperature=3.0, hint_weight=1e-6,
                        byot_style="luan", **{"model.exits": True})
        t_plain2, t_exits = alternate(engine_epoch(plain, label_loss, plain.new_model(0)),
                                      engine_epoch(exits, loss_fn(exits.cfg), exits.new_model(0)), 3 * args.trials)
        rows.append(("  of which the exits alone (BYOT, same network and style)", t_exits / t_plain2, "–",
                     "what PS-KD and DMFL add is the rest"))

        src = cifar_shaped()
        for s in (plain, terms):
            s.cfg = s.cfg.replace(**{"optim.batch_size": 32})
            s.data.train = src
            s.data.num_classes = 100

        def r18(exits: bool):
            model = create("resnet18", num_classes=100, exits=exits)
            return all_terms(terms, model) if exits else engine_epoch(plain, label_loss, model)
        t_plain, t_all = alternate(r18(False), r18(True), args.trials)
        rows.append(("ResNet-18, 4 exits, 3x32x32, 100 classes, batch 32", t_all / t_plain, "≤ 1.27 (seed 003's own)",
                     f"{len(src) / t_plain:.0f} img/s plain"))

    print(f"### PS-KD + BYOT + DMFL epoch / plain epoch ({time.strftime('%Y-%m-%d')}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, "
          "CPU)\n")
    print(f"`python benchmarks/bench_terms.py --trials {args.trials}`; medians of alternating trials.\n")
    print("| shape | all terms / plain | goal | note |\n|---|---|---|---|")
    for name, ratio, goal, note in rows:
        print(f"| {name} | {ratio:.3f}× | {goal} | {note} |")


if __name__ == "__main__":
    main()
