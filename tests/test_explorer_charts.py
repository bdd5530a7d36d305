"""m2po_lab.explorer.charts: the explorer's interactive (Vega-Lite) charts, without Streamlit."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("altair")

from m2po_lab import rundir as rd  # noqa: E402
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
