"""Progressive self-knowledge distillation (PS-KD, Kim et al.; seed paper 003 Sec. 3).

The model's own softmax on each training example in the previous epoch is kept in a per-example
memory [N_train, C] on the device (one-hot before the first epoch, as in the authors' code) and
mixed into the target: (1 - a_t) * onehot(y) + a_t * p_prev, with a_t growing linearly to 1 - alpha.
"""
from __future__ import annotations

import torch.nn.functional as F

from sdcore.engine import RoundResult, Session
from sdcore.losses import pskd_prev_weight, pskd_targets, soft_cross_entropy


def run(s: Session, on_round) -> list[RoundResult]:
    cfg, train = s.cfg, s.data.train
    memory = F.one_hot(train.y, s.data.num_classes).float()  # [N_train, C]
    weight = [0.0]  # a_t of the current epoch, set before each epoch

    def on_epoch_start(epoch: int) -> None:
        weight[0] = pskd_prev_weight(epoch, cfg.epochs, cfg.alpha)

    def loss(model, x, y, idx):
        z = model(x)
        targets = pskd_targets(y, memory[idx], prev_weight=weight[0])
        memory[idx] = z.detach().softmax(1)  # read above, before this epoch's update: p from the previous epoch
        return soft_cross_entropy(z, targets), z

    results = [s.fit(s.new_model(0), loss, round_idx=0, on_epoch_start=on_epoch_start,
                     state={"memory": memory})]
    on_round(results)
    return results
