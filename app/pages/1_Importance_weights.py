"""Page 1: importance weights and masking, token by token (arXiv 2510.01161, Sec. 4 and Algorithm 1).

Widgets are drawn by ``*_ui()`` functions that return values; the numbers come from
``m2po_lab.explorer.weights.explain_batch`` (the registered losses, differentiated by autograd),
cached with ``st.cache_data``; the ``*_section`` functions only draw, with the interactive charts of
``m2po_lab.explorer.token_charts``.
"""

from __future__ import annotations


import pandas as pd
import streamlit as st
from _common import PAPER, number, page_setup, percent, threshold_text

from m2po_lab.explorer import token_charts as tc
from m2po_lab.explorer.weights import (METHOD_LABELS, METHODS, explain_batch, loss_sources, shift_comparison,
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


@st.cache_data(max_entries=64, show_spinner=False)
def tokens_shown(generator: str, kwargs: tuple, tau: float, eps: float, symlog_x: bool) -> pd.DataFrame:
    return tc.token_frame(explained(generator, kwargs, tau, eps, symlog_x), max_kept=1500)


# ---------------------------------------------------------------- drawing
def headline(ex: dict) -> None:
    m2po, grpo = ex["metrics"]["m2po"], ex["metrics"]["grpo"]
    cols = st.columns(5)
    cols[0].metric("M2 before (candidates)", number(m2po["m2po/m2_before"]), help="mean (log r)^2, harmful quadrants")
    cols[1].metric("M2 after M2PO", number(m2po["m2po/m2_after"]), help="the same mean over the kept candidates: <= tau")
    cols[2].metric("M2PO mask fraction", percent(m2po["clip/frac"]), help="clip/frac of m2po: valid tokens masked")
    cols[3].metric("GRPO clip fraction", percent(grpo["clip/frac"]), help="clip/frac of GRPO: valid tokens clipped")
    cols[4].metric("M2PO threshold |log r|", threshold_text(m2po["m2po/threshold"]), help="smallest masked |log r|")


def histogram_section(ex: dict, eps: float, symlog_x: bool) -> None:
    st.altair_chart(tc.histogram_chart(ex, eps, symlog_x), width="stretch")
    st.caption("Mirrored histogram of log r: A > 0 upwards, A < 0 downwards, harmful quadrants in red and orange; "
               "symmetric-log count axis, empty bins not drawn. Dashed red: GRPO's clip at log(1 ± eps). Dotted "
               "blue: ± M2PO's threshold (if it masks any token). Hover a bar for its counts; scroll to zoom.")


def scatter_section(ex: dict, frame: pd.DataFrame, method: str, symlog_x: bool) -> None:
    st.altair_chart(tc.scatter_chart(frame, method, symlog_x), width="stretch")
    shown = len(frame)
    st.caption(f"log r against A, coloured by what {METHOD_LABELS[method]} does to each token; shaded: the harmful "
               f"quadrants. {shown:,} of {len(ex['log_ratio']):,} tokens shown: every token some method zeroes or "
               "reweights, and a random sample of the rest. Hover a token for its numbers.")


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


def weights_section(frame: pd.DataFrame, symlog_x: bool) -> None:
    st.altair_chart(tc.weights_chart(frame, symlog_x), width="content")
    st.caption("weight = (d loss / d logp) / (-A), the factor each token's gradient gets; no_tr: w = r for every "
               "token; 0 = gradient zeroed (clipped, masked or dropped). Click a token to find it in every panel "
               "(double-click clears); hover for its numbers.")


def kl_section(ex: dict) -> None:
    m = ex["metrics"]["m2po"]
    k1, k3, m2 = m["kl/k1"], m["kl/k3"], m["is/m2"]
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
symlog_x = st.sidebar.checkbox("symmetric-log axis of log r (about linear within |log r| < 0.1)", value=True, key="symlog_x")
ex = explained(generator, kwargs, tau, eps, symlog_x)
frame = tokens_shown(generator, kwargs, tau, eps, symlog_x)

headline(ex)

left, right = st.columns(2)
with left:
    st.subheader("log r, by quadrant")
    histogram_section(ex, eps, symlog_x)
with right:
    st.subheader("What one method does to each token")
    method = st.selectbox(
        "method", METHODS, index=METHODS.index("m2po"), format_func=lambda k: METHOD_LABELS[k], key="method"
    )
    scatter_section(ex, frame, method, symlog_x)

st.subheader("Every method on this batch")
methods_table(ex)
st.subheader("The three published M2PO rules on this batch")
st.dataframe(pd.DataFrame(ex["rules"]), hide_index=True, width="stretch")
st.caption("tokens zeroed: valid tokens (A != 0) whose gradient the rule zeroes; M2 after: mean (log r)^2 of the "
           "candidates that keep a gradient (AReaL: every token is a candidate); grad norm: of the token-mean loss "
           "with respect to logp. No proximal policy here, so AReaL's rule is its mask plus a PPO clip at 0.2.")
st.subheader("The gradient weight each token gets")
weights_section(frame, symlog_x)

st.subheader("KL estimators beside M2")
kl_section(ex)

code_section(method)
