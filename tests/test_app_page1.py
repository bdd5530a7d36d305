"""Explorer page 1 (importance weights) under AppTest: it renders and its widgets change what it shows."""

from __future__ import annotations

import json

from app_helpers import HOME, metric, open_page

from m2po_lab.explorer.synthetic import synthetic_log_ratios
from m2po_lab.explorer.weights import explain_batch
from m2po_lab.losses import LossConfig

PAGE1 = "pages/1_Importance_weights.py"


def _page1(apptest):
    return open_page(apptest, PAGE1, timeout=60)


def test_home_renders(apptest):
    at = apptest.from_file(str(HOME), default_timeout=60).run()
    assert not at.exception
    assert "stale rollouts" in at.markdown[0].value


def test_page1_renders_defaults_and_matches_explain(apptest):
    at = _page1(apptest)
    charts = at.get("vega_lite_chart")
    assert len(charts) == 3 and not at.get("image")  # histogram, scatter, weights: all interactive
    specs = [json.loads(c.proto.spec) for c in charts]
    assert all('"tooltip"' in json.dumps(s) for s in specs)
    assert "under m2po" in json.dumps(specs[1])  # the scatter names each token's fate under the chosen method
    assert len(at.dataframe) == 3  # methods table, the three M2PO rules, KL two-token table
    log_ratio, adv, mask = synthetic_log_ratios(4000, "student_t", 0.1, 2, 0.5, 0)
    ex = explain_batch(log_ratio, adv, mask, LossConfig(tau=0.04, eps_low=0.2, eps_high=0.2))
    shown = at.dataframe[1].value
    assert list(shown["rule"]) == ["m2po", "m2po_released", "m2po_areal"]
    assert abs(shown["zeroed frac"][0] - ex["metrics"]["m2po"]["clip/frac"]) < 1e-7  # the page's batch
    assert metric(at, "M2PO mask fraction") == f"{100 * ex['metrics']['m2po']['clip/frac']:.2f}%"
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


