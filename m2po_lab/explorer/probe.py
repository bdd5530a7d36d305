"""Log-ratios of a real toy policy trained on stale data, for the explorer and notebooks."""

from __future__ import annotations

import torch

from ..study.config import get_preset
from ..study.runner import BatchedStudy


def toy_policy_log_ratios(staleness: int, method: str = "no_tr", seed: int = 0, extra_updates: int = 100):
    """Train one run of the default preset and return the log-ratios of its last mini-batch.

    The run trains ``staleness + extra_updates`` updates with ``method`` at ``staleness``,
    so the returned batch is exactly ``staleness`` to ``staleness + 3`` updates old.
    Returns ``(log_ratio (1, N), adv (1, N), mask (1, N))`` over the N = n x L tokens of
    the mini-batch (each token carries its response's advantage), the shapes of
    :func:`m2po_lab.synthetic.synthetic_log_ratios`.
    """
    cfg = get_preset("default", methods=(method,), staleness=(staleness,), seeds=(seed,),
                     updates=staleness + extra_updates, eval_every=10**6, hist_every=10**6, checkpoint_every=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for last, _ in BatchedStudy(cfg).steps():
            pass
        log_ratio = last["_log_ratio"][0]  # (n, L), the last update's mini-batch
        adv = last["_adv"][0][:, None].expand_as(log_ratio)  # (n, L), one advantage per response
    finally:
        torch.set_num_threads(threads)
    n = log_ratio.numel()
    return log_ratio.reshape(1, n), adv.reshape(1, n).clone(), torch.ones(1, n, dtype=torch.bool)
