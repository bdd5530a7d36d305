"""Explorer page 4 (Systems) under AppTest: it renders, its controls move what it shows, bad combinations say why.

The numbers come from m2po_lab.explorer.systems (tested here against the simulator directly).
"""

from __future__ import annotations

import pytest
from app_helpers import metric, open_page

pytest.importorskip("simpy")

from m2po_lab.explorer.systems import UNBOUNDED, explore_system, system_config  # noqa: E402
from m2po_lab.systems import compare, get_preset  # noqa: E402

PAGE4 = "pages/4_Systems.py"


def _key(at, kind: str, prefix: str) -> str:
    keys = [w.key for w in getattr(at, kind) if w.key and w.key.startswith(prefix)]
    assert len(keys) == 1, keys
    return keys[0]


def test_explore_system_is_the_simulator():
    cfg = system_config("teaching", bound=8, rollout_workers=8)
    ex = explore_system(cfg)
    out, _ = compare(cfg)
    assert ex["outputs"] == out and abs(sum(ex["sample_pmf"]) - 1) < 1e-9
    assert ex["outputs"]["staleness/sample_max"] <= 8 and len(ex["study_ages"]) == 4 * (len(ex["sample_pmf"]) - 1) + 1
    assert system_config("teaching", bound=UNBOUNDED).max_staleness is None
    assert system_config("teaching").max_staleness == get_preset("teaching").max_staleness
    doubled = system_config("teaching", trainer_gpus=4)  # the same throughput per trainer GPU
    assert doubled.train_tokens_per_s == 2 * get_preset("teaching").train_tokens_per_s
    with pytest.raises(ValueError, match="max_concurrency=4 must be >= group_size=8"):
        system_config("teaching", max_concurrency=4, group_size=8)


def test_page4_renders_the_default_preset(apptest):
    at = open_page(apptest, PAGE4)
    assert not at.error and len(at.get("image")) == 2  # age histogram, utilisation
    ex = explore_system(system_config("teaching"))
    assert metric(at, "speed-up over synchronous") == f"{ex['outputs']['speedup/vs_sync']:.2f}x"
    assert metric(at, "p99 / max sample age") == "2 / 2"
    assert any("Closed-form mean sample age" in m.value for m in at.markdown)


def test_page4_bound_and_pools_move_the_ages_and_the_speedup(apptest):
    at = open_page(apptest, PAGE4)
    tight = float(metric(at, "mean sample age (versions)"))
    at.select_slider(key=_key(at, "select_slider", "sys_bound@")).set_value(8).run()
    at.slider(key=_key(at, "slider", "sys_workers@")).set_value(8).run()
    assert not at.exception and not at.error
    loose = float(metric(at, "mean sample age (versions)"))
    assert loose > tight
    want = explore_system(system_config("teaching", bound=8, rollout_workers=8))["outputs"]["speedup/vs_sync"]
    assert metric(at, "speed-up over synchronous") == f"{want:.2f}x"
    at.selectbox(key=_key(at, "selectbox", "sys_mode@")).set_value("sync").run()
    assert metric(at, "mean sample age (versions)") == "0" and metric(at, "speed-up over synchronous") == "1.00x"


def test_page4_a_new_preset_and_a_refused_combination(apptest):
    at = open_page(apptest, PAGE4)
    at.slider(key=_key(at, "slider", "sys_len_sigma@")).set_value(1.2).run()
    assert not at.exception and len(at.get("image")) == 2
    at.selectbox(key="sys_preset").set_value("fully-async").run()
    assert not at.exception
    assert at.slider(key=_key(at, "slider", "sys_workers@")).value == 12  # the new preset's own value
    assert at.select_slider(key=_key(at, "select_slider", "sys_bound@")).value == UNBOUNDED
    at.slider(key=_key(at, "slider", "sys_concurrency@")).set_value(4).run()
    at.slider(key=_key(at, "slider", "sys_group@")).set_value(8).run()
    assert not at.exception
    assert len(at.error) == 1 and "max_concurrency=4 must be >= group_size=8" in at.error[0].value
    assert not at.get("image")
