"""Interactive token-level charts of the importance-weights page (Altair / Vega-Lite).

Each takes the dict of :func:`m2po_lab.explorer.weights.explain_batch` and returns an Altair
chart: hover a mark for its numbers (token, log r, r, A and what each method did to it),
drag to pan and scroll to zoom the log r axis, click a legend entry to show one group
(shift-click adds more). The page draws them with ``st.altair_chart``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .charts import FONT
from .weights import METHODS, QUADRANTS

FATE_COLORS = {
    "kept": "#9e9e9e",
    "clipped (GRPO)": "#d62728",
    "masked (M2PO)": "#1f77b4",
    "clipped (released rule)": "#9467bd",
    "dropped (MIS)": "#8c564b",
    "reweighted (TIS)": "#ff7f0e",
    "reweighted (CISPO)": "#e377c2",
    "zeroed": "#000000",
}
"""One colour per token fate, the same on every page and chart."""
QUADRANT_COLORS = dict(zip(QUADRANTS, ("#d62728", "#ff7f0e", "#7f9fbf", "#b0b0b0")))
SIGN_COLORS = {"A > 0": "#2ca02c", "A < 0": "#d62728"}
SYMLOG_CONSTANT = 0.1
"""A symmetric-log axis of log r is about linear within |log r| < 0.1 (the asinh bins' width)."""


def _log_r_scale(symlog: bool):
    import altair as alt

    return alt.Scale(type="symlog", constant=SYMLOG_CONSTANT) if symlog else alt.Scale(zero=False)


def token_frame(ex: dict, max_kept: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per shown token: token (its name), log_ratio, r, adv, candidate and, per method m,
    ``fate:m`` and ``weight:m``.

    Every token some method zeroes or reweights is shown; of those every method keeps, at most
    ``max_kept`` drawn at random (seeded), so a 20,000-token batch stays quick to draw."""
    pos = ex["position"]
    frame = pd.DataFrame({
        "token": [f"sequence {b}, position {t}" for b, t in pos],
        "log_ratio": ex["log_ratio"], "r": np.exp(ex["log_ratio"]), "adv": ex["adv"],
        "candidate": ex["candidates"].astype(bool),
    })
    for m in METHODS:
        if m in ex["fate"]:
            frame[f"fate:{m}"] = ex["fate"][m]
            frame[f"weight:{m}"] = ex["weight"][m]
    fates = frame[[c for c in frame.columns if c.startswith("fate:")]]
    plain = (fates == "kept").all(axis=1).to_numpy()
    keep = ~plain
    idx = np.flatnonzero(plain)
    if len(idx) > max_kept:
        idx = np.random.default_rng(seed).choice(idx, max_kept, replace=False)
    keep[idx] = True
    return frame[keep].reset_index(drop=True)


def _token_tooltip(alt, method: str | None = None) -> list:
    tips = [alt.Tooltip("token:N"), alt.Tooltip("log_ratio:Q", format=".4f", title="log r"),
            alt.Tooltip("r:Q", format=".4g", title="r"), alt.Tooltip("adv:Q", format=".3f", title="A")]
    if method is not None:
        tips += [alt.Tooltip("fate:N", title=f"under {method}"), alt.Tooltip("weight:Q", format=".4g")]
    return tips


def histogram_chart(ex: dict, eps: float, symlog: bool):
    """Mirrored histogram of log r: A > 0 upwards, A < 0 downwards, one colour per quadrant; GRPO's
    clip at log(1 +- eps) dashed, M2PO's threshold dotted. Empty bins are not drawn."""
    import altair as alt

    edges, rows = ex["hist"]["edges"], []
    for quadrant, counts in ex["hist"]["counts"].items():
        sign = 1 if quadrant.startswith("A>0") else -1
        for lo, hi, c in zip(edges[:-1], edges[1:], counts):
            if c:
                rows.append({"quadrant": quadrant, "lo": lo, "hi": hi, "tokens": int(c), "height": sign * int(c),
                             "r from": math.exp(lo), "r to": math.exp(hi)})
    bars = alt.Chart(pd.DataFrame(rows)).mark_rect(opacity=0.85).encode(
        x=alt.X("lo:Q", title="log r = logp - old_logp", scale=_log_r_scale(symlog)), x2="hi:Q",
        y=alt.Y("height:Q", title="tokens (A>0 up, A<0 down)", scale=alt.Scale(type="symlog")),
        y2=alt.datum(0),
        color=alt.Color("quadrant:N",
                        scale=alt.Scale(domain=list(QUADRANT_COLORS), range=list(QUADRANT_COLORS.values())),
                        legend=alt.Legend(orient="bottom", columns=2, title="quadrant (click to show one)")),
        tooltip=[alt.Tooltip("quadrant:N"), alt.Tooltip("tokens:Q"),
                 alt.Tooltip("lo:Q", format=".3f", title="log r from"),
                 alt.Tooltip("hi:Q", format=".3f", title="log r to"), alt.Tooltip("r from:Q", format=".3g"),
                 alt.Tooltip("r to:Q", format=".3g")],
    )
    pick = alt.selection_point(fields=["quadrant"], bind="legend")
    bars = bars.encode(opacity=alt.condition(pick, alt.value(0.85), alt.value(0.1))).add_params(pick)
    return (alt.layer(bars, *_threshold_rules(ex, eps)).properties(height=360).interactive(bind_y=False)
            .configure_axis(**FONT).configure_legend(**FONT))


def _threshold_rules(ex: dict, eps: float) -> list:
    import altair as alt

    lines = [{"log r": math.log1p(eps), "line": f"GRPO clip log(1+{eps:g})"},
             {"log r": math.log1p(-eps), "line": f"GRPO clip log(1-{eps:g})"}]
    threshold = ex["metrics"]["m2po"]["m2po/threshold"]
    if math.isfinite(threshold):
        lines += [{"log r": s * threshold, "line": "M2PO threshold"} for s in (1, -1)]
    frame = pd.DataFrame(lines)
    grpo = alt.Chart(frame[frame["line"] != "M2PO threshold"]).mark_rule(
        strokeDash=[5, 3], color=FATE_COLORS["clipped (GRPO)"])
    m2po = alt.Chart(frame[frame["line"] == "M2PO threshold"]).mark_rule(
        strokeDash=[2, 2], strokeWidth=2, color=FATE_COLORS["masked (M2PO)"])
    enc = {"x": "log r:Q", "tooltip": [alt.Tooltip("line:N"), alt.Tooltip("log r:Q", format=".4f")]}
    return [grpo.encode(**enc), m2po.encode(**enc)] if math.isfinite(threshold) else [grpo.encode(**enc)]


def scatter_chart(frame: pd.DataFrame, method: str, symlog: bool):
    """log r against A for the tokens of :func:`token_frame`, coloured by their fate under ``method``;
    the harmful quadrants shaded."""
    import altair as alt

    df = frame.assign(fate=frame[f"fate:{method}"], weight=frame[f"weight:{method}"])
    xmax = 1.05 * float(np.abs(df["log_ratio"]).max()) if len(df) else 1.0
    ymax = 1.05 * float(np.abs(df["adv"]).max()) if len(df) else 1.0
    shade = alt.Chart(pd.DataFrame({"x": [0, -xmax], "x2": [xmax, 0], "y": [0, -ymax], "y2": [ymax, 0]})).mark_rect(
        color="#d62728", opacity=0.07).encode(x="x:Q", x2="x2:Q", y="y:Q", y2="y2:Q")
    pick = alt.selection_point(fields=["fate"], bind="legend")
    fates = [f for f in FATE_COLORS if f in set(df["fate"])]
    points = alt.Chart(df).mark_circle().encode(
        x=alt.X("log_ratio:Q", title="log r", scale=_log_r_scale(symlog)),
        y=alt.Y("adv:Q", title="advantage A"),
        color=alt.Color("fate:N", scale=alt.Scale(domain=fates, range=[FATE_COLORS[f] for f in fates]),
                        legend=alt.Legend(orient="bottom", columns=3,
                                          title=f"fate under {method} (click to show one)")),
        size=alt.condition(alt.datum.fate == "kept", alt.value(12), alt.value(40)),
        opacity=alt.condition(pick, alt.value(0.9), alt.value(0.05)),
        tooltip=_token_tooltip(alt, method),
    ).add_params(pick)
    return alt.layer(shade, points).properties(height=360).interactive().configure_axis(**FONT).configure_legend(**FONT)


def weights_frame(frame: pd.DataFrame, methods=METHODS) -> pd.DataFrame:
    """:func:`token_frame` in long format: one row per (token, method) with its weight and fate."""
    parts = [frame[["token", "log_ratio", "r", "adv"]].assign(
        method=m, weight=frame[f"weight:{m}"], fate=frame[f"fate:{m}"],
        sign=np.where(frame["adv"] > 0, "A > 0", "A < 0")) for m in methods if f"fate:{m}" in frame]
    return pd.concat(parts, ignore_index=True)


def weights_chart(frame: pd.DataFrame, symlog: bool, methods=METHODS):
    """Effective gradient weight of each token against log r, one panel per method; a click on a
    token highlights it in every panel (shift-click adds more)."""
    import altair as alt

    df = weights_frame(frame, methods)
    w_max = float(df["weight"].max()) if len(df) else 1.0
    big = w_max > 10  # then a symmetric-log weight axis, with plain ticks
    ticks = [v for v in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 1e4, 1e5, 1e6) if v <= w_max]
    token = alt.selection_point(fields=["token"], on="click", clear="dblclick")
    base = alt.Chart().mark_circle().encode(
        x=alt.X("log_ratio:Q", title="log r", scale=_log_r_scale(symlog)),
        y=alt.Y("weight:Q", title="effective weight" + (" (symlog)" if big else ""),
                scale=alt.Scale(type="symlog") if big else alt.Scale(),
                axis=alt.Axis(values=ticks) if big else alt.Axis()),
        color=alt.Color("sign:N", scale=alt.Scale(domain=list(SIGN_COLORS), range=list(SIGN_COLORS.values())),
                        legend=alt.Legend(orient="bottom", title="advantage")),
        size=alt.condition(token, alt.value(60), alt.value(10)),
        opacity=alt.condition(token, alt.value(0.9), alt.value(0.15)),
        tooltip=[alt.Tooltip("method:N"), *_token_tooltip(alt, "this method")],
    ).add_params(token).properties(width=185, height=160)
    return (alt.layer(base, data=df).facet(facet=alt.Facet("method:N", sort=list(methods), title=None), columns=4)
            .configure_axis(**FONT).configure_legend(**FONT).configure_header(labelFontSize=13))
