"""Deep mutual learning (Zhang et al. 2018; seed paper 003's DML): K peers trained together from
scratch, each on the labels and on the other peers' current predictions (``losses.dml_loss``).

It is one training "round" of a ``Cohort`` model: peer 1 is the model reported (and analysed by the
curvature, landscape and calibration pages); every peer's test accuracy and their ensemble are in the
metrics (acc_peers, acc_ensemble). With one peer it is plain training on the labels.
"""
from __future__ import annotations

from sdcore.engine import RoundResult, Session
from sdcore.losses import dml_loss
from sdcore.models import is_cohort


def run(s: Session, on_round) -> list[RoundResult]:
    alpha, tau = s.cfg.alpha, s.cfg.temperature

    def loss(model, x, y, idx):
        peers = model.forward_peers(x) if is_cohort(model) else [model(x)]
        return dml_loss(peers, y, alpha=alpha, temperature=tau), peers[0]

    results = s.completed_rounds()
    if not results:
        results = [s.fit(s.new_model(0), loss, round_idx=0)]
        on_round(results)
    return results
