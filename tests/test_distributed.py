"""The global decision on real gloo process groups (2 and 4 CPU processes) equals one process's.

One spawn per world size; every process runs all the cases and compares its own part of
mask, loss, gradient and logged metrics with the single-process result on the concatenated mini-batch
(each rank builds every rank's batch from the same seed, so it can compute that result).
Any rank that differs raises, and ``torch.multiprocessing.spawn`` then fails the test.
"""

import datetime
import math
import os
import sys
import tempfile
import types

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from m2po_lab.aggregation import AGG_MODES, aggregate
from m2po_lab.distributed import global_batch_info, global_m2po_mask, global_metrics, global_waterfill_threshold
from m2po_lab.losses import LossConfig, batch_state, get_loss, slice_state
from m2po_lab.masking import m2po_mask, trust_region_candidates, waterfill_threshold_tensor

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

LOSS_NAMES = ("m2po", "m2po_released", "m2po_areal", "grpo")
KINDS = ("random", "one_rank_has_all", "no_candidates", "ties_across_ranks", "empty_ranks", "bf16")


def _rank_batch(g, kind, rank, world):
    """One rank's (logp, old_logp, adv, mask, prox_logp); B and T differ per rank."""
    B = int(torch.randint(0, 5, (), generator=g)) if kind != "empty_ranks" or rank % 2 == 0 else 0
    T = int(torch.randint(1, 9, (), generator=g))
    old = -torch.randint(1, 25, (B, T), generator=g).double() / 8  # a binary grid: old + 0.5 is exact
    lr = torch.randn(B, T, generator=g, dtype=torch.float64) * 0.4
    lr = torch.where(torch.rand(B, T, generator=g) < 0.3, torch.full_like(lr, 0.5), lr)  # ties inside a rank
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) > 0.25
    if B:
        mask[0] = False  # a fully masked row
    if kind == "one_rank_has_all":
        adv = adv.abs() if rank == world - 1 else -adv.abs()
        lr = lr.abs() + 0.05  # r > 1 everywhere: candidates only where A > 0
    elif kind == "no_candidates":
        adv, lr = -adv.abs(), lr.abs() + 0.05
    elif kind == "ties_across_ranks":  # exactly equal M2 on every rank, and the cut falls among them
        lr = torch.where(torch.rand(B, T, generator=g) < 0.5, 0.25, 0.125).double()
        adv = adv.abs()
    prox = old + lr * torch.rand(B, T, generator=g, dtype=torch.float64)
    logp = old + lr
    if kind == "bf16":
        logp, old, prox = logp.to(torch.bfloat16), old.to(torch.bfloat16), prox.to(torch.bfloat16)
    return logp, old, adv.to(logp.dtype), mask, prox


def _concat(parts, k):
    """The single-process mini-batch: rows of every rank in rank order, padded to one T."""
    width = max([p[0].shape[1] for p in parts] + [1])
    tensors = []
    for p in parts:
        t = p[k]
        if t.dim() == 2:
            t = torch.nn.functional.pad(t, (0, width - t.shape[1]), value=0)
        tensors.append(t)
    return torch.cat(tensors)


def _loss_and_grad(name, logp, old, adv, mask, cfg, mode, state, prox, **counts):
    logp = logp.detach().clone().requires_grad_(True)
    extra = {"prox_logp": prox} if name == "m2po_areal" else {}
    per_token, _ = get_loss(name)(logp, old, adv, mask, cfg, **state, **extra)
    loss = aggregate(per_token, mask, mode, norm_const=8, **counts)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.detach(), grad


