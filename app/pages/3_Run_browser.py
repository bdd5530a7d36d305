"""Page 3: browse run directories (docs/run_format.md): toy runs, LLM runs, or the runs of a study.

Every number comes from ``m2po_lab.rundir`` and ``m2po_lab.explorer.analysis`` (reading and checking the directory, cached on
(path, file mtimes)); the ``*_chart`` / ``*_section`` functions only draw. A directory that
cannot be read shows what is wrong with it (``rd.RunDirError``), never a traceback.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd
import streamlit as st
from _common import PAPER, directory_ui, new_figure, page_setup, show, status_note

from m2po_lab import rundir as rd
from m2po_lab.explorer import analysis as an
from m2po_lab.explorer import charts
from m2po_lab.llm.study_records import AMP_KEY

DEFAULT_METRICS = ("reward", "eval/reward", "eval/accuracy", "clip/frac", "is/m2")
MAX_DEFAULT_RUNS = 4
BAND_COLOR = "#1f77b4"


# ---------------------------------------------------------------- widgets and loading
def dir_ui() -> str | None:
    return directory_ui(("study", "llm"), key="run", default_rel="runs/study")


@st.cache_data(max_entries=64, show_spinner=False)
def load_run(path: str, signature: tuple) -> rd.Run:
    """``signature`` (file mtimes and sizes) makes a changed run a new cache entry."""
    return rd.load_run(path)


def runs_ui(path: str) -> list[rd.Run]:
    """The runs found under ``path`` that the reader picks, loaded; errors shown per run."""
    found = rd.find_runs(path)
    names = list(found)
    chosen = names
    if len(names) > 1:
        chosen = st.sidebar.multiselect("runs to overlay", names, default_runs(path, names), key=f"runs@{path}")
    loaded = []
    for name in chosen:
        try:
            loaded.append(load_run(str(found[name]), rd.dir_signature(found[name])))
        except rd.RunDirError as e:
            st.error(f"Cannot read run {name}: {e}")
    return loaded


def default_runs(path: str, names: list[str]) -> list[str]:
    """A study compared across methods: the first seed of every method at the highest staleness."""
    if not rd.is_study_dir(path):
        return names[:MAX_DEFAULT_RUNS]
    cfg = rd.read_config(path, "study")["config"]
    hi, seed = max(cfg["staleness"]), min(cfg["seeds"])
    picked = [rd.run_name(m, hi, seed) for m in cfg["methods"] if rd.run_name(m, hi, seed) in names]
    return picked or names[:MAX_DEFAULT_RUNS]


def metrics_ui(loaded: list[rd.Run]) -> tuple[list[str], list[str], int]:
    keys = an.numeric_keys(loaded)
    default = [k for k in DEFAULT_METRICS if k in keys]
    metrics = st.multiselect("metrics", keys, default, key="metrics")
    log_y = st.sidebar.multiselect("log-scale y axis for", metrics, key="log_metrics")
    window = st.sidebar.slider("smoothing (trailing mean over updates)", 1, 50, 1, key="smooth")
    return metrics, log_y, window


def cursor_ui(loaded: list[rd.Run]) -> int:
    lo, hi = an.update_range(loaded)
    if lo == hi:
        st.caption(f"One update logged: {lo}.")
        return hi
    return st.slider("update (cursor)", lo, hi, hi, key="cursor",
                     help="the table, the dotted lines and the masked tokens are read at this update")


# ---------------------------------------------------------------- drawing
def values_table(loaded: list[rd.Run], metrics: list[str], cursor: int) -> None:
    if not metrics:
        return
    rows = {}
    for run in loaded:
        vals = an.values_at(run, metrics, cursor)
        rows[run.name] = {k: "—" if v is None else f"{v:.4g}" for k, v in vals.items()}  # "-" is a markdown list
    st.markdown(f"**Values at update {cursor}** (latest logged value at or before it)")
    st.table(pd.DataFrame.from_dict(rows, orient="index"))


def metric_charts(loaded: list[rd.Run], metrics: list[str], log_y: list[str], window: int, cursor: int,
                  interactive: bool) -> None:
    if interactive:
        for i in range(0, len(metrics), 2):
            for col, key in zip(st.columns(2), metrics[i : i + 2]):
                frame = charts.metric_frame(loaded, key, window)
                chart = charts.metric_chart(frame, key, key in log_y, cursor, [r.name for r in loaded])
                col.altair_chart(chart, width="stretch")
        return
    for i in range(0, len(metrics), 2):
        cols = st.columns(2)
        for col, key in zip(cols, metrics[i : i + 2]):
            with col:
                fig, ax = new_figure(6, 2.8)
                for j, run in enumerate(loaded):
                    x, y = an.series(run, key)
                    if len(x):
                        ax.plot(x, an.smooth(y, window), color=f"C{j}", label=run.name, lw=1.2)
                ax.axvline(cursor, color="k", ls=":", lw=1)
                if key in log_y:
                    ax.set_yscale("symlog", linthresh=1e-4)
                ax.set(xlabel="update", title=key)
                ax.legend(fontsize=7)
                show(fig, f"{key} over updates, one line per run")


def _band_columns(n: int) -> int:
    """Panels per row: every run in one row up to 4 (a study's methods at one staleness), else rows of 3."""
    return n if n <= 4 else 3


def bands_section(loaded: list[rd.Run], cursor: int, interactive: bool) -> None:
    frame = charts.bands_frame(loaded)
    if frame.empty:
        st.info("No is/log_ratio_quantiles records in these runs.")
        return
    if interactive:
        st.altair_chart(charts.bands_chart(frame, cursor, columns=_band_columns(frame["run"].nunique())), width="content")
        return
    names = list(dict.fromkeys(frame["run"]))
    ncols = min(len(names), 4)
    nrows = -(-len(names) // ncols)
    fig, axes = new_figure(3.5 * ncols, 2.8 * nrows, nrows=nrows, ncols=ncols, sharey=True, squeeze=False)
    for ax, name in zip(axes.flat, names):
        b = frame[frame["run"] == name]
        for lo, hi, alpha in (("q05", "q95", 0.2), ("q25", "q75", 0.45)):
            ax.fill_between(b["update"], b[lo], b[hi], color=BAND_COLOR, alpha=alpha, lw=0, label=f"{lo}-{hi}")
        ax.plot(b["update"], b["q50"], color="k", lw=1, label="median")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(cursor, color="k", ls=":", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("update")
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    axes[0][0].set_ylabel("log r")
    axes[0][0].legend(fontsize=7, loc="upper left")
    st.pyplot(fig, alt="Quantile bands of log r over updates, one panel per run", width="content" if ncols == 1
              else "stretch")


def tokens_html(tokens: list[dict]) -> str:
    """A table of masked tokens: the context, then the token highlighted, and its log r."""
    cell = "font-family:monospace;white-space:pre-wrap;padding:2px 8px"
    rows = "".join(
        f"<tr><td style='{cell};text-align:right'>…{html.escape(t.get('text', ''))}"
        f"<mark style='background:#ffd54f'>{html.escape(t.get('token', ''))}</mark></td>"
        f"<td style='{cell}'>{t.get('log_ratio', float('nan')):+.3f}</td></tr>"
        for t in tokens
    )
    return f"<table><tr><th>context, then the masked token</th><th>log_ratio</th></tr>{rows}</table>"


def amplified_html(tokens: list[dict]) -> str:
    """A table of the kept tokens with the largest r: the context, the token highlighted, log r, r and A."""
    cell = "font-family:monospace;white-space:pre-wrap;padding:2px 8px"
    rows = "".join(
        f"<tr><td style='{cell};text-align:right'>…{html.escape(t.get('text', ''))}"
        f"<mark style='background:#90caf9'>{html.escape(t.get('token', ''))}</mark></td>"
        f"<td style='{cell}'>{t.get('log_ratio', float('nan')):+.3f}</td>"
        f"<td style='{cell}'>{math.exp(min(t.get('log_ratio', float('nan')), 50)):.3g}</td>"
        f"<td style='{cell}'>{t.get('adv', float('nan')):+.2f}</td></tr>"
        for t in tokens
    )
    return (f"<table><tr><th>context, then the token that kept its gradient</th><th>log_ratio</th><th>r</th>"
            f"<th>A</th></tr>{rows}</table>")


def amplified_section(run: rd.Run, cursor: int) -> None:
    found, tokens = an.record_at(run, cursor, AMP_KEY)
    if found is None:
        st.caption(f"{run.name}: no tokens/amplified record at or before update {cursor} (logged every hist_every "
                   "updates by the LLM trainer).")
        return
    st.markdown(f"{run.name}: the {len(tokens)} tokens of update **{found}** that kept their gradient with the "
                "largest importance weight r (the latest record at or before the cursor): what a loss without a "
                "trust region amplifies, r x A, when A > 0.")
    st.markdown(amplified_html(tokens), unsafe_allow_html=True)


def masked_section(loaded: list[rd.Run], cursor: int) -> None:
    llm = [r for r in loaded if r.kind == "llm"]
    if not llm:
        st.caption("Masked tokens are logged by LLM runs only (config.json kind 'llm', rows with tokens/zeroed).")
        return
    names = [r.name for r in llm]
    name = st.selectbox("LLM run", names, key="llm_run") if len(names) > 1 else names[0]
    run = llm[names.index(name)]
    found, tokens = an.masked_tokens_at(run, cursor)
    total = an.masked_token_count(run)
    if found is None:
        st.info(f"{run.name}: no masked tokens logged at or before update {cursor} ({total} in the whole run).")
    else:
        st.markdown(f"{run.name}: the {len(tokens)} zeroed tokens of update **{found}** with the largest "
                    f"|log r| (the latest logged at or before the cursor; {total} in the whole run).")
        st.markdown(tokens_html(tokens), unsafe_allow_html=True)
    amplified_section(run, cursor)


# ---------------------------------------------------------------- the page
page_setup("Run browser")
st.markdown(
    f"""
Open any run directory written by `m2po-lab study` or the LLM trainer (docs/run_format.md),
overlay runs, and follow the importance ratios: the bands are quantiles of
`log r = logp − old_logp` over the valid tokens of the trained batch ({PAPER}, Sec. 4).
"""
)
path = dir_ui()
if path is None:
    st.stop()
try:
    loaded = runs_ui(path)
except rd.RunDirError as e:
    if rd.is_locked(path) and not (Path(path) / rd.METRICS).exists():  # e.g. an LLM run in its SFT warm start
        st.info(f"`{path}` is running and has not logged an update yet (an LLM run logs its first row after "
                "the SFT warm start). It shows here once it has; pick another directory in the sidebar meanwhile.")
    else:
        st.error(f"Cannot open this directory: {e}")
    st.stop()
if not loaded:
    st.info("Pick at least one readable run in the sidebar.")
    st.stop()

for r in loaded:
    status_note(r.status, r.torn, name=r.name)
kinds = sorted({r.kind for r in loaded})
st.caption(f"`{path}`: {len(loaded)} run(s) shown, kind {', '.join(kinds)}, "
           f"{sum(len(r.rows) for r in loaded)} logged updates.")
metrics, log_y, window = metrics_ui(loaded)
cursor = cursor_ui(loaded)
values_table(loaded, metrics, cursor)
interactive = st.sidebar.checkbox("interactive charts (tooltips, zoom, click a run in the legend)", value=True,
                                  key="interactive")
metric_charts(loaded, metrics, log_y, window, cursor, interactive)
st.subheader("Importance ratios: quantiles of log r")
bands_section(loaded, cursor, interactive)
st.caption("Light: q05 to q95; dark: q25 to q75; black: the median. Recorded every hist_every updates.")
st.subheader("Masked and amplified tokens (LLM runs): what the loss zeroed, what it weighted most")
masked_section(loaded, cursor)
