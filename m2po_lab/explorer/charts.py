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

FONT = {"labelFontSize": 12, "titleFontSize": 13}
"""Axis and legend font sizes of every explorer chart (Vega-Lite's defaults, 10 and 11, read small)."""


def metric_frame(runs: list[rd.Run], key: str, window: int = 1) -> pd.DataFrame:
    """Long format for one metric: columns run, update, value (smoothed over ``window`` logged values), raw.

    An ``eval/`` metric starts with the evaluation before RL (:func:`m2po_lab.rundir.eval_curve`; after the
    SFT warm start for an LLM run) at update -1, the row before update 0."""
    frames = []
    for run in runs:
        if key.startswith("eval/"):
            x, y = rd.eval_curve(run, key)
            x = x - 1
        else:
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
    return (alt.layer(*layers).properties(height=340, title=key).interactive(bind_y=False)
            .configure_axis(**FONT).configure_legend(**FONT).configure_title(fontSize=14))


# ---------------------------------------------------------------- the staleness-study page

def _method_color(methods: list[str], legend: bool = True):
    import altair as alt

    return alt.Color("method:N", scale=alt.Scale(domain=list(methods)),
                     legend=alt.Legend(orient="bottom", title="method (click to show one)") if legend else None)


def reward_frame(study: rd.Study, key: str = "eval/reward") -> pd.DataFrame:
    """Mean and std over seeds of ``key`` per (staleness, method, updates done), from update 0 (the reward
    before RL, :func:`m2po_lab.rundir.eval_curve`) on, on the updates every seed logged."""
    rows = []
    for k in study.staleness:
        for m in study.methods:
            band = an.band_of([rd.eval_curve(r, key) for r in an.select(study.runs, m, k)], ddof=1)
            if band is not None:
                rows += [{"staleness": k, "method": m, "update": int(u), "mean": mu, "std": s, "seeds": band["n"]}
                         for u, mu, s in zip(band["update"], band["mean"], band["std"])]
    frame = pd.DataFrame(rows, columns=["staleness", "method", "update", "mean", "std", "seeds"])
    return frame.assign(lo=frame["mean"] - frame["std"], hi=frame["mean"] + frame["std"])


def reward_chart(study: rd.Study, key: str = "eval/reward"):
    """One panel per staleness, one line per method (mean over seeds) with a +- 1 std band; the
    dotted rule marks the update from which every batch is exactly that stale."""
    import altair as alt

    frame = reward_frame(study, key)
    pick = alt.selection_point(fields=["method"], bind="legend")
    color = _method_color(study.methods)
    x = alt.X("update:Q", title="updates done")
    band = alt.Chart().mark_area(opacity=0.15).encode(x=x, y="lo:Q", y2="hi:Q",
                                                       color=_method_color(study.methods, legend=False),
                                                       opacity=alt.condition(pick, alt.value(0.15), alt.value(0.02)))
    line = alt.Chart().mark_line(strokeWidth=1.6).encode(
        x=x, y=alt.Y("mean:Q", title=f"{key} (mean ± std over seeds)", scale=alt.Scale(zero=False)), color=color,
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=[alt.Tooltip("method:N"), alt.Tooltip("staleness:Q"), alt.Tooltip("update:Q", title="updates done"),
                 alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("std:Q", format=".4f"), alt.Tooltip("seeds:Q")],
    ).add_params(pick)
    window = alt.Chart().mark_rule(strokeDash=[2, 3], color="black").encode(x="min(staleness):Q")
    layered = alt.layer(band, line, window, data=frame).properties(width=280, height=200)
    return (layered.facet(facet=alt.Facet("staleness:O", title="staleness"), columns=3)
            .configure_axis(**FONT).configure_legend(**FONT).configure_header(labelFontSize=13, titleFontSize=13))


