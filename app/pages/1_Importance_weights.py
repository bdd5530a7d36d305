"""Page 1: importance weights and masking, token by token (arXiv 2510.01161, Sec. 4 and Algorithm 1).

Widgets are drawn by ``*_ui()`` functions that return values; the numbers come from
``m2po_lab.explorer.weights.explain_batch`` (the registered losses, differentiated by autograd),
cached with ``st.cache_data``; the ``*_chart`` / ``*_section`` functions only draw.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st
from _common import (
    FATE_COLORS,
    NEG_COLOR,
    PAPER,
    POS_COLOR,
    QUADRANT_COLORS,
    count_axis,
    log_r_axis,
    new_figure,
    number,
    page_setup,
    percent,
    show,
    threshold_text,
)

from m2po_lab.explorer.weights import (FATES, METHOD_LABELS, METHODS, explain_batch, loss_sources, shift_comparison,
                                       three_rules)
from m2po_lab.losses import LossConfig
from m2po_lab.explorer.probe import toy_policy_log_ratios
from m2po_lab.explorer.synthetic import synthetic_log_ratios

TAUS = (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)  # log-scale choices; the paper: 0.04

# ---------------------------------------------------------------- where the batch comes from
# Extension point. A source is a label -> *_ui() function that draws its widgets (in the
# sidebar) and returns (generator name, keyword arguments); GENERATORS maps the name to a
# function of those arguments returning (log_ratio, adv, mask), each (B, T). To add
# "log r from a toy policy at staleness s", put its generator in m2po_lab, add it to
# GENERATORS and its widgets function to SOURCES: nothing else on the page changes
# ("toy policy at a staleness" is added that way).
GENERATORS = {"synthetic": synthetic_log_ratios, "toy": toy_policy_log_ratios}


def _tokens_ui() -> dict:
    """Widgets every synthetic source shares: number of tokens, advantage sign mix, seed."""
    n = st.sidebar.slider("number of tokens", 500, 20000, 4000, step=500, key="n_tokens")
    pos_frac = st.sidebar.slider("fraction of tokens with A > 0", 0.0, 1.0, 0.5, step=0.05, key="pos_frac")
    seed = st.sidebar.number_input("seed", 0, 10_000, 0, step=1, key="seed")
    return {"n": int(n), "pos_frac": float(pos_frac), "seed": int(seed)}


def gaussian_ui() -> tuple[str, dict]:
    sigma = st.sidebar.slider("sigma of log r", 0.01, 1.0, 0.2, step=0.01, key="sigma")
    return "synthetic", {"kind": "gaussian", "scale": float(sigma), "dof": 1, **_tokens_ui()}


def student_t_ui() -> tuple[str, dict]:
    dof = st.sidebar.slider("Student-t degrees of freedom (1 = Cauchy)", 1, 30, 2, key="t_dof")
    scale = st.sidebar.slider("scale of log r", 0.01, 0.5, 0.1, step=0.01, key="t_scale")
    return "synthetic", {"kind": "student_t", "scale": float(scale), "dof": int(dof), **_tokens_ui()}


def toy_policy_ui() -> tuple[str, dict]:
    """A real batch: the forking-task policy trained with stale rollouts (a few seconds, cached)."""
    st.sidebar.caption("log r of the last mini-batch of a toy policy trained at this staleness (docs/study.md)")
    staleness = st.sidebar.select_slider("staleness (updates)", [0, 32, 64, 128, 256], value=64, key="toy_staleness")
    method = st.sidebar.selectbox("trained with", ["no_tr", "grpo", "m2po"], key="toy_method")
    seed = st.sidebar.number_input("seed", 0, 10_000, 0, step=1, key="toy_seed")
    return "toy", {"staleness": int(staleness), "method": method, "seed": int(seed)}


SOURCES = {
    "heavy-tailed (Student-t)": student_t_ui,
    "Gaussian": gaussian_ui,
    "toy policy at a staleness": toy_policy_ui,
}


def source_ui() -> tuple[str, tuple]:
    st.sidebar.header("The batch")
    label = st.sidebar.radio("distribution of log r", list(SOURCES), key="source")
    generator, kwargs = SOURCES[label]()
    return generator, tuple(sorted(kwargs.items()))


def method_ui() -> tuple[float, float]:
    st.sidebar.header("The methods")
    tau = st.sidebar.select_slider("M2PO budget tau", options=TAUS, value=0.04, key="tau")
    eps = st.sidebar.slider("GRPO clip eps", 0.05, 0.5, 0.2, step=0.01, key="eps")
    return float(tau), float(eps)


@st.cache_data(max_entries=64, show_spinner=False)
def explained(generator: str, kwargs: tuple, tau: float, eps: float, symlog_x: bool) -> dict:
    log_ratio, adv, mask = GENERATORS[generator](**dict(kwargs))  # (B, T) each
    cfg = LossConfig(tau=tau, eps_low=eps, eps_high=eps)
    ex = explain_batch(log_ratio, adv, mask, cfg, spacing="asinh" if symlog_x else "linear")
    return {**ex, "rules": three_rules(log_ratio, adv, mask, tau=tau)}  # the batch is drawn once


# ---------------------------------------------------------------- drawing
def headline(ex: dict) -> None:
    m2po, grpo = ex["metrics"]["m2po"], ex["metrics"]["grpo"]
    cols = st.columns(5)
    cols[0].metric("M2 before (candidates)", number(m2po["m2po/m2_before"]), help="mean (log r)^2, harmful quadrants")
    cols[1].metric("M2 after M2PO", number(m2po["m2po/m2_after"]), help="the same mean over the kept candidates: <= tau")
    cols[2].metric("M2PO mask fraction", percent(m2po["m2po/mask_frac"]), help="m2po/mask_frac: valid tokens masked")
    cols[3].metric("GRPO clip fraction", percent(grpo["clip/frac"]), help="clip/frac of GRPO: valid tokens clipped")
    cols[4].metric("M2PO threshold |log r|", threshold_text(m2po["m2po/threshold"]), help="smallest masked |log r|")


def _clip_lines(ax, eps: float, threshold: float) -> None:
    for x in (math.log1p(eps), math.log1p(-eps)):
        ax.axvline(x, color=FATE_COLORS["clipped (GRPO)"], ls="--", lw=1)
    if math.isfinite(threshold):
        for x in (threshold, -threshold):
            ax.axvline(x, color=FATE_COLORS["masked (M2PO)"], ls=":", lw=1.5)


def histogram_chart(ex: dict, eps: float, symlog_x: bool) -> None:
    """Mirrored histogram: tokens with A > 0 upwards, A < 0 downwards; harmful quadrants in colour."""
    hist = ex["hist"]
    edges = hist["edges"]
    centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig, ax = new_figure(7, 3.6)
    for (label, counts), color in zip(hist["counts"].items(), QUADRANT_COLORS):
        sign = 1 if label.startswith("A>0") else -1
        ax.bar(centers, sign * counts, widths, color=color, label=label, linewidth=0)
    ax.axhline(0, color="k", lw=0.5)
    _clip_lines(ax, eps, ex["metrics"]["m2po"]["m2po/threshold"])
    count_axis(ax)
    log_r_axis(ax, symlog_x, edges[-1], "log r = logp - old_logp")
    ax.set_ylabel("tokens (A>0 up, A<0 down)")
    ax.legend(fontsize=7, loc="upper left")
    show(fig, "Histogram of log r, A > 0 upwards and A < 0 downwards, harmful quadrants coloured")


def scatter_chart(ex: dict, method: str, symlog_x: bool) -> None:
    lr, adv, fate = ex["log_ratio"], ex["adv"], ex["fate"][method]
    fig, ax = new_figure(7, 3.6)
    xmax, ymax = 1.05 * np.abs(lr).max(), 1.05 * np.abs(adv).max()
    ax.fill_between([0, xmax], 0, ymax, color="#d62728", alpha=0.07, lw=0)
    ax.fill_between([-xmax, 0], -ymax, 0, color="#d62728", alpha=0.07, lw=0)
    for name in FATES:
        sel = fate == name
        if sel.any():
            size, z = (3, 1) if name == "kept" else (14, 2)
            ax.scatter(lr[sel], adv[sel], s=size, c=FATE_COLORS[name], label=f"{name}: {sel.sum()}", zorder=z, lw=0)
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_ylim(-ymax, ymax)
    log_r_axis(ax, symlog_x, xmax)
    ax.set_ylabel("advantage A")
    ax.set_title(f"token fates under {METHOD_LABELS[method]} (shaded: harmful quadrants)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", markerscale=1.5)
    show(fig, f"Scatter of log r against advantage, coloured by token fate under {method}")


def methods_table(ex: dict) -> None:
    rows = [
        {
            "loss name": row["method"],
            "method": METHOD_LABELS[row["method"]],
            "gradient zeroed (clip/frac) %": 100 * row["clip/frac"],
            "weight reduced (is/weight_clip_frac) %": 100 * row["is/weight_clip_frac"],
            "M2 of candidates still trained": row["M2 kept candidates"],
            "max weight": row["max weight"],
        }
        for row in ex["table"]
    ]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        key="methods_table",
        column_config={
            "loss name": st.column_config.TextColumn(width="small"),
            "gradient zeroed (clip/frac) %": st.column_config.NumberColumn(format="%.2f"),
            "weight reduced (is/weight_clip_frac) %": st.column_config.NumberColumn(format="%.2f"),
            "M2 of candidates still trained": st.column_config.NumberColumn(format="%.4f"),
            "max weight": st.column_config.NumberColumn(format="%.3g"),
        },
    )


def weights_chart(ex: dict, symlog_x: bool) -> None:
    lr, pos = ex["log_ratio"], ex["adv"] > 0
    fig, axes = new_figure(11, 4.6, nrows=2, ncols=4, sharex=True, sharey=True)
    w_max = max(np.nanmax(w, initial=0.0) for w in ex["weight"].values())
    big_weights = w_max > 10  # then a symmetric-log y axis
    for i, (ax, name) in enumerate(zip(axes.flat, METHODS)):
        w = ex["weight"][name]
        ax.scatter(lr[pos], w[pos], s=3, c=POS_COLOR, lw=0, label="A > 0")
        ax.scatter(lr[~pos], w[~pos], s=3, c=NEG_COLOR, lw=0, label="A < 0")
        ax.set_title(f"{name}: {percent(ex['zeroed'][name].mean())} zeroed", fontsize=9)
        if big_weights:
            ax.set_yscale("symlog", linthresh=1)
        else:
            ax.set_ylim(-0.05 * w_max, 1.1 * w_max)  # keep 0 (a zeroed gradient) in view
        log_r_axis(ax, symlog_x, 1.05 * np.abs(lr).max(), "log r" if i >= 4 else "", ticks=(0.5, 2, 10, 50))
    for ax in axes[:, 0]:
        ax.set_ylabel("effective weight")
    note = axes.flat[-1]
    note.axis("off")
    note.text(
        0.0,
        0.5,
        "weight = (d loss / d logp) / (-A)\n"
        "no_tr: w = r for every token\n"
        "0 = gradient zeroed\n(clipped, masked or dropped)\n\n"
        "green: A > 0, red: A < 0\n(red drawn on top where\nboth get the same weight)",
        fontsize=8,
        va="center",
    )
    show(fig, "Effective importance weight of each token against log r, one panel per method")


def kl_section(ex: dict) -> None:
    m = ex["metrics"]["m2po"]
    k1, k3, m2 = m["kl/k1"], m["kl/k3"], m["m2po/m2_all"]
    cols = st.columns(3)
    cols[0].metric("KL k1 = mean(-log r)", number(k1))
    cols[1].metric("KL k3 = mean(r - 1 - log r)", number(k3))
    cols[2].metric("M2 = mean (log r)^2 (all tokens)", number(m2))
    ratio = abs(k1) / m2 if m2 > 0 else 0.0
    st.markdown(
        f"""
