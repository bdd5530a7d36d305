"""UI helpers shared by the explorer's pages (no algorithm here: that lives in m2po_lab)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import streamlit as st
from matplotlib.figure import Figure

from m2po_lab import rundir as rd
from m2po_lab.explorer.launcher import RUNS_ROOT_ENV  # set by m2po-lab app --runs-root DIR

PAPER = "arXiv 2510.01161"
PAPER_URL = "https://arxiv.org/abs/2510.01161"


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


def percent(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def number(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}"


def threshold_text(x: float, digits: int = 3) -> str:
    """A threshold that is ``inf`` when nothing is cut."""
    return "none (inf)" if math.isinf(x) else f"{x:.{digits}g}"


# ---------------------------------------------------------------- directories below the runs root
STATUS_TEXT = {
    "finished": "finished",
    "running": "being written now (a process holds its lock): what is shown is what is written so far",
    "incomplete": "incomplete: stopped before the end (resume it with the same command); what is shown is partial",
}


def runs_root() -> Path:
    return Path(os.environ.get(RUNS_ROOT_ENV) or os.getcwd()).resolve()


def _label(entry, root: Path) -> str:
    rel = os.path.relpath(entry.path, root)
    what = f"study: {', '.join(entry.methods)}; staleness {list(entry.staleness)}" if entry.kind == "study" else \
        f"LLM run: {entry.methods[0]} s={entry.staleness[0] if entry.staleness else '?'}"
    return f"{rel} ({what}; {entry.status})"


def directory_ui(kinds: tuple[str, ...], key: str, default_rel: str | None = None) -> str | None:
    """Pick a run or study directory: those found below the runs root, or a typed path (``?dir=`` fills it).

    Returns the resolved path, or None (with a message on the page) when nothing usable is chosen.
    """
    root = runs_root()
    entries = [e for e in rd.discover(root) if e.kind in kinds]
    labels = {_label(e, root): e.path for e in entries}
    typed = st.sidebar.text_input(
        "or a path", value=st.query_params.get("dir", ""), key=f"{key}_dir",
        help=f"a directory below the runs root {root} (m2po-lab app --runs-root DIR to widen it)")
    if typed.strip():
        try:
            return str(rd.under_root(typed.strip(), root))
        except rd.RunDirError as e:
            st.error(str(e))
            return None
    if not labels:
        st.info(f"No {' or '.join(kinds)} directory found below the runs root `{root}`. Write one "
                "(`m2po-lab study --out runs/study`, `m2po-lab train-llm --preset tiny-arith --out runs/tiny`), "
                "or type a path in the sidebar.")
        return None
    names = list(labels)
    wanted = {str((base / default_rel).resolve()) for base in (root, Path.cwd())} if default_rel else set()
    default = next((i for i, n in enumerate(names) if labels[n] in wanted), 0)  # runs/study, from the root or cwd
    choice = st.sidebar.selectbox(f"found below {root}", names, index=default, key=f"{key}_found",
                                  help="newest first")
    return labels[choice]


def status_note(status: str, torn: bool = False, missing: int = 0, name: str | None = None) -> None:
    """A warning when a directory is not a finished, whole run."""
    what = f"Run {name}" if name else "This directory"
    parts = [] if status == "finished" else [f"{what} is {STATUS_TEXT[status]}."]
    if missing:
        parts.append(f"{missing} of its runs have logged nothing yet (or lost their metrics.jsonl).")
    if torn:
        parts.append(f"{'Its' if not name else name + ':'} torn last line (a write in progress, or a kill "
                     "mid-write) was left out.")
    if parts:
        st.warning(" ".join(parts))