def zeroed_chart(study: rd.Study, k: int, window: int, key: str = "clip/frac"):
    """``key`` (the fraction of tokens whose gradient the loss zeroed) at staleness ``k``: mean over seeds of
    a trailing ``window``-update mean, on a symmetric-log axis that keeps 0 in view; dotted at update ``k``."""
    import altair as alt

    rows = []
    for m in study.methods:
        band = an.seed_band(an.select(study.runs, m, k), key, window)
        if band is not None:
            rows += [{"method": m, "update": int(u), "value": v, "percent": 100 * v}
                     for u, v in zip(band["update"], band["mean"])]
    frame = pd.DataFrame(rows, columns=["method", "update", "value", "percent"])
    top = 10 * float(frame["value"].max()) if len(frame) else 1.0  # one decade of ticks above the data
    pick = alt.selection_point(fields=["method"], bind="legend")
    lines = alt.Chart(frame).mark_line(strokeWidth=1.6).encode(
        x=alt.X("update:Q"),
        y=alt.Y("percent:Q", title=f"{key}, % of tokens", scale=alt.Scale(type="symlog", constant=0.01),
                axis=alt.Axis(values=[v for v in (0, 0.01, 0.1, 1, 10, 100) if v <= 100 * top], labelOverlap=False,
                              format=".2~f")),
        color=_method_color(study.methods), opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=[alt.Tooltip("method:N"), alt.Tooltip("update:Q"), alt.Tooltip("percent:Q", format=".3f", title="%")],
    ).add_params(pick)
    rule = alt.Chart(pd.DataFrame({"update": [k]})).mark_rule(strokeDash=[2, 3], color="black").encode(x="update:Q")
    return (alt.layer(lines, rule).properties(height=340).interactive(bind_y=False)
            .configure_axis(**FONT).configure_legend(**FONT))


def entropy_chart(study: rd.Study, k: int, min_tokens: int):
    """Token-weighted mean entropy in bins of |r - 1| at staleness ``k``, every record of every seed pooled;
    bins with fewer than ``min_tokens`` tokens are left out."""
    import altair as alt

    rows, labels = [], []
    for m in study.methods:
        bins = an.pooled_entropy_by_ratio(an.select(study.runs, m, k))
        if bins is None:
            continue
        labels = an.bin_labels(bins["edges"])
        rows += [{"method": m, "|r - 1|": lab, "entropy": e, "tokens": int(c)}
                 for lab, e, c in zip(labels, bins["entropy"], bins["counts"]) if c >= min_tokens]
    frame = pd.DataFrame(rows, columns=["method", "|r - 1|", "entropy", "tokens"])
    pick = alt.selection_point(fields=["method"], bind="legend")
    chart = alt.Chart(frame).mark_line(point=True, strokeWidth=1.6).encode(
        x=alt.X("|r - 1|:O", sort=labels, axis=alt.Axis(labelAngle=-35)),
        y=alt.Y("entropy:Q", title="entropy (nats)", scale=alt.Scale(zero=False)),
        color=_method_color(study.methods), opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=[alt.Tooltip("method:N"), alt.Tooltip("|r - 1|:N"), alt.Tooltip("entropy:Q", format=".4f"),
                 alt.Tooltip("tokens:Q", title="tokens pooled")],
    ).add_params(pick)
    return chart.properties(height=340).configure_axis(**FONT).configure_legend(**FONT)


