"""m2po_lab.explorer.charts: the explorer's interactive (Vega-Lite) charts, without Streamlit."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("altair")

from m2po_lab import rundir as rd  # noqa: E402
from m2po_lab.explorer import analysis as an  # noqa: E402
from m2po_lab.explorer import charts  # noqa: E402


def test_metric_frame_and_chart_of_a_study(study_dir):
    runs = rd.load_study(study_dir).runs
    frame = charts.metric_frame(runs, "reward", window=1)
    assert set(frame["run"]) == {r.name for r in runs}
    first = runs[0]
    assert list(frame[frame["run"] == first.name]["raw"]) == [row["reward"] for row in first.rows]
    spec = json.dumps(charts.metric_chart(frame, "reward", log_y=True, cursor=5, runs=[r.name for r in runs]).to_dict())
    for needle in ('"tooltip"', '"symlog"', '"bind": "legend"', '"strokeDash"', '"domain"'):
        assert needle in spec, needle
    empty = charts.metric_frame(runs, "no/such_key")
    assert empty.empty and list(empty.columns) == ["run", "update", "value", "raw"]
    charts.metric_chart(empty, "no/such_key").to_dict()  # an empty chart, not an error


def _explained(n: int = 4000):
    from m2po_lab.explorer.synthetic import synthetic_log_ratios
    from m2po_lab.explorer.weights import explain_batch
    from m2po_lab.losses import LossConfig

    log_ratio, adv, mask = synthetic_log_ratios(n, "student_t", 0.1, 2, 0.5, 0)
    return explain_batch(log_ratio, adv, mask, LossConfig(tau=0.04), spacing="asinh"), (log_ratio, adv, mask)


def test_token_frame_keeps_every_token_a_method_acts_on_and_names_it():
    from m2po_lab.explorer import token_charts as tc

    ex, (log_ratio, adv, mask) = _explained()
    frame = tc.token_frame(ex, max_kept=300, seed=1)
    acted = sum(1 for i in range(len(ex["log_ratio"])) if any(ex["fate"][m][i] != "kept" for m in ex["fate"]))
    assert 0 < acted < len(ex["log_ratio"]) and len(frame) == acted + 300
    assert frame.equals(tc.token_frame(ex, max_kept=300, seed=1))  # seeded
    row = frame.iloc[0]
    b, t = (int(x) for x in row["token"].removeprefix("sequence ").split(", position "))
    assert mask[b, t] and abs(float(log_ratio[b, t]) - row["log_ratio"]) < 1e-6  # the name points at the token
    assert abs(row["r"] - math.exp(row["log_ratio"])) < 1e-9 * row["r"]
    long = tc.weights_frame(frame)
    assert len(long) == len(frame) * len(ex["fate"]) and set(long["sign"]) == {"A > 0", "A < 0"}
    grpo = long[long["method"] == "grpo"]
    assert ((grpo["weight"] == 0) == (grpo["fate"] == "clipped (GRPO)")).all()


def test_token_charts_have_tooltips_thresholds_and_selections():
    import altair as alt

    from m2po_lab.explorer import token_charts as tc

    ex, _ = _explained()
    frame = tc.token_frame(ex, max_kept=300)
    with alt.data_transformers.disable_max_rows():
        hist = json.dumps(tc.histogram_chart(ex, 0.2, symlog=True).to_dict())
        scatter = json.dumps(tc.scatter_chart(frame, "m2po", symlog=False).to_dict())
        weights = json.dumps(tc.weights_chart(frame, symlog=True).to_dict())
    for needle in ('"tooltip"', '"symlog"', '"bind": "legend"', "GRPO clip log(1+0.2)", "M2PO threshold"):
        assert needle in hist, needle
    assert sum(ex["hist"]["counts"][q].sum() for q in ex["hist"]["counts"]) == len(ex["log_ratio"])
    for needle in ('"token"', '"under m2po"', '"bind": "legend"', "masked (M2PO)"):
        assert needle in scatter, needle
    assert '"symlog"' not in scatter  # a linear log r axis when asked
    for needle in ('"facet"', '"dblclick"', '"token"', '"method"'):
        assert needle in weights, needle


def test_study_charts_start_at_update_0_band_seeds_and_mark_the_window(study_dir):
    study = rd.load_study(study_dir)
    frame = charts.reward_frame(study)
    run = an.select(study.runs, "m2po", 8)[0]
    x, y = rd.eval_curve(run)
    mine = frame[(frame["method"] == "m2po") & (frame["staleness"] == 8)]
    assert x[0] == 0 and y[0] == run.config["start_reward"]  # the reward before RL is the point at update 0
    assert list(mine["update"]) == list(x) and np.allclose(mine["mean"], y)  # one seed: its own curve, no band
    assert (mine["std"] == 0).all() and (mine["seeds"] == 1).all()
    reward = json.dumps(charts.reward_chart(study).to_dict())
    for needle in ('"facet"', '"tooltip"', '"strokeDash"', '"bind": "legend"', "std over seeds"):
        assert needle in reward, needle
    zeroed = json.dumps(charts.zeroed_chart(study, 8, window=3).to_dict())
    assert '"symlog"' in zeroed and '"strokeDash"' in zeroed and '"values"' in zeroed
    u = an.hist_updates(an.select(study.runs, staleness=8))[-1]
    hist = charts.histogram_chart(study, 8, u)
    shares = pd.DataFrame(hist.to_dict()["datasets"][hist.to_dict()["data"]["name"]])
    assert np.allclose(shares.groupby("method")["share"].sum(), 1.0) and (shares["tokens"] > 0).all()
    entropy = json.dumps(charts.entropy_chart(study, 8, min_tokens=1).to_dict())
    assert "tokens pooled" in entropy


def test_eval_metrics_start_before_rl(tmp_path):
    from app_helpers import write_run

    rows = [{**{k: 0.0 for k in rd.REQUIRED_KEYS}, "update": u, "reward": 0.5, **({"eval/accuracy": 0.8} if u % 2 else {}),
             "is/log_ratio_quantiles": {"q": [0.05, 0.25, 0.5, 0.75, 0.95], "v": [-0.2, -0.1, 0.0, 0.1, 0.2]}}
            for u in range(4)]
    path = write_run(tmp_path / "llm", rows, kind="llm")
    doc = json.loads((path / "config.json").read_text())
    doc["start"] = {"eval/accuracy": 0.2}  # after the SFT warm start, before RL
    (path / "config.json").write_text(json.dumps(doc))
    run = rd.load_run(path)
    frame = charts.metric_frame([run], "eval/accuracy")
    assert list(frame["update"]) == [-1, 1, 3] and list(frame["raw"]) == [0.2, 0.8, 0.8]


def test_bands_frame_and_chart_per_run(study_dir):
    runs = rd.load_study(study_dir).runs
    frame = charts.bands_frame(runs)
    assert set(frame["run"]) == {r.name for r in runs}
    run = runs[1]
    bands = an.quantile_bands(run)
    mine = frame[frame["run"] == run.name]
    assert list(mine["update"]) == list(bands["update"])
    for col, q in zip(("q05", "q25", "q50", "q75", "q95"), charts.BAND_QUANTILES):
        np.testing.assert_array_equal(mine[col], an.quantile(bands, q))
    assert (mine["q05"] <= mine["q25"]).all() and (mine["q75"] <= mine["q95"]).all()
    spec = json.dumps(charts.bands_chart(frame, cursor=4).to_dict())
    for needle in ('"facet"', '"tooltip"', '"strokeDash"', '"y2"', '"q95"', '"datum": 4'):
        assert needle in spec, needle
    assert charts.bands_frame([]).empty and list(charts.bands_frame([]).columns)[:2] == ["run", "update"]


def test_band_of_sample_and_population_std():
    curves = [(np.array([0, 1, 2]), np.array([1.0, 2.0, 3.0])), (np.array([1, 2, 3]), np.array([4.0, 6.0, 9.0])),
              (np.array([]), np.array([]))]
    pop, sample = an.band_of(curves), an.band_of(curves, ddof=1)
    assert list(pop["update"]) == [1, 2] and pop["n"] == 2
    np.testing.assert_allclose(pop["mean"], [3.0, 4.5])
    np.testing.assert_allclose(pop["std"], [1.0, 1.5])  # population: |a - b| / 2
    np.testing.assert_allclose(sample["std"], [math.sqrt(2), 1.5 * math.sqrt(2)])  # sample: |a - b| / sqrt(2)
    one = an.band_of(curves[:1], ddof=1)
    assert (one["std"] == 0).all() and an.band_of([]) is None
