"""Page 2: the staleness study of arXiv 2510.01161 on the toy task.

Run a small study live (``m2po_lab.study.run_study`` into a cache folder named by the hash of
the config, so the same settings are trained once), or open a study directory
(docs/run_format.md). Everything shown is read back from the directory by ``m2po_lab.rundir`` and ``m2po_lab.explorer.analysis``,
cached on (path, file mtimes); the ``*_section`` functions only draw, with the interactive charts of
``m2po_lab.explorer.charts``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from _common import PAPER, directory_ui, number, page_setup, percent, runs_root, status_note

from m2po_lab import rundir as rd
from m2po_lab.explorer import analysis as an
from m2po_lab.explorer import charts
from m2po_lab.losses import LOSSES
from m2po_lab.study import get_preset, run_study

STALENESS_CHOICES = (0, 4, 8, 16, 32, 64, 128, 256)  # multiples of updates_per_step = 4
UPDATE_CHOICES = (100, 200, 400, 800)
MIN_BIN_TOKENS = 20  # entropy bins with fewer tokens are not drawn (as in the study's report)
SOURCES = ("Run a small study", "Open a study directory")


# ---------------------------------------------------------------- where the study comes from
@st.cache_resource
def _jobs() -> tuple[dict, dict]:
    """Studies training in a background thread and their errors, by output folder (shared by every session)."""
    return {}, {}


def _train(cfg, out: str, errors: dict) -> None:
    try:
        run_study(cfg, out, progress=False)
    except Exception as e:  # shown by the page that polls this job
        errors[out] = f"{type(e).__name__}: {e}"


def _wait_for(cfg, out: str, thread: threading.Thread, errors: dict) -> None:
    """Progress of a training study, polled from its metrics files, until it ends."""
    n_runs = len(cfg.methods) * len(cfg.staleness) * len(cfg.seeds)
    t0 = time.time()
    with st.status(f"Training {n_runs} runs x {cfg.updates} updates ...", expanded=True) as status:
        bar = st.progress(0.0, text="warm start (supervised) ...")
        while thread.is_alive():
            thread.join(0.5)
            frac = rd.study_progress(out, cfg.updates)
            bar.progress(frac, text=f"{100 * frac:.0f}% of updates written ({time.time() - t0:.0f} s)")
        if out in errors:
            status.update(label="The study failed", state="error")
            st.error(errors.pop(out))
        else:
            status.update(label=f"Trained {n_runs} runs in {time.time() - t0:.0f} s", state="complete", expanded=False)


def run_ui() -> str | None:
    """Widgets of a live study; returns its folder once it has finished, else None."""
    st.sidebar.header("A small study")
    methods = st.sidebar.multiselect(
        "methods (registered losses)", list(LOSSES), ["grpo", "no_tr", "m2po"], key="methods"
    )
    staleness = st.sidebar.multiselect("staleness values (updates)", STALENESS_CHOICES, [0, 16, 64], key="staleness")
    seeds = st.sidebar.multiselect("seeds", list(range(5)), [0], key="seeds")
    updates = st.sidebar.select_slider("updates per run", UPDATE_CHOICES, 200, key="updates")
    try:
        cfg = get_preset(
            "default", methods=tuple(methods), staleness=tuple(sorted(staleness)), seeds=tuple(sorted(seeds)),
            updates=int(updates), eval_every=int(updates) // 20, hist_every=int(updates) // 10,
            checkpoint_every=int(updates) // 4,
        )
    except ValueError as e:
        st.sidebar.error(str(e))
        return None
    out = str(an.study_cache_dir(cfg.to_dict()))
    n_runs = len(cfg.methods) * len(cfg.staleness) * len(cfg.seeds)
    st.sidebar.caption(f"{n_runs} runs, trained together as one batched model on one CPU thread (the default, "
                       f"9 runs x 200 updates, takes about 20 s). Folder: `{out}`")
    jobs, errors = _jobs()
    finished = Path(out, rd.SUMMARY).exists()
    clicked = st.sidebar.button("Cached: already trained" if finished else "Run the study", key="run_study",
                                type="primary", disabled=finished)
    job = jobs.get(out)
    if clicked and (job is None or not job.is_alive()):
        job = jobs[out] = threading.Thread(target=_train, args=(cfg, out, errors), daemon=True)
        job.start()
    if job is not None and job.is_alive():
        _wait_for(cfg, out, job, errors)
    elif out in errors:
        st.error(errors.pop(out))
    if Path(out, rd.SUMMARY).exists():
        return out
    st.info("Choose methods, staleness values and seeds in the sidebar, then press **Run the study**. "
            "Or open an existing study directory (`m2po-lab study --out DIR`).")
    return None


def open_ui() -> str | None:
    return directory_ui(("study",), key="study", default_rel="runs/study")


@st.cache_data(max_entries=8, show_spinner="Reading the study ...")
def load_study(path: str, signature: tuple) -> rd.Study:
    """``signature`` (file mtimes and sizes) makes a changed directory a new cache entry."""
    return rd.load_study(path)


def choose(label: str, options: list[int], key: str) -> int:
    """A select-slider over ``options`` (default: the last); a caption when there is only one.

    ``key`` must name the study too (one selection state per study): a value chosen for one
    study never carries over to another study whose options happen to include it.
    """
    if len(options) == 1:
        st.caption(f"{label}: {options[0]} (the only one)")
        return options[0]
    return st.select_slider(label, options, options[-1], key=key)


def study_key(study: rd.Study, name: str) -> str:
    """A widget key scoped to one study directory."""
    return f"{name}@{study.path}"


# ---------------------------------------------------------------- drawing
def headline(study: rd.Study, k: int) -> None:
    cols = st.columns(len(study.methods))
    for col, m in zip(cols, study.methods):
        sel = an.select(study.runs, m, k)
        col.metric(f"{m} clip/frac", percent(an.steady_fraction(sel), 3),
                   help=f"mean clip/frac over updates >= {k} (every batch exactly {k} stale), mean over seeds")
        col.metric(f"{m} final eval/reward", f"{an.final_value(sel, updates=study.config.get('updates')):.3f}",
                   help="mean eval/reward over the last 10% of updates (summary.json's final_reward), mean over seeds")


def reward_section(study: rd.Study) -> None:
    st.altair_chart(charts.reward_chart(study), width="content")
    n = len(study.config.get("seeds") or [])
    st.caption(f"Evaluation reward from update 0 (before RL) on, one panel per staleness: line, mean over "
               f"{n} seed(s); band, ± 1 std over seeds. Dotted: the update from which every batch is exactly "
               "that stale. Hover for the numbers, click a method in the legend to show one.")


def hist_section(study: rd.Study, k: int) -> None:
    sel = an.select(study.runs, staleness=k)
    updates = an.hist_updates(sel)
    if not updates:
        st.info("No is/log_ratio_hist records at this staleness.")
        return
    u = choose("update of the recorded histogram", updates, key=study_key(study, "hist_update"))
    st.altair_chart(charts.histogram_chart(study, k, u), width="stretch")
    st.caption(f"Share of tokens per bin of log r at update {u}, staleness {k}, seeds summed; log axis, so empty "
               "bins are not drawn; the outermost bins also count the tokens beyond them (the record clamps).")
    cols = st.columns(len(study.methods))
    for col, m in zip(cols, study.methods):
        m2 = [an.values_at(r, ["is/m2"], u)["is/m2"] for r in an.select(sel, m)]
        m2 = [x for x in m2 if x is not None]
        col.metric(f"{m} M2 at this update", number(float(np.mean(m2))) if m2 else "—",
                   help="m2 = mean (log r)^2 over the trained batch, mean over seeds")


def summary_section(study: rd.Study) -> None:
    if study.summary is None:
        st.info("No summary.json yet: the study has not finished.")
        return
    st.dataframe(
        pd.DataFrame(an.summary_table(study.summary)), hide_index=True, key="summary_table",
        column_config={k: st.column_config.NumberColumn(format="%.4f") for k in
                       ("final_reward", "peak_reward", "clip_frac_mean", "clip_frac_steady", "m2_mean")},
    )
    st.caption("Means over seeds. final_reward: mean eval/reward over the last 10% of updates; "
               "clip_frac_steady: over updates >= staleness; collapsed: number of seeds.")
    marks = {True: ":green[held]", False: ":red[did not hold]", None: ":gray[not evaluated]"}
    lines = [f"- **{p['phenomenon']}**: {marks[p['held']]}. {p['detail']}" for p in study.summary.get("phenomena", [])]
    if lines:
        st.markdown(f"**Phenomena of {PAPER}** (checked by the study's report)\n\n" + "\n".join(lines))


# ---------------------------------------------------------------- the page
page_setup("Staleness study")
st.markdown(
    f"""
