"""Interactive charts for the explorer (Altair / Vega-Lite, which Streamlit ships with).

The static matplotlib figures (``m2po_lab.study.figures``) serve reports and notebooks;
these are for a reader who wants the value under the cursor, to zoom a tail or to toggle
a run: every chart has tooltips, zooms and pans (drag, scroll), and a click on the legend
shows one run (shift-click adds more).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from m2po_lab import rundir as rd

from . import analysis as an


def metric_frame(runs: list[rd.Run], key: str, window: int = 1) -> pd.DataFrame:
    """Long format for one metric: columns run, update, value (smoothed over ``window`` logged values), raw."""
    frames = []
    for run in runs:
        x, y = an.series(run, key)
        if len(x):
            frames.append(pd.DataFrame({"run": run.name, "update": np.asarray(x, dtype=int),
                                        "value": an.smooth(y, window), "raw": np.asarray(y, dtype=float)}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "update", "value", "raw"])


def metric_chart(frame: pd.DataFrame, key: str, log_y: bool = False, cursor: int | None = None,
                 runs: list[str] | None = None):
    """One line per run of ``frame`` (:func:`metric_frame`); tooltips name run, update, value and raw value.

    ``runs``: every run name the page shows, in order, so a run has the same colour in every
    chart even where it did not log this metric."""
    import altair as alt

    pick = alt.selection_point(fields=["run"], bind="legend")
    scale = alt.Scale(type="symlog", constant=1e-4) if log_y else alt.Scale(zero=False)
    lines = alt.Chart(frame).mark_line(strokeWidth=1.4).encode(
        x=alt.X("update:Q", title="update"),
        y=alt.Y("value:Q", title=key, scale=scale),
        color=alt.Color("run:N", scale=alt.Scale(domain=runs) if runs else alt.Undefined,
                        legend=alt.Legend(title="run (click to show one)", orient="bottom", columns=2)),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("update:Q"), alt.Tooltip("value:Q", format=".4g", title=key),
                 alt.Tooltip("raw:Q", format=".4g", title="unsmoothed")],
    ).add_params(pick)
    layers = [lines]
    if cursor is not None:
        layers.append(alt.Chart(pd.DataFrame({"update": [cursor]})).mark_rule(strokeDash=[3, 3], color="black")
                      .encode(x="update:Q"))
    return alt.layer(*layers).properties(height=260, title=key).interactive(bind_y=False)
