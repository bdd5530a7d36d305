"""Page 4: what staleness a system produces, and what asynchrony buys (the simulator of m2po_lab.systems).

The sidebar's ``*_ui()`` functions draw the controls and return values; the numbers come
from ``m2po_lab.explorer.systems.explore_system`` (the simulator, the system and its
synchronous baseline), cached with ``st.cache_data``; the ``*_chart`` / ``*_section``
functions only draw. Nothing is trained here: ``m2po-lab wallclock`` couples a system to
the toy study (docs/systems.md).
"""

from __future__ import annotations

import numpy as np
import streamlit as st
from _common import PAPER, new_figure, number, page_setup, percent, show

from m2po_lab.explorer.systems import DEFAULT_PRESET, PAGE_PRESETS, UNBOUNDED, explore_system, pool_text, system_config
from m2po_lab.systems import MODES, PRESETS

BOUNDS = (0, 1, 2, 4, 8, 16, 32, UNBOUNDED)  # AReaL's max_head_offpolicyness eta, versions
# Widget keys end in "@<preset>": a new preset starts every control from its own values.


def preset_ui() -> str:
    return st.sidebar.selectbox("system preset", PAGE_PRESETS, index=PAGE_PRESETS.index(DEFAULT_PRESET),
                                key="sys_preset", help="the controls below start from this preset")


def pools_ui(p, preset: str) -> dict:
    """Rollout workers, trainer GPUs and per-worker concurrency (the pools)."""
    st.sidebar.subheader("Pools")
    workers = st.sidebar.slider("rollout workers", 1, 32, p.rollout_workers, key=f"sys_workers@{preset}")
    trainer = st.sidebar.slider("trainer GPUs (training throughput scales with them)", 1, 16, p.trainer_gpus,
                                key=f"sys_trainer_gpus@{preset}")
    conc = st.sidebar.slider("concurrent sequences per worker", 4, 256, p.max_concurrency, step=4,
                             key=f"sys_concurrency@{preset}")
    group = st.sidebar.slider("responses per prompt G", 1, 16, p.group_size, key=f"sys_group@{preset}")
    return {"rollout_workers": workers, "trainer_gpus": trainer, "max_concurrency": conc, "group_size": group}


def lengths_ui(p, preset: str) -> dict:
    """Mean and tail width of the lognormal response length (capped at the preset's max_new_tokens)."""
    st.sidebar.subheader("Response lengths")
    mean = st.sidebar.slider("mean length (tokens)", 100, 8000, int(p.length_mean), step=100,
                             key=f"sys_len_mean@{preset}")
    sigma = st.sidebar.slider("tail width sigma (lognormal)", 0.1, 1.5, float(p.length_sigma), step=0.1,
                              key=f"sys_len_sigma@{preset}")
    return {"length_dist": "lognormal", "length_mean": float(mean), "length_sigma": float(sigma)}


def rule_ui(p, preset: str) -> tuple[int | str, dict]:
    """Mode, the staleness bound and partial rollouts."""
    st.sidebar.subheader("Staleness rule")
    mode = st.sidebar.selectbox("mode", MODES, index=MODES.index(p.mode), key=f"sys_mode@{preset}")
    start = UNBOUNDED if p.max_staleness is None else p.max_staleness
    bound = st.sidebar.select_slider("staleness bound eta (versions)", BOUNDS, value=start,
                                     key=f"sys_bound@{preset}", help="AReaL's max_head_offpolicyness; async mode only")
    partial = st.sidebar.checkbox("partial (interruptible) rollouts", p.partial_rollout, key=f"sys_partial@{preset}")
    return bound, {"mode": mode, "partial_rollout": partial}


@st.cache_data(max_entries=128, show_spinner="simulating ...")
def explored(cfg) -> dict:
    return explore_system(cfg)


def headline_section(ex: dict) -> None:
    out, base, U = ex["outputs"], ex["sync"], ex["updates_per_step"]
    cols = st.columns(5)
    cols[0].metric("speed-up over synchronous", f"{out['speedup/vs_sync']:.2f}x")
    cols[1].metric("mean sample age (versions)", number(out["staleness/sample_mean"], 3))
    cols[2].metric("p99 / max sample age", f"{out['staleness/sample_p99']} / {out['staleness/sample_max']}")
    cols[3].metric("mean age in updates", number(out["staleness/sample_mean"] * U, 3),
                   help=f"versions x {U} updates per step: the unit of the paper's stale-k")
    cols[4].metric("steps per simulated hour (vs sync)",
                   f"{out['throughput/steps_per_hour']:.0f} vs {base['throughput/steps_per_hour']:.0f}")


def ages_chart(ex: dict) -> None:
    fig, ax = new_figure(7.0, 3.0)
    for pmf, label, shift in ((ex["sample_pmf"], "samples", -0.2), (ex["token_pmf"], "tokens", 0.2)):
        a = np.arange(len(pmf))
        ax.bar(a + shift, pmf, width=0.4, label=label)
    ax.set(xlabel="age (versions behind the trainer)", ylabel="share of trained samples / tokens",
           title="age distribution of the trained data")
    ax.legend()
    show(fig, alt="bar chart of the age distribution of trained samples and tokens")


def utilisation_chart(ex: dict) -> None:
    keys = ("util/rollout", "util/rollout_weight_load", "util/trainer")
    labels = ("rollout: generating", "rollout: loading weights", "trainer: training")
    fig, ax = new_figure(7.0, 2.6)
    y = np.arange(len(keys))
    ax.barh(y - 0.2, [ex["outputs"][k] for k in keys], height=0.4, label="this system")
    ax.barh(y + 0.2, [ex["sync"][k] for k in keys], height=0.4, label="synchronous")
    ax.set(yticks=y, yticklabels=labels, xlim=(0, 1), xlabel="fraction of the pool's time")
    ax.legend(fontsize=8)
    show(fig, alt="utilisation of each pool, this system against synchronous")


def details_section(ex: dict) -> None:
    out, cf = ex["outputs"], ex["closed_form"]
    closed = "no closed form holds here" if cf["mean"] is None else f"{cf['mean']:.3f} versions ({cf['regime']})"
    st.markdown(f"Closed-form mean sample age: **{closed}**; simulated {out['staleness/sample_mean']:.3f}. "
                f"Token-weighted mean age {out['staleness/token_mean']:.3f}; "
                f"{out['samples/dropped']} responses dropped by the bound; rollout pool "
                f"{percent(out['util/rollout'], 1)} busy, trainer {percent(out['util/trainer'], 1)}.")
    st.caption("What these ages cost in reward: `m2po-lab wallclock --system fully-async` trains the toy study on "
               f"a system's ages and reports reward against simulated hours ({PAPER}; docs/systems.md).")


page_setup("Systems: what staleness a system produces")
st.markdown("A discrete-event simulation of rollout workers, a trainer and a staleness rule "
            "(`m2po_lab.systems`, docs/systems.md). Move the pools, the lengths or the bound: the age of the "
            "data the trainer sees, the utilisation and the speed-up over the same GPUs run synchronously "
            "follow.")
preset = preset_ui()
p = PRESETS[preset]
fields = {**pools_ui(p, preset), **lengths_ui(p, preset)}
bound, rule = rule_ui(p, preset)
try:
    cfg = system_config(preset, bound=bound, **fields, **rule)
    ex = explored(cfg)
except ValueError as e:  # a combination the config refuses: its one-line message
    st.error(str(e))
    st.stop()
st.caption(pool_text(cfg))
headline_section(ex)
left, right = st.columns(2)
with left:
    ages_chart(ex)
with right:
    utilisation_chart(ex)
details_section(ex)
