import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m2po_lab.masking import (
    m2po_keep_mask,
    m2po_mask,
    trust_region_candidates,
    waterfill_threshold,
    waterfill_threshold_tensor,
)
from reference import algorithm1_greedy, areal_greedy, student_t, waterfill_bisection

TIE_VALUES = [0.0, 0.1, -0.1, 0.2, -0.2, 0.5, -0.5, 3.0, -3.0, 50.0, -50.0]


@st.composite
def batches(draw):
    B = draw(st.integers(1, 4))
    T = draw(st.integers(1, 8))
    n = B * T
    finite = st.floats(-50, 50, allow_nan=False, width=32)
    value = st.one_of(finite, st.sampled_from(TIE_VALUES))
    lr = torch.tensor(draw(st.lists(value, min_size=n, max_size=n)), dtype=torch.float32).reshape(B, T)
    if draw(st.booleans()):
        adv = torch.tensor(draw(st.lists(st.sampled_from([-1.0, 0.0, 1.0, 0.5]), min_size=B, max_size=B)))
    else:
        adv = torch.tensor(draw(st.lists(st.floats(-2, 2, width=32), min_size=n, max_size=n))).reshape(B, T)
    mask = torch.tensor(draw(st.lists(st.booleans(), min_size=n, max_size=n))).reshape(B, T)
    tau = draw(st.sampled_from([0.04, 1e-4, 0.5, 10.0, 3000.0]))
    region = draw(st.sampled_from(["harmful", "all"]))
    return lr, adv, mask, tau, region


def _check_against_greedy(lr, adv, mask, tau, region):
    fast = m2po_keep_mask(lr, adv, mask, tau, region)
    slow = algorithm1_greedy(lr, adv, mask, tau, region)
    cand = trust_region_candidates(lr, adv, mask, region)
    m2 = lr.double().square()
    # same number masked, padding never kept, non-candidates never masked
    assert int((mask & ~fast).sum()) == int((mask & ~slow).sum())
    assert not bool((fast & ~mask).any())
    assert bool(fast[mask & ~cand].all())
    masked, kept = m2[mask & ~fast], m2[cand & fast]
    if masked.numel() and kept.numel():
        assert masked.min() >= kept.max()  # ties at the cut: masked M2 >= kept M2
    if not torch.equal(fast, slow):  # only possible through ties
        assert set(m2[mask & ~fast].tolist()) == set(m2[mask & ~slow].tolist())
    return fast, cand, m2


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_keep_mask_equals_greedy_algorithm1(batch):
    _check_against_greedy(*batch)


@settings(max_examples=500, deadline=None)
@given(batches())
def test_mask_is_within_budget_and_minimal(batch):
    lr, adv, mask, tau, region = batch
    keep, cand, m2 = _check_against_greedy(lr, adv, mask, tau, region)
    kept = m2[cand & keep]
    if kept.numel():
        assert kept.mean() <= tau * (1 + 1e-12)
    masked = m2[cand & ~keep]
    if masked.numel():  # unmasking the smallest masked token breaks the bound
        with_one_more = torch.cat([kept, masked.min().reshape(1)])
        assert with_one_more.mean() > tau


def test_hand_computed_mask():
    # harmful candidates (A > 0, r > 1): M2 = 0.01, 0.04, 0.25 -> mean 0.10 > 0.04;
    # drop 0.25 -> mean 0.025 <= 0.04. The A > 0, r < 1 token (-0.9) is not a candidate.
    lr = torch.tensor([[0.1, 0.2, 0.5, -0.9]])
    adv = torch.tensor([1.0])
    mask = torch.ones(1, 4, dtype=torch.bool)
    out = m2po_mask(lr, adv, mask, tau=0.04)
    assert out.keep.tolist() == [[True, True, False, True]]
    assert out.candidates.tolist() == [[True, True, True, False]]
    assert out.threshold.item() == pytest.approx(0.5)
    # region="all": -0.9 (M2 0.81) is a candidate: drop 0.81, then 0.25
    keep_all = m2po_keep_mask(lr, adv, mask, tau=0.04, region="all")
    assert keep_all.tolist() == [[True, True, False, False]]