Both KL estimators read `KL(π_behav ‖ π_θ)` off the same tokens. **k1 averages signed
log-ratios**, so a token whose probability rose cancels one whose probability fell: on this
batch |k1| is {ratio:.0%} of M2. **k3** never cancels (each term is ≥ 0), but it is lopsided:
for large shifts a token with `log r = +d` counts about `e^d`, one with `log r = −d` only
about `d`. **M2** is symmetric, cannot cancel, and grows with the variance of the weights,
so a few outliers show up in it ({PAPER}, Sec. 4.1).
"""
    )
    d = st.slider("shift d of log r in a two-token batch", 0.05, 3.0, 1.0, step=0.05, key="kl_shift")
    rows = [{"batch (log r of the two tokens)": k, **v} for k, v in shift_comparison(d).items()]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="kl_table")
    st.caption("'+d and -d': k1 is exactly 0 (the shifts cancel) while M2 = d^2 reports them.")


def code_section(method: str) -> None:
    with st.expander(f"Show the code: the registered loss '{method}'"):
        for title, source in loss_sources(method).items():
            st.caption(title)
            st.code(source, language="python")


# ---------------------------------------------------------------- the page
page_setup("Importance weights and masking")
st.markdown(
    f"""
Each token of a stale batch has a log-ratio `log r = logp − old_logp` and an advantage `A`.
The **harmful quadrants** are `A > 0, r > 1` and `A < 0, r < 1`: there the update pushes `r`
further from 1, and there PPO's clip acts. GRPO zeroes every such token with `|r − 1| > ε`;
M2PO ({PAPER}, Algorithm 1) masks only the largest `(log r)²` until the candidates' mean
`M2 ≤ τ`. Move the sliders in the sidebar.
"""
)
generator, kwargs = source_ui()
tau, eps = method_ui()
symlog_x = st.sidebar.checkbox("symmetric-log axis of log r (linear within |log r| < 0.5)", value=True, key="symlog_x")
ex = explained(generator, kwargs, tau, eps, symlog_x)

headline(ex)

left, right = st.columns(2)
with left:
    st.subheader("log r, by quadrant")
    histogram_chart(ex, eps, symlog_x)
    st.caption("Dashed red: GRPO's clip at log(1 ± eps). Dotted blue: ± M2PO's threshold (if it masks any token).")
with right:
    st.subheader("What one method does to each token")
    method = st.selectbox(
        "method", METHODS, index=METHODS.index("m2po"), format_func=lambda k: METHOD_LABELS[k], key="method"
    )
    scatter_chart(ex, method, symlog_x)

st.subheader("Every method on this batch")
methods_table(ex)
st.subheader("The three published M2PO rules on this batch")
st.dataframe(pd.DataFrame(ex["rules"]), hide_index=True, use_container_width=True)
st.caption("tokens zeroed: valid tokens (A != 0) whose gradient the rule zeroes; M2 after: mean (log r)^2 of the "
           "candidates that keep a gradient (AReaL: every token is a candidate); grad norm: of the token-mean loss "
           "with respect to logp. No proximal policy here, so AReaL's rule is its mask plus a PPO clip at 0.2.")
st.subheader("The gradient weight each token gets")
weights_chart(ex, symlog_x)

st.subheader("KL estimators beside M2")
kl_section(ex)

code_section(method)