def histogram_chart(study: rd.Study, k: int, update: int):
    """Share of tokens per bin of log r at ``update`` (seeds summed), one segment per bin and method, log y axis:
    empty bins are not drawn; the outermost bins also count every token beyond them (clamped)."""
    import altair as alt

    rows = []
    for m in study.methods:
        hists = [an.hist_at(r, update) for r in an.select(study.runs, m, k)]
        if not hists:
            continue
        edges, counts = hists[0][0], sum(c for _, c in hists)
        share = counts / max(counts.sum(), 1)
        rows += [{"method": m, "lo": lo, "hi": hi, "share": s, "tokens": int(c)}
                 for lo, hi, s, c in zip(edges[:-1], edges[1:], share, counts) if c > 0]
    frame = pd.DataFrame(rows, columns=["method", "lo", "hi", "share", "tokens"])
    pick = alt.selection_point(fields=["method"], bind="legend")
    bars = alt.Chart(frame).mark_rule(strokeWidth=3).encode(
        x=alt.X("lo:Q", title="log r = logp - old_logp (outermost bins include the values beyond)"), x2="hi:Q",
        y=alt.Y("share:Q", title="share of tokens (log)", scale=alt.Scale(type="log")),
        color=_method_color(study.methods), opacity=alt.condition(pick, alt.value(0.9), alt.value(0.08)),
        tooltip=[alt.Tooltip("method:N"), alt.Tooltip("lo:Q", format=".3f", title="log r from"),
                 alt.Tooltip("hi:Q", format=".3f", title="log r to"), alt.Tooltip("share:Q", format=".3g"),
                 alt.Tooltip("tokens:Q", title="tokens (seeds summed)")],
    ).add_params(pick)
    return bars.properties(height=320).interactive(bind_y=False).configure_axis(**FONT).configure_legend(**FONT)



# ---------------------------------------------------------------- the run browser: quantile bands of log r
BAND_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def bands_frame(runs: list[rd.Run]) -> pd.DataFrame:
    """``is/log_ratio_quantiles`` of each run (:func:`analysis.quantile_bands`): columns run, update and
    q05, q25, q50, q75, q95 (log r); runs that never logged them, or lack one of these quantiles, are left out."""
    cols = [f"q{100 * q:02.0f}" for q in BAND_QUANTILES]
    frames = []
    for run in runs:
        bands = an.quantile_bands(run)
        if bands is None or not len(bands["update"]):
            continue
        try:
            values = {c: an.quantile(bands, q) for c, q in zip(cols, BAND_QUANTILES)}
        except KeyError:
            continue
        frames.append(pd.DataFrame({"run": run.name, "update": bands["update"].astype(int), **values}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "update", *cols])


def bands_chart(frame: pd.DataFrame, cursor: int | None = None, columns: int = 3):
    """One panel per run of ``frame`` (:func:`bands_frame`): light q05-q95, dark q25-q75, the median in black,
    log r = 0 in grey, the cursor dotted; the median's tooltip gives every quantile."""
    import altair as alt

    x = alt.X("update:Q", title="update")
    tips = [alt.Tooltip("run:N"), alt.Tooltip("update:Q")] + [
        alt.Tooltip(f"{c}:Q", format="+.4f", title=f"log r, {c}") for c in ("q05", "q25", "q50", "q75", "q95")]
    outer = alt.Chart().mark_area(opacity=0.2, color="#1f77b4").encode(
        x=x, y=alt.Y("q05:Q", title="log r (quantiles over tokens)"), y2="q95:Q")
    inner = alt.Chart().mark_area(opacity=0.45, color="#1f77b4").encode(x=x, y="q25:Q", y2="q75:Q")
    median = alt.Chart().mark_line(color="black", strokeWidth=1.2, point=alt.OverlayMarkDef(size=12, opacity=0)
                                   ).encode(x=x, y="q50:Q", tooltip=tips)
    zero = alt.Chart().mark_rule(color="grey", strokeWidth=0.6).encode(y=alt.datum(0))
    layers = [outer, inner, median, zero]
    if cursor is not None:
        layers.append(alt.Chart().mark_rule(strokeDash=[3, 3], color="black").encode(x=alt.datum(cursor)))
    width = {1: 640, 2: 360, 3: 250}.get(columns, 185)  # the panels of a row fill the page's main column
    layered = alt.layer(*layers, data=frame).properties(width=width, height=210)
    return (layered.facet(facet=alt.Facet("run:N", title=None), columns=columns).interactive(bind_y=False)
            .configure_axis(**FONT).configure_header(labelFontSize=13))