def test_edge_cases():
    mask = torch.ones(2, 3, dtype=torch.bool)
    zeros = torch.zeros(2, 3)
    adv = torch.tensor([1.0, -1.0])
    assert m2po_keep_mask(zeros, adv, mask).all()  # all zeros: nothing masked
    one = m2po_mask(torch.tensor([[5.0]]), torch.tensor([1.0]), torch.ones(1, 1, dtype=torch.bool))
    assert not one.keep.any() and one.threshold.item() == 5.0  # one token above budget
    none = torch.tensor([[-1.0, -2.0, 3.0]])  # A > 0 with r < 1, A < 0 with r > 1: no candidate
    adv2 = torch.tensor([[1.0, 1.0, -1.0]])
    out = m2po_mask(none, adv2, torch.ones(1, 3, dtype=torch.bool))
    assert out.keep.all() and math.isinf(out.threshold.item())
    empty = m2po_keep_mask(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 4, dtype=torch.bool))
    assert empty.shape == (0, 4)
    pad = torch.tensor([[9.0, 0.1]])  # padded outlier is ignored and not "kept"
    keep = m2po_keep_mask(pad, torch.tensor([1.0]), torch.tensor([[False, True]]))
    assert keep.tolist() == [[False, True]]


def test_large_random_against_greedy():
    g = torch.Generator().manual_seed(0)
    lr = student_t((64, 32), 2, g, torch.float32) * 0.05
    adv = torch.randn(64, generator=g)
    mask = torch.rand(64, 32, generator=g) > 0.2
    _check_against_greedy(lr, adv, mask, 0.04, "harmful")
    _check_against_greedy(lr, adv, mask, 0.04, "all")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.floats(0, 2500, width=32), max_size=30), st.sampled_from([0.04, 1e-3, 1.0, 100.0]))
def test_waterfill_matches_bisection(values, tau):
    m2 = torch.tensor(values, dtype=torch.float32)
    t = waterfill_threshold(m2, tau)
    ref = waterfill_bisection(m2.double().tolist(), tau)
    if math.isinf(ref):
        assert math.isinf(t)
    else:
        assert t == pytest.approx(ref, rel=1e-6, abs=1e-9)
        assert math.fsum(min(v, t * t) for v in m2.double().tolist()) / len(values) == pytest.approx(tau, rel=1e-6)


def test_waterfill_edge_cases():
    assert math.isinf(waterfill_threshold(torch.tensor([]), 0.04))  # no candidates
    assert math.isinf(waterfill_threshold(torch.tensor([0.01, 0.05]), 0.04))  # mean 0.03 <= tau
    # cut at the first value: every value is above the solution -> t^2 = tau
    assert waterfill_threshold(torch.tensor([1.0, 2.0, 3.0]), 0.04) == pytest.approx(0.2)
    # hand computed: sorted 0.01, 0.04, 0.25; n tau = 0.12; f(0.04) = 0.09 < 0.12 -> t^2 = 0.07
    assert waterfill_threshold(torch.tensor([0.25, 0.01, 0.04]), 0.04) == pytest.approx(math.sqrt(0.07))
    # only candidates count
    m2 = torch.tensor([[0.25, 0.01, 0.04, 100.0]])
    cand = torch.tensor([[True, True, True, False]])
    assert waterfill_threshold_tensor(m2, cand, 0.04).item() == pytest.approx(math.sqrt(0.07))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tau=0.0), "tau"),
        (dict(tau=-1.0), "tau"),
        (dict(tau=float("nan")), "tau"),
        (dict(region="everything"), "region.*harmful"),
    ],
)
def test_bad_arguments(kwargs, match):
    lr, adv, mask = torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=match):
        m2po_keep_mask(lr, adv, mask, **kwargs)


@settings(max_examples=300, deadline=None)
@given(batches())
def test_static_path_under_vmap_equals_compact_path(batch):
    """Under torch.func.vmap the solver takes its shape-static path; same answer."""
    lr, adv, mask, tau, region = batch
    adv_bt = adv[:, None].expand_as(lr) if adv.dim() == 1 else adv
    direct = m2po_mask(lr, adv_bt, mask, tau, region)
    keep, threshold = torch.func.vmap(lambda l, a: tuple(m2po_mask(l, a, mask, tau, region)[::3]))(lr[None], adv_bt[None])
    assert torch.equal(keep[0], direct.keep)
    assert torch.equal(threshold[0], direct.threshold) or (threshold[0].isinf() and direct.threshold.isinf())


