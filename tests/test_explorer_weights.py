"""m2po_lab.explorer.weights: what each registered loss does to each token (the numbers page 1 shows)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from m2po_lab.explorer.synthetic import synthetic_log_ratios
from m2po_lab.explorer.weights import (
    FATES,
    METHODS,
    QUADRANTS,
    explain_batch,
    fate_labels,
    histogram_data,
    loss_sources,
    shift_comparison,
    token_fates,
)
from m2po_lab.losses import LossConfig
from m2po_lab.masking import m2po_keep_mask, trust_region_candidates, waterfill_threshold_tensor


def _batch(n=600, kind="student_t", seed=0):
    return synthetic_log_ratios(n, kind, 0.15, 2, 0.5, seed)


def test_weight_is_ratio_without_trust_region():
    log_ratio, adv, mask = _batch()
    fate = token_fates(log_ratio, adv, mask, methods=("no_tr",))["no_tr"]
    torch.testing.assert_close(fate["weight"], log_ratio[mask].exp(), rtol=1e-5, atol=0)
    assert not fate["zeroed"].any()


def test_grpo_zero_exactly_where_clipped():
    cfg = LossConfig(eps_low=0.2, eps_high=0.28)
    log_ratio, adv, mask = _batch()
    fate = token_fates(log_ratio, adv, mask, cfg, methods=("grpo",))["grpo"]
    r, a = log_ratio[mask].exp(), adv[mask]
    clipped = ((a > 0) & (r > 1.28)) | ((a < 0) & (r < 0.8))
    assert clipped.any() and (~clipped).any()
    assert torch.equal(fate["zeroed"], clipped)
    torch.testing.assert_close(fate["weight"][~clipped], r[~clipped], rtol=1e-5, atol=0)
    assert torch.all(fate["weight"][clipped] == 0)
    assert math.isclose(fate["metrics"]["clip/frac"], clipped.float().mean().item(), rel_tol=1e-6)


@pytest.mark.parametrize("tau", [0.005, 0.04])
def test_m2po_zero_exactly_where_masked(tau):
    cfg = LossConfig(tau=tau)
    log_ratio, adv, mask = _batch()
    fate = token_fates(log_ratio, adv, mask, cfg, methods=("m2po",))["m2po"]
    keep = m2po_keep_mask(log_ratio, adv, mask, tau)[mask]
    assert (~keep).any()
    assert torch.equal(fate["zeroed"], ~keep)
    torch.testing.assert_close(fate["weight"][keep], log_ratio[mask].exp()[keep], rtol=1e-5, atol=0)


def test_released_rule_zero_beyond_waterfill_threshold():
    log_ratio, adv, mask = _batch()
    fate = token_fates(log_ratio, adv, mask, methods=("m2po_released",))["m2po_released"]
    cand = trust_region_candidates(log_ratio, adv, mask)
    t = waterfill_threshold_tensor(log_ratio.square(), cand, 0.04)
    expected = (cand & (log_ratio.abs() > t))[mask]
    assert expected.any()
    assert torch.equal(fate["zeroed"], expected)


def test_is_variants_weights():
    cfg = LossConfig()
    log_ratio, adv, mask = _batch()
    fates = token_fates(log_ratio, adv, mask, cfg, methods=("tis", "mis", "cispo"))
    r = log_ratio[mask].exp()
    torch.testing.assert_close(fates["tis"]["weight"], r.clamp(max=cfg.tis_cap), rtol=1e-5, atol=0)
    torch.testing.assert_close(fates["cispo"]["weight"], r.clamp(max=1 + cfg.cispo_eps_high), rtol=1e-5, atol=0)
    out = (r < cfg.mis_low) | (r > cfg.mis_high)
    assert out.any() and torch.equal(fates["mis"]["zeroed"], out)
    assert not fates["tis"]["zeroed"].any() and not fates["cispo"]["zeroed"].any()


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=1, max_size=24),
    signs=st.lists(st.booleans(), min_size=24, max_size=24),
    tau=st.sampled_from([0.001, 0.04, 1.0]),
)
def test_zeroed_fraction_is_the_losses_clip_frac(values, signs, tau):
    log_ratio = torch.tensor([values])  # (1, n)
    adv = torch.tensor([[1.0 if s else -1.0 for s in signs[: len(values)]]])  # (1, n)
    mask = torch.ones_like(log_ratio, dtype=torch.bool)
    for name, fate in token_fates(log_ratio, adv, mask, LossConfig(tau=tau)).items():
        assert math.isclose(fate["zeroed"].float().mean().item(), fate["metrics"]["clip/frac"], abs_tol=1e-6), name


def test_padding_and_per_sequence_advantages():
    log_ratio = torch.tensor([[0.5, -0.1, 9.0], [-0.7, 0.2, 0.0]])  # (2, 3)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    adv = torch.tensor([1.0, -2.0])  # (B,)
    fates = token_fates(log_ratio, adv, mask)
    for fate in fates.values():
        assert fate["weight"].shape == (5,) and not torch.isnan(fate["weight"]).any()
    torch.testing.assert_close(fates["no_tr"]["weight"], log_ratio[mask].exp())


def test_fate_labels_and_explain_batch():
    log_ratio, adv, mask = _batch(kind="student_t")
    ex = explain_batch(log_ratio, adv, mask)
    n = int(mask.sum())
    for name in METHODS:
        assert ex["fate"][name].shape == (n,) and set(ex["fate"][name]) <= set(FATES)
        assert (ex["fate"][name] != "kept").sum() >= ex["zeroed"][name].sum()
    assert set(ex["fate"]["no_tr"]) == {"kept"}
    assert (ex["fate"]["m2po"] == "masked (M2PO)").sum() == ex["zeroed"]["m2po"].sum() > 0
    assert (ex["fate"]["tis"] == "reweighted (TIS)").sum() == (np.exp(ex["log_ratio"]) > 2.0).sum()
    assert [row["method"] for row in ex["table"]] == list(METHODS)
    w = torch.tensor([1.0, 0.0, 1.5])
    assert fate_labels("grpo", w, w == 0, torch.tensor([0.0, 1.0, 0.2])) == ["kept", "clipped (GRPO)", "kept"]


def test_histogram_counts_every_token_once():
    log_ratio, adv, mask = _batch()
    hist = histogram_data(log_ratio, adv, mask, bins=41)
    assert len(hist["edges"]) == 43 and 0.0 in np.round(hist["edges"], 12)
    assert sum(int(c.sum()) for c in hist["counts"].values()) == int(mask.sum())
    harmful = int(hist["counts"][QUADRANTS[0]].sum() + hist["counts"][QUADRANTS[1]].sum())
    assert harmful == int(trust_region_candidates(log_ratio, adv, mask).sum())


def test_k1_cancels_where_m2_does_not():
    out = shift_comparison(1.5)
    assert out["+d and -d"]["kl/k1"] == pytest.approx(0.0, abs=1e-7)
    assert out["both +d"]["kl/k1"] == pytest.approx(-1.5, rel=1e-6)
    assert all(v["is/m2"] == pytest.approx(2.25) for v in out.values())
    assert out["both -d"]["kl/k3"] < out["both +d"]["kl/k3"]  # k3 is lopsided


def test_loss_sources_are_the_registered_functions():
    src = loss_sources("m2po")
    assert "def m2po_loss" in src["m2po_lab.m2po_losses.m2po_loss"]
    assert "def m2po_mask" in src["m2po_lab.masking.m2po_mask"]
    assert list(loss_sources("grpo")) == ["m2po_lab.clipping_losses.grpo_loss"]
    with pytest.raises(ValueError, match="accepted values"):
        loss_sources("nope")




def test_three_rules_by_hand_and_against_the_losses():
    from m2po_lab.explorer.weights import three_rules
    from m2po_lab.losses import get_loss

    # A > 0 everywhere; log r = 1, 0.5, 0.1, -0.3: candidates of the paper's rule are r > 1 (first three)
    log_ratio = torch.tensor([[1.0, 0.5, 0.1, -0.3]])
    adv, mask = torch.ones(1, 4), torch.ones(1, 4, dtype=torch.bool)
    rows = {r["rule"]: r for r in three_rules(log_ratio, adv, mask, tau=0.2)}
    # Algorithm 1: M2 of the candidates (1 + 0.25 + 0.01) / 3 = 0.42 > 0.2; mask the 1.0: (0.25 + 0.01) / 2 = 0.13
    assert rows["m2po"]["tokens zeroed"] == 1 and rows["m2po"]["zeroed frac"] == 0.25
    assert abs(rows["m2po"]["M2 after"] - 0.13) < 1e-6
    # its gradient: token-mean of -A r over the 3 kept tokens, d/dlogp = -r / 4
    kept = torch.tensor([0.5, 0.1, -0.3]).exp()
    assert abs(rows["m2po"]["grad norm"] - float((kept / 4).norm())) < 1e-6
    for name in ("m2po_released", "m2po_areal"):  # the losses' own bookkeeping agrees with autograd's
        metrics = get_loss(name)(log_ratio, torch.zeros_like(log_ratio), adv, mask, LossConfig(tau=0.2))[1]
        assert rows[name]["M2 after"] == float(metrics["m2po/m2_after"])
        assert rows[name]["zeroed frac"] == float(metrics["clip/frac"]), name