def _check_case(seed, kind, rank, world, group):
    g = torch.Generator().manual_seed(seed)
    parts = [_rank_batch(g, kind, r, world) for r in range(world)]
    logp, old, adv, mask, prox = parts[rank]
    full = [_concat(parts, k) for k in range(5)]
    rows = slice(sum(p[0].shape[0] for p in parts[:rank]), sum(p[0].shape[0] for p in parts[: rank + 1]))
    T = logp.shape[1]
    tau = 0.03 if kind == "ties_across_ranks" else (0.04, 0.01, 1e-3)[seed % 3]  # 0.03: the cut among ties
    region = ("harmful", "all")[seed % 2]
    cfg = LossConfig(tau=tau, region=region)
    # the solvers themselves, both rules
    lr, full_lr = (logp.float() - old.float()), (full[0].float() - full[1].float())
    full_lr = torch.where(full[3], full_lr, torch.zeros_like(full_lr))
    for rule in ("algorithm1", "areal"):
        mine = global_m2po_mask(lr, adv, mask, group, tau, region, rule)
        ref = m2po_mask(full_lr, full[2], full[3], tau, region, rule)
        assert torch.equal(mine.keep, ref.keep[rows, :T]), (seed, kind, rule, rank)
        assert torch.equal(mine.threshold, ref.threshold), (seed, kind, rule, rank)
        assert int(mine.num_candidates) == int(ref.candidates.sum())
    cand = trust_region_candidates(lr, adv, mask, region)
    ref_cand = trust_region_candidates(full_lr, full[2], full[3], region)
    t = global_waterfill_threshold(lr.square(), cand, group, tau)
    assert torch.equal(t, waterfill_threshold_tensor(full_lr.square(), ref_cand, tau)), (seed, kind, rank)
    # every loss: state, loss and gradient (dp_size = world: the ranks' losses average to the global one)
    mode = AGG_MODES[seed % len(AGG_MODES)]
    info = global_batch_info(mask, group, mode)
    for name in LOSS_NAMES:
        extra = {"prox_logp": prox} if name == "m2po_areal" else {}
        state = batch_state(name, logp, old, adv, mask, cfg, group=group, **extra)
        ref_state = batch_state(name, *full[:4], cfg, **({"prox_logp": full[4]} if extra else {}))
        for key, value in state.items():
            expected = ref_state[key] if value.dim() == 0 else ref_state[key][rows, :T]
            assert torch.equal(value, expected), (seed, kind, name, key, rank)
        # the logged metrics: this rank's, merged by the schema's rules == the whole batch's
        metrics = get_loss(name)(logp, old, adv, mask, cfg, **state, **extra)[1]
        ref_metrics = get_loss(name)(*full[:4], cfg, **ref_state, **({"prox_logp": full[4]} if extra else {}))[1]
        merged = global_metrics(metrics, logp - old, mask, group)
        assert set(merged) == set(ref_metrics), (name, set(merged) ^ set(ref_metrics))
        for key, value in merged.items():
            assert value.item() == pytest.approx(ref_metrics[key].double().item(), rel=1e-4, abs=1e-6), (
                seed, kind, name, key, rank)
        loss, grad = _loss_and_grad(name, logp, old, adv, mask, cfg, mode, state, prox, **info)
        ref_loss, ref_grad = _loss_and_grad(name, *full[:4], cfg, mode, ref_state, full[4])
        total = loss.double().clone()
        dist.all_reduce(total, group=group)
        rtol = 1e-9 if logp.dtype == torch.float64 else 8e-3  # bf16 gradients: 2 ulps
        assert total.item() / world == pytest.approx(ref_loss.item(), rel=max(rtol, 1e-6) if rtol > 1e-9 else rtol,
                                                     abs=1e-12), (seed, kind, name, mode)
        torch.testing.assert_close(grad.double() / world, ref_grad[rows, :T].double(), rtol=rtol, atol=1e-12)
        # this rank's micro-batches (any number of them) add up to its share
        if logp.shape[0] > 1:
            micro = [slice(0, 1), slice(1, logp.shape[0])]
            parts_loss = sum(
                _loss_and_grad(name, logp[m], old[m], adv[m], mask[m], cfg, mode, slice_state(state, m),
                               prox[m], **info)[0].item()
                for m in micro
            )
            assert parts_loss == pytest.approx(loss.item(), rel=max(rtol, 1e-6), abs=1e-12), (
                seed, kind, name, mode, parts_loss, loss.item())


def _check_errors(rank, world, group):
    """A bad input on one rank raises on every rank (nobody waits); so does a dtype mismatch."""
    g = torch.Generator().manual_seed(rank)
    logp, old, adv = -torch.rand(2, 3, generator=g), -torch.rand(2, 3, generator=g), torch.randn(2, generator=g)
    mask = torch.ones(2, 3)
    if rank == 1:
        mask = mask.clone()
        mask[0, 0] = 0.5
    for name in ("m2po", "m2po_released", "m2po_areal"):
        with pytest.raises(ValueError, match="mask|rank"):
            batch_state(name, logp, old, adv, mask, group=group)
    with pytest.raises(ValueError, match="mask|rank"):
        global_batch_info(mask, group)
    lr = torch.full((2, 3), 0.5, dtype=torch.float64 if rank == 0 else torch.float32)
    with pytest.raises(ValueError, match="dtype"):
        global_m2po_mask(lr, torch.ones(2), torch.ones(2, 3, dtype=torch.bool), group)


def _worker(rank, world, init_file, n_cases):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        group = dist.group.WORLD
        for seed in range(n_cases):
            _check_case(seed, KINDS[seed % len(KINDS)], rank, world, group)
        _check_errors(rank, world, group)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture
def plain_main(monkeypatch):
    """Spawned children re-run ``__main__`` from its file; Streamlit's AppTest (earlier tests in the
    same session) leaves ``app/Home.py`` there. A bare ``__main__`` makes the children import nothing."""
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))


@pytest.mark.parametrize("world", [2, 4])
def test_global_decision_equals_single_process(world, plain_main):
    n_cases = 36 if world == 2 else 24
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_worker, args=(world, init_file, n_cases), nprocs=world, join=True)


def test_empty_mini_batch_everywhere_has_loss_zero():
    """Not distributed: the edge case the global counts can produce (no valid token on any rank)."""
    for mode in AGG_MODES:
        assert aggregate(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool), mode, num_tokens=0, num_seqs=0
                         if mode != "dr-grpo" else 2).item() == 0.0
    assert math.isinf(m2po_mask(torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3, dtype=torch.bool)).threshold)
