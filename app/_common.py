"""UI helpers shared by the explorer's pages (no algorithm here: that lives in m2po_lab)."""

from __future__ import annotations

import math

import streamlit as st
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

PAPER = "arXiv 2510.01161"
PAPER_URL = "https://arxiv.org/abs/2510.01161"

# One colour per token fate / quadrant, the same on every page.
FATE_COLORS = {
    "kept": "#9e9e9e",
    "clipped (GRPO)": "#d62728",
    "masked (M2PO)": "#1f77b4",
    "clipped (released rule)": "#9467bd",
    "dropped (MIS)": "#8c564b",
    "reweighted (TIS)": "#ff7f0e",
    "reweighted (CISPO)": "#e377c2",
}
QUADRANT_COLORS = ("#d62728", "#ff7f0e", "#7f9fbf", "#b0b0b0")
POS_COLOR, NEG_COLOR = "#2ca02c", "#d62728"


def page_setup(title: str, icon: str = "📉") -> None:
    """Page config (wide layout) and title; call first on every page."""
    st.set_page_config(page_title=f"m2po-lab · {title}", page_icon=icon, layout="wide")
    st.title(title)


def new_figure(width: float = 7.0, height: float = 3.2, **subplots) -> tuple[Figure, object]:
    """A Matplotlib figure outside pyplot's global state (safe across Streamlit sessions)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(**subplots)


def show(fig: Figure, alt: str) -> None:
    """Draw ``fig`` (an ``stImage`` in the page); ``alt`` is its accessible description."""
    st.pyplot(fig, alt=alt)


SYMLOG_LINTHRESH = 0.5
"""A symmetric-log axis of log r is linear within |log r| < 0.5, logarithmic beyond."""
_LOG_R_TICKS = (0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


def log_r_axis(ax, symlog: bool, limit: float, label: str = "log r", ticks=_LOG_R_TICKS) -> None:
    """x axis of log r on [-limit, limit]: linear, or symmetric-log with readable plain ticks."""
    ax.set_xlim(-limit, limit)
    ax.set_xlabel(label)
    if not symlog or limit <= SYMLOG_LINTHRESH:  # all inside the linear part: a plain axis
        ax.xaxis.set_major_locator(MaxNLocator(5, symmetric=True))
        return
    ax.set_xscale("symlog", linthresh=SYMLOG_LINTHRESH)
    ticks = [t for t in ticks if t <= limit]
    ax.xaxis.set_major_locator(FixedLocator(sorted([0.0, *ticks, *(-t for t in ticks)])))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_locator(NullLocator())


def count_axis(ax) -> None:
    """A symmetric-log y axis of token counts, labelled with absolute values (for mirrored bars)."""
    ax.set_yscale("symlog", linthresh=1)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{abs(y):g}"))


def percent(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def number(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}"


def threshold_text(x: float, digits: int = 3) -> str:
    """A threshold that is ``inf`` when nothing is cut."""
    return "none (inf)" if math.isinf(x) else f"{x:.{digits}g}"
