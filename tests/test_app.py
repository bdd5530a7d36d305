"""The explorer (AppTest, no browser), the numbers it shows (m2po_lab.explain), its data
(m2po_lab.synthetic) and its launcher (m2po_lab.app_launcher)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from app_helpers import HOME, metric, open_page

from m2po_lab import app_launcher
from m2po_lab.explain import (
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
from m2po_lab.synthetic import synthetic_log_ratios

PAGE1 = "pages/1_Importance_weights.py"


# ---------------------------------------------------------------- the app (AppTest)


def _page1(apptest):
    return open_page(apptest, PAGE1, timeout=60)


def test_home_renders(apptest):
    at = apptest.from_file(str(HOME), default_timeout=60).run()
    assert not at.exception
    assert "stale rollouts" in at.markdown[0].value


def test_page1_renders_defaults_and_matches_explain(apptest):
    at = _page1(apptest)
    assert len(at.get("image")) == 3  # histogram, scatter, weights
    assert len(at.dataframe) == 2  # methods table, KL two-token table
    log_ratio, adv, mask = synthetic_log_ratios(4000, "student_t", 0.1, 2, 0.5, 0)
    ex = explain_batch(log_ratio, adv, mask, LossConfig(tau=0.04, eps_low=0.2, eps_high=0.2))
    assert metric(at, "M2PO mask fraction") == f"{100 * ex['metrics']['m2po']['m2po/mask_frac']:.2f}%"
    assert metric(at, "GRPO clip fraction") == f"{100 * ex['metrics']['grpo']['clip/frac']:.2f}%"
    assert "Traceback" not in str(at)


def test_tau_changes_mask_fraction(apptest):
    at = _page1(apptest)
    before = metric(at, "M2PO mask fraction")
    at.select_slider(key="tau").set_value(0.01).run()
    assert not at.exception
    smaller_tau = metric(at, "M2PO mask fraction")
    assert float(smaller_tau.rstrip("%")) > float(before.rstrip("%"))  # a tighter budget masks more
    at.select_slider(key="tau").set_value(0.32).run()
    assert metric(at, "M2PO mask fraction") == "0.00%"  # the whole batch is within the budget


def test_toy_policy_source_staleness_changes_mask_fraction(apptest):
    """log r from a real toy policy: a staler batch spreads wider, so M2PO masks more."""
    at = _page1(apptest)
    at.radio(key="source").set_value("toy policy at a staleness").run()
    assert not at.exception, at.exception
    at.select_slider(key="toy_staleness").set_value(0).run()
    on_policy = float(metric(at, "M2PO mask fraction").rstrip("%"))
    at.select_slider(key="toy_staleness").set_value(128).run()
    assert not at.exception, at.exception
    stale = float(metric(at, "M2PO mask fraction").rstrip("%"))
    assert on_policy == 0.0 and stale > on_policy


def test_other_widgets_rerun_cleanly(apptest):
    at = _page1(apptest)
    at.radio(key="source").set_value("Gaussian").run()  # the Gaussian source's widgets appear
    assert not at.exception
    at.slider(key="sigma").set_value(0.4)
    at.slider(key="eps").set_value(0.1)
    at.slider(key="pos_frac").set_value(1.0)
    at.selectbox(key="method").set_value("grpo")
    at.checkbox(key="symlog_x").uncheck()
    at.slider(key="kl_shift").set_value(2.0).run()  # one rerun with all of them
    assert not at.exception
    assert any("def grpo_loss" in c.value for c in at.code)


# ---------------------------------------------------------------- explain: weights through the real losses
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
    assert all(v["m2"] == pytest.approx(2.25) for v in out.values())
    assert out["both -d"]["kl/k3"] < out["both +d"]["kl/k3"]  # k3 is lopsided


def test_loss_sources_are_the_registered_functions():
    src = loss_sources("m2po")
    assert "def m2po_loss" in src["m2po_lab.losses.m2po_loss"]
    assert "def m2po_mask" in src["m2po_lab.masking.m2po_mask"]
    assert list(loss_sources("grpo")) == ["m2po_lab.losses.grpo_loss"]
    with pytest.raises(ValueError, match="accepted values"):
        loss_sources("nope")


# ---------------------------------------------------------------- synthetic
@pytest.mark.parametrize("kind", ["gaussian", "student_t"])
def test_synthetic_is_seeded_and_shaped(kind):
    a = synthetic_log_ratios(300, kind, 0.2, 3, 0.3, seed=7)
    b = synthetic_log_ratios(300, kind, 0.2, 3, 0.3, seed=7)
    c = synthetic_log_ratios(300, kind, 0.2, 3, 0.3, seed=8)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    log_ratio, adv, mask = a
    assert log_ratio.shape == adv.shape == mask.shape == (1, 300) and mask.all()
    assert adv.abs().min() >= 1e-3


def test_synthetic_sign_mix_and_tails():
    assert (synthetic_log_ratios(200, pos_frac=1.0)[1] > 0).all()
    assert (synthetic_log_ratios(200, pos_frac=0.0)[1] < 0).all()
    frac = (synthetic_log_ratios(20000, pos_frac=0.3, seed=1)[1] > 0).float().mean()
    assert abs(frac - 0.3) < 0.02
    gauss = synthetic_log_ratios(20000, "gaussian", 1.0, seed=2)[0]
    heavy = synthetic_log_ratios(20000, "student_t", 1.0, 3, seed=2)[0]
    kurt = lambda x: float((x - x.mean()).pow(4).mean() / x.var().pow(2))  # noqa: E731
    assert kurt(gauss) < 3.3 < kurt(heavy)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "laplace"}, "accepted values: \\['gaussian', 'student_t'\\]"),
        ({"n": 0}, "n must be"),
        ({"scale": 0.0}, "scale must be"),
        ({"kind": "student_t", "dof": 2.5}, "dof must be"),
        ({"pos_frac": 1.5}, "pos_frac must be"),
        ({"seed": None}, "seed must be"),
    ],
)
def test_synthetic_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_log_ratios(**{"n": 10, **kwargs})


# ---------------------------------------------------------------- launcher
def test_launcher_command():
    cmd = app_launcher.streamlit_command(8765, "127.0.0.1", True, ["--server.runOnSave", "false"])
    assert cmd[1:4] == ["-m", "streamlit", "run"] and Path(cmd[4]) == HOME
    joined = " ".join(cmd)
    assert "--server.address 127.0.0.1" in joined and "--server.headless true" in joined
    assert "--server.port 8765" in joined and cmd[-2:] == ["--server.runOnSave", "false"]
    assert "--server.port" not in app_launcher.streamlit_command(None)
    with pytest.raises(ValueError, match="port"):
        app_launcher.streamlit_command(0)


def test_launcher_missing_app(monkeypatch, tmp_path):
    monkeypatch.setattr(app_launcher, "APP_HOME", tmp_path / "app" / "Home.py")
    with pytest.raises(FileNotFoundError, match="pip install -e"):
        app_launcher.launch(None)