A study trains each loss on the toy task (`m2po-lab study`) or a tiny transformer
(`m2po-lab study-llm`) while the batch of update *t* comes from the policy of update *t − k*.
The paper ({PAPER}) reports that GRPO's clipped fraction grows with the staleness *k* while
M2PO masks far fewer tokens than GRPO clips (0.06% against 1.22% over training), and that the entropy of the stale
tokens rises with `|r − 1|`, so clipping them removes the informative ones. Whether this
study shows each claim is its own verdict, under **Summary** at the bottom of the page.
"""
)
found = st.query_params.get("dir") or any(e.kind == "study" for e in rd.discover(runs_root()))
source = st.sidebar.radio("study", SOURCES, index=1 if found else 0, key="study_source")
path = run_ui() if source == SOURCES[0] else open_ui()
if path is None:
    st.stop()
try:
    study = load_study(path, rd.dir_signature(path))
except rd.RunDirError as e:
    st.error(f"Cannot open this study: {e}")
    st.stop()

st.caption(f"`{study.path}`: {len(study.runs)} runs, methods {', '.join(study.methods)}, staleness "
           f"{study.staleness}. Open it in the Run browser (page 3) for any metric of any run.")
status_note(study.status, any(r.torn for r in study.runs), len(study.missing))
k = choose("staleness shown", study.staleness, key=study_key(study, "staleness_shown"))
window = st.sidebar.slider("smoothing of clip/frac (updates)", 1, 50, 10, key="clip_smooth")
headline(study, k)

st.subheader("Reward over training")
reward_section(study)
left, right = st.columns(2)
with left:
    st.subheader("Gradient zeroed: clip/frac")
    st.altair_chart(charts.zeroed_chart(study, k, window), width="stretch")
    st.caption(f"Mean over seeds of a trailing {window}-update mean. Symmetric-log axis: linear below 0.01%, so 0 "
               f"(no_tr never zeroes a token) stays in view. Dotted: update {k}, from which every batch is exactly "
               f"{k} updates stale.")
with right:
    st.subheader("Entropy by |r - 1|")
    st.altair_chart(charts.entropy_chart(study, k, MIN_BIN_TOKENS), width="stretch")
    st.caption(f"Token-weighted mean entropy of each bin (entropy/by_ratio) at staleness {k}, every recorded update "
               f"of every seed pooled; bins with >= {MIN_BIN_TOKENS} tokens.")
st.subheader("Importance weights over training")
hist_section(study, k)
st.subheader("Summary")
summary_section(study)