def test_ties_at_the_cut_break_the_same_way_on_both_paths():
    """Two candidates with M2 0.25 and six with 0 (tau 0.04): exactly one of the tied pair is
    masked, the later one in row-major order, directly and under vmap. Hypothesis found this
    case when the sort was not stable: the two paths masked different tokens."""
    lr = torch.zeros(4, 8)
    lr[1, 7] = lr[2, 2] = 0.5
    mask = torch.zeros(4, 8, dtype=torch.bool)
    mask[1, 3:] = True
    mask[2, 1:3] = True
    mask[3, 7] = True
    adv = torch.full((4, 8), -1.0)
    direct = m2po_mask(lr, adv, mask, 0.04, "all")
    keep = torch.func.vmap(lambda l, a: m2po_mask(l, a, mask, 0.04, "all").keep)(lr[None], adv[None])[0]
    expected = mask.clone()
    expected[2, 2] = False  # (1, 7) comes first in row-major order and is kept
    assert torch.equal(direct.keep, expected)
    assert torch.equal(keep, expected)


# ---------------------------------------------------------------- AReaL's rule (PR #480)
def _check_areal(lr, mask, tau):
    fast = m2po_mask(lr, torch.zeros(lr.shape[0]), mask, tau, "all", "areal").keep
    slow = areal_greedy(lr, mask, tau)
    m2 = lr.double().square() if lr.dtype != torch.float32 else lr.square().double()
    assert int((mask & ~fast).sum()) == int((mask & ~slow).sum())
    assert not bool((fast & ~mask).any())
    if bool(mask.any()):
        assert bool(fast.any())  # keeps at least one token
    masked, kept = m2[mask & ~fast], m2[fast]
    if masked.numel() and kept.numel():
        assert masked.min() >= kept.max()
    if not torch.equal(fast, slow):  # only possible through ties
        assert sorted(m2[mask & ~fast].tolist()) == sorted(m2[mask & ~slow].tolist())
    return fast


def test_areal_rule_hand_computed():
    """lr = [0.5, 0.5], tau 0.25: the mean M2 is exactly 0.25. Algorithm 1 (<=) keeps both;
    AReaL stops only at mean < tau, and keeps at least one token: it masks one (the later)."""
    lr = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    adv = torch.ones(1, dtype=torch.float64)
    assert m2po_mask(lr, adv, mask, 0.25, "all").keep.tolist() == [[True, True]]
    out = m2po_mask(lr, adv, mask, 0.25, "all", "areal")
    assert out.keep.tolist() == [[True, False]] and out.threshold.item() == 0.5
    # every M2 above tau: Algorithm 1 masks all, AReaL keeps the smallest
    big = torch.tensor([[3.0, -1.0, 2.0]])
    assert not m2po_keep_mask(big, torch.ones(1), torch.ones(1, 3, dtype=torch.bool), 0.04, "all").any()
    areal = m2po_mask(big, torch.ones(1), torch.ones(1, 3, dtype=torch.bool), 0.04, "all", "areal")
    assert areal.keep.tolist() == [[False, True, False]] and areal.threshold.item() == 2.0
    # M2 = 0.01, 0.04, 0.25, 0.81 (mean 0.2775): drop 0.81 (0.1), drop 0.25 (0.025 < 0.04): stop
    lr = torch.tensor([[0.1, 0.2, 0.5, -0.9]])
    keep = m2po_mask(lr, torch.ones(1), torch.ones(1, 4, dtype=torch.bool), 0.04, "all", "areal").keep
    assert keep.tolist() == [[True, True, False, False]]
    # nothing valid: nothing kept, nothing masked
    empty = m2po_mask(lr, torch.ones(1), torch.zeros(1, 4, dtype=torch.bool), 0.04, "all", "areal")
    assert not empty.keep.any() and math.isinf(empty.threshold.item())


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_areal_rule_equals_greedy_reference(batch):
    lr, _, mask, tau, _ = batch
    _check_areal(lr, mask, tau)


@settings(max_examples=200, deadline=None)
@given(batches())
def test_static_path_under_vmap_equals_compact_path_for_the_areal_rule(batch):
    lr, adv, mask, tau, region = batch
    rule = "areal"
    adv_bt = adv[:, None].expand_as(lr) if adv.dim() == 1 else adv
    direct = m2po_mask(lr, adv_bt, mask, tau, region, rule)
    keep, threshold = torch.func.vmap(lambda l, a: tuple(m2po_mask(l, a, mask, tau, region, rule)[::3]))(
        lr[None], adv_bt[None]
    )
    assert torch.equal(keep[0], direct.keep)
    assert torch.equal(threshold[0], direct.threshold) or (threshold[0].isinf() and direct.threshold.isinf())


def test_bad_rule():
    with pytest.raises(ValueError, match="rule.*algorithm1"):
        m2po_mask(torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2, dtype=torch.bool), 0.04, "all", "paper")
