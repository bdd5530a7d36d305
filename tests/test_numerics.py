"""Numerics that do not depend on the input dtype: bf16/fp16 inputs give the float32 answer.

The review's reproductions are regression tests here; the property tests compare bf16 and
fp16 inputs against a float64 reference on both solver paths (direct and under vmap).
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m2po_lab.aggregation import aggregate
from m2po_lab.losses import LOSSES, LossConfig, get_loss
from m2po_lab.masking import m2po_mask, waterfill_threshold_tensor
from reference import algorithm1_greedy, areal_greedy, waterfill_bisection

ALL = sorted(LOSSES)
LOW = [torch.bfloat16, torch.float16]


def _loss_and_grad(name, logp, old, adv, mask, cfg=None):
    logp = logp.detach().clone().requires_grad_(True)
    per_token, metrics = get_loss(name)(logp, old, adv, mask, cfg)
    loss = aggregate(per_token, mask)
    loss.backward()
    return per_token.detach(), loss.detach(), logp.grad, metrics


# ---------------------------------------------------------------- the review's reproductions
@pytest.mark.parametrize("name", ALL)
def test_fp16_token_mean_over_65504_tokens_is_finite(name):
    """B=40, T=2000, logp = old = -1, A = 1 in fp16: the sum of 80,000 per-token losses overflowed."""
    logp = torch.full((40, 2000), -1.0, dtype=torch.float16)
    adv = torch.ones(40, dtype=torch.float16)
    mask = torch.ones(40, 2000, dtype=torch.bool)
    per_token, loss, grad, metrics = _loss_and_grad(name, logp, logp.clone(), adv, mask)
    assert per_token.dtype == torch.float32 and loss.item() == pytest.approx(-1.0, rel=1e-6)
    assert grad.dtype == torch.float16 and torch.isfinite(grad).all()
    assert all(v.dtype == torch.float32 for v in metrics.values())


@pytest.mark.parametrize("name", ALL)
def test_log_ratio_clamp_with_fp16_inputs(name):
    """``log_ratio_clamp=20``: exp(20) is past fp16's range (inf loss, NaN gradient before).

    10,000 tokens, a few with log-ratios 12 and 25 (clamped to 20): the token-mean loss
    and its fp16 gradient (r A / N <= e^20 / 1e4 < 65,504) must be finite.
    """
    lr = torch.zeros(1, 10_000)
    lr[0, :3], lr[0, 3:6], lr[0, 6:9] = 25.0, 12.0, -25.0
    old = torch.full((1, 10_000), -30.0)
    logp = (old + lr).to(torch.float16)
    adv = torch.where(torch.arange(10_000) % 2 == 0, 1.0, -1.0)[None].to(torch.float16)
    mask = torch.ones(1, 10_000, dtype=torch.bool)
    cfg = LossConfig(log_ratio_clamp=20)
    per_token, loss, grad, _ = _loss_and_grad(name, logp, old.to(torch.float16), adv, mask, cfg)
    assert torch.isfinite(per_token).all() and torch.isfinite(loss)
    assert grad.dtype == torch.float16 and torch.isfinite(grad).all()


def test_bf16_m2_decision_is_the_float32_one():
    """bf16 lr = [0.0908, 0.2676] (as stored: 0.09082, 0.26758), A = 1, tau 0.04: the exact
    candidate mean is 0.03992 <= tau, so nothing is masked (M2 squared in bf16 masked one)."""
    lr = torch.tensor([[0.0908, 0.2676]], dtype=torch.bfloat16)
    exact = math.fsum(v * v for v in lr.double()[0].tolist()) / 2
    assert exact == pytest.approx(0.03992, abs=1e-5) and exact <= 0.04
    mask = torch.ones(1, 2, dtype=torch.bool)
    assert m2po_mask(lr, torch.ones(1), mask, 0.04).keep.all()
    _, _, _, metrics = _loss_and_grad("m2po", lr, torch.zeros_like(lr), torch.ones(1, dtype=torch.bfloat16), mask)
    assert metrics["clip/frac"].item() == 0.0


@pytest.mark.parametrize("lr", [[[0.3, math.inf]], [[0.3, 300.0]]], ids=["inf", "fp16-300"])
def test_infinite_m2_candidate_is_masked_on_both_paths(lr):
    """A candidate whose M2 is +inf (inf itself, or fp16 300 whose square overflows fp16) tied
    with the +inf placeholder of non-candidates on the vmap path: it kept the candidate and
    masked the non-candidate. Non-candidates now sort after every candidate."""
    lr = torch.tensor(lr, dtype=torch.float16 if math.isfinite(lr[0][1]) else torch.float32)
    adv = torch.tensor([[-1.0, 1.0]])  # token 0: A < 0, r > 1 (no candidate); token 1: a candidate
    mask = torch.ones(1, 2, dtype=torch.bool)
    expected = [[True, False]]
    assert m2po_mask(lr, adv, mask).keep.tolist() == expected
    vmapped = torch.func.vmap(lambda l, a: m2po_mask(l, a, mask).keep)(lr[None], adv[None])[0]
    assert vmapped.tolist() == expected
    # AReaL's rule (every token a candidate, keeps at least one): the inf token goes, 0.3 stays
    keep = torch.func.vmap(lambda l, a: m2po_mask(l, a, mask, 0.04, "all", "areal").keep)(lr[None], adv[None])
    assert keep[0].tolist() == expected == m2po_mask(lr, adv, mask, 0.04, "all", "areal").keep.tolist()


def test_fp16_300_through_the_loss():
    old = torch.tensor([[-1.0, -300.0]], dtype=torch.float16)
    logp = torch.tensor([[-0.7, 0.0]], dtype=torch.float16)  # log-ratios 0.3 and 300
    adv = torch.tensor([[-1.0, 1.0]], dtype=torch.float16)
    mask = torch.ones(1, 2, dtype=torch.bool)
    per_token, loss, grad, metrics = _loss_and_grad("m2po", logp, old, adv, mask)
    assert torch.isfinite(loss) and torch.isfinite(grad).all() and grad[0, 1].item() == 0.0
    assert metrics["clip/frac"].item() == 0.5 and metrics["m2po/threshold"].item() == 300.0


def test_waterfill_counts_an_infinite_candidate():
    """m2 = [0.01, inf], tau 0.04: t^2 = (2 * 0.04 - 0.01) / 1 = 0.07 (inf was zeroed with the placeholders)."""
    m2 = torch.tensor([0.01, math.inf], dtype=torch.float64)
    t = waterfill_threshold_tensor(m2, torch.ones(2, dtype=torch.bool), 0.04)
    assert t.item() == pytest.approx(math.sqrt(0.07), rel=1e-12)


# ---------------------------------------------------------------- property tests against float64
GRID = st.one_of(st.floats(-8, 8, width=16), st.sampled_from([0.0, 0.2, -0.2, 0.5, -0.5, 3.0, 300.0, -300.0]))


@st.composite
def low_precision_batches(draw):
    dtype = draw(st.sampled_from(LOW))
    B, T = draw(st.integers(1, 4)), draw(st.integers(1, 8))
    n = B * T
    lr = torch.tensor(draw(st.lists(GRID, min_size=n, max_size=n))).reshape(B, T).to(dtype)
    adv = torch.tensor(draw(st.lists(st.sampled_from([-1.0, 0.0, 1.0, 0.5, -2.0]), min_size=n, max_size=n)))
    mask = torch.tensor(draw(st.lists(st.booleans(), min_size=n, max_size=n))).reshape(B, T)
    tau = draw(st.sampled_from([0.04, 1e-3, 0.5, 10.0]))
    return lr, adv.reshape(B, T).to(dtype), mask, tau


def _same_decision(keep, ref, mask, lr):
    """Equal, or equal up to which of tied M2 values is masked."""
    m2 = lr.double().square()
    assert int((mask & ~keep).sum()) == int((mask & ~ref).sum())
    if not torch.equal(keep, ref):
        assert sorted(m2[mask & ~keep].tolist()) == sorted(m2[mask & ~ref].tolist())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(low_precision_batches(), st.sampled_from(["harmful", "all"]))
def test_low_precision_solver_equals_float64_reference(batch, region):
    lr, adv, mask, tau = batch
    wide = lr.double()
    for rule in ("algorithm1", "areal"):
        direct = m2po_mask(lr, adv, mask, tau, region, rule)
        vmapped = torch.func.vmap(lambda l, a: m2po_mask(l, a, mask, tau, region, rule).keep)(lr[None], adv[None])[0]
        assert torch.equal(direct.keep, vmapped)
        assert direct.m2.dtype == torch.float32
        if rule == "algorithm1":
            ref = algorithm1_greedy(wide, adv.double(), mask, tau, region)
        elif region == "all":
            ref = areal_greedy(wide, mask, tau)
        else:
            continue  # AReaL's rule is defined over every valid token
        _same_decision(direct.keep, ref, mask, lr)
    cand = direct.candidates
    t = waterfill_threshold_tensor(lr.float().square(), cand, tau)  # M2 as the loss forms it
    ref_t = waterfill_bisection(wide[cand].square().tolist(), tau)
    assert (math.isinf(ref_t) and t.isinf()) or t.item() == pytest.approx(ref_t, rel=1e-6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(low_precision_batches(), st.sampled_from(ALL))
def test_low_precision_losses_give_the_float32_answer(batch, name):
    """Every loss: bf16/fp16 inputs give bit for bit the float32-input answer, and the float64
    answer to float32 rounding (old_logp = 0, so the log-ratio is exactly the grid value)."""
    lr, adv, mask, _ = batch
    old = torch.zeros_like(lr)
    low = _loss_and_grad(name, lr, old, adv, mask)
    f32 = _loss_and_grad(name, lr.float(), old.float(), adv.float(), mask)
    f64 = _loss_and_grad(name, lr.double(), old.double(), adv.double(), mask)
    assert torch.equal(low[0], f32[0]) and torch.equal(low[1], f32[1])
    assert low[2].dtype == lr.dtype and torch.equal(low[2], f32[2].to(lr.dtype))
    for key, value in low[3].items():
        assert torch.equal(value, f32[3][key]) or (value.isnan() & f32[3][key].isnan()), key
    torch.testing.assert_close(low[0], f64[0].float(), rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(f32[2], f64[2].float(), rtol=2e-6, atol=1e-6)
    assert low[3]["clip/frac"].item() == pytest.approx(f64[3]["clip/frac"].item(), abs=1e-7)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", LOW)
def test_compute_core_widens_low_precision_inputs(name, dtype):
    """``LOSSES[name].compute`` (the vmap-able core) also gives the float32 answer for bf16/fp16."""
    g = torch.Generator().manual_seed(7)
    lr = (0.3 * torch.randn(2, 5, 6, generator=g)).to(dtype)
    adv = torch.randn(2, 5, 1, generator=g).expand(2, 5, 6).to(dtype)
    mask = torch.rand(5, 6, generator=g) > 0.2
    lr = torch.where(mask, lr, torch.zeros_like(lr))
    cfg = LossConfig()
    fn = get_loss(name).compute
    low = torch.func.vmap(lambda l, a: fn(l, a, mask, cfg))(lr, adv)
    f32 = torch.func.vmap(lambda l, a: fn(l, a, mask, cfg))(lr.float(), adv.float())
    assert torch.equal(low[0], f32[0])
    for key in f32[1]:
        torch.testing.assert_close(low[1][key], f32[1][key], rtol=0, atol=0, equal_nan=True)
