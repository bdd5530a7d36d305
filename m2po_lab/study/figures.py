"""The study's figures: one function per figure, each returning a matplotlib ``Figure``.

The report, the notebooks and the explorer call the same functions on a loaded study
(``m2po_lab.rundir.load_study``), so a figure is fixed in one place. Every figure says
what it shows in its own text: lines are means over seeds, bands one standard deviation
(said with N), curves start at update 0 with the reward before RL, a dotted line marks
update k, from which every batch of a staleness-k run is exactly k updates old, log-axis
zeros and clamped values are said. ``Figure`` objects only: no pyplot, no backend switch.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ..rundir import HIST_KEY, Run, Study, eval_curve, pool_entropy_bins

BAND_NOTE = "line: mean over {n} seed(s); band: ± 1 std over seeds"
WINDOW_NOTE = "dotted: update k, from which every batch is exactly k updates old"


def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.4, **kw):
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False, **kw)[0]
    return fig, axes


def _caption(fig: Figure, *parts: str) -> None:
    fig.text(0.5, -0.01, "; ".join(p for p in parts if p), ha="center", va="top", fontsize=8, wrap=True)


def _series(run: Run, key: str, smooth: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(updates done, value) where ``key`` is a number; ``update`` u was logged after u + 1 updates."""
    pts = [(r["update"] + 1, r[key]) for r in run.rows if isinstance(r.get(key), (int, float))]
    x, y = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=float)) if pts else (
        np.zeros(0), np.zeros(0))
    if smooth > 1 and len(y) >= smooth:  # centred moving mean; near the ends, of the points that exist
        k = np.ones(smooth)
        y = np.convolve(y, k, mode="same") / np.convolve(np.ones_like(y), k, mode="same")
    return x, y


def _band(ax, curves, label, color=None, linestyle="-", fill=True):
    """Mean over seeds as a line, ± 1 std as a band, on the updates every seed logged; the line (None: no data)."""
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return None
    common = sorted(set.intersection(*(set(c[0].tolist()) for c in curves)))
    ys = np.stack([c[1][np.isin(c[0], common)] for c in curves])  # (seeds, n)
    mean = ys.mean(0)
    (line,) = ax.plot(common, mean, label=label, color=color, linestyle=linestyle, lw=1.4)
    if fill and len(curves) > 1:
        sd = ys.std(0, ddof=1)
        ax.fill_between(common, mean - sd, mean + sd, color=line.get_color(), alpha=0.15, lw=0)
    return line


def _select(study: Study, method: str, staleness: int) -> list[Run]:
    return [r for r in study.runs if r.method == method and r.staleness == staleness]


def _seeds(study: Study) -> int:
    return len({r.seed for r in study.runs})


def _mark_window(ax, k: int) -> None:
    if k > 0:
        ax.axvline(k, color="k", ls=":", lw=0.8)


def reward_by_method(study: Study) -> Figure:
    """Eval reward over training, one panel per staleness, one line per method."""
    stal = study.staleness
    fig, axes = _figure(len(stal), width=3.6, height=3.2, sharey=True)
    for ax, k in zip(axes, stal):
        for i, m in enumerate(study.methods):
            _band(ax, [eval_curve(r) for r in _select(study, m, k)], m, color=f"C{i}")
        _mark_window(ax, k)
        ax.set(title=f"staleness {k}", xlabel="optimizer updates")
    axes[0].set_ylabel("eval reward (sampled)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), fontsize=8)
    _caption(fig, BAND_NOTE.format(n=_seeds(study)), "update 0: the reward before RL", WINDOW_NOTE)
    return fig


def grpo_staleness_sweep(study: Study) -> Figure:
    """GRPO's eval reward at every staleness (the paper's Fig. 1, clipped GRPO)."""
    fig, (ax,) = _figure()
    cmap = matplotlib.colormaps["viridis"]
    stal = study.staleness
    for i, k in enumerate(stal):
        _band(ax, [eval_curve(r) for r in _select(study, "grpo", k)], f"s={k}", color=cmap(i / max(len(stal) - 1, 1)))
    ax.set(xlabel="optimizer updates", ylabel="eval reward (sampled)", title="GRPO (clipped) by staleness")
    ax.legend(fontsize=8)
    _caption(fig, BAND_NOTE.format(n=_seeds(study)), "update 0: the reward before RL")
    return fig


def zeroed_fraction(study: Study, key: str = "clip/frac", window: int = 25) -> Figure:
    """Fraction of tokens whose gradient each method zeroes, at the lowest and highest staleness."""
    stal = study.staleness
    ks = [stal[0]] if len(stal) == 1 else [stal[0], stal[-1]]
    fig, axes = _figure(len(ks), width=4.6, sharey=True)
    for ax, k in zip(axes, ks):
        for i, m in enumerate(study.methods):
            _band(ax, [_series(r, key, window) for r in _select(study, m, k)], m, color=f"C{i}")
        _mark_window(ax, k)
        ax.set_yscale("symlog", linthresh=1e-4, linscale=0.5)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{100 * y:g}%"))
        ax.set(title=f"staleness {k}", xlabel="optimizer updates")
    axes[0].set_ylim(bottom=0)  # after every panel is drawn: the shared top covers them all
    axes[0].set_ylabel("tokens with gradient zeroed")
    axes[-1].legend(fontsize=8)
    _caption(fig, f"moving mean over {window} updates", BAND_NOTE.format(n=_seeds(study)),
             "y axis linear below 0.01% so that 0 (never zeroed) is drawn at the bottom", WINDOW_NOTE)
    return fig


COMPETENCE_PANELS = (("eval/fixed_ok", "responses with every fixed position right"),
                     ("eval/fork_acc", "fork tokens right"),
                     ("eval/entropy_fixed", "entropy at fixed positions (nats)"))


def competence(study: Study) -> Figure | None:
    """What the reward is made of at the highest staleness: fixed positions, forks, fixed-position entropy."""
    hi = study.staleness[-1]
    if not any(_series(r, COMPETENCE_PANELS[0][0])[0].size for r in study.runs):
        return None
    fig, axes = _figure(3, width=4.0)
    for j, (ax, (key, ylabel)) in enumerate(zip(axes, COMPETENCE_PANELS)):
        for i, m in enumerate(study.methods):
            runs = _select(study, m, hi)
            line = _band(ax, [_series(r, key) for r in runs], f"{m} s={hi}", color=f"C{i}")
            if j == 0 and line is not None:  # dashed: the same in the (stale) batches the run trains on
                _band(ax, [_series(r, "data/fixed_ok", 50) for r in runs], None, color=line.get_color(),
                      linestyle="--", fill=False)
        if hi != study.staleness[0] and "grpo" in study.methods:
            _band(ax, [_series(r, key) for r in _select(study, "grpo", study.staleness[0])],
                  f"grpo s={study.staleness[0]}", color="0.6")
        _mark_window(ax, hi)
        ax.set(xlabel="optimizer updates", ylabel=ylabel)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), fontsize=8)
    _caption(fig, "solid: the policy (evaluation); dashed: the stale batches it trains on (moving mean of 50)",
             BAND_NOTE.format(n=_seeds(study)), WINDOW_NOTE)
    return fig


def entropy_vs_ratio(bins: dict, staleness: int, min_tokens: int = 20) -> Figure:
    """Mean token entropy by |r - 1| bin (the paper's Fig. 3b), from pooled ``entropy/by_ratio`` records."""
    fig, (ax,) = _figure()
    edges = [e if e is not None else float("inf") for e in bins["edges"]]
    labels = [f"{a:g}-{b:g}" if b != float("inf") else f">{a:g}" for a, b in zip(edges, edges[1:])]
    keep = [i for i, n in enumerate(bins["counts"]) if n >= min_tokens]
    ax.bar([labels[i] for i in keep], [bins["entropy"][i] for i in keep])
    ax.set(xlabel="|r - 1|", ylabel="mean token entropy (nats)", title=f"entropy vs |r - 1|, staleness {staleness}")
    ax.tick_params(axis="x", rotation=45)
    _caption(fig, f"every recorded update of every method and seed at s={staleness}, pooled (token-weighted)",
             f"bins with fewer than {min_tokens} tokens left out")
    return fig


def log_ratio_histograms(study: Study) -> Figure:
    """Histograms of log r at a few recorded updates, highest staleness, first seed, one panel per method."""
    hi, seed = study.staleness[-1], min(r.seed for r in study.runs)
    fig, axes = _figure(len(study.methods), width=3.8, sharey=True)
    for ax, m in zip(axes, study.methods):
        runs = [r for r in _select(study, m, hi) if r.seed == seed]
        recs = [r for r in runs[0].rows if isinstance(r.get(HIST_KEY), dict)] if runs else []
        for r in recs[:: max(1, len(recs) // 4)]:
            h = r[HIST_KEY]
            ax.stairs(np.asarray(h["counts"], dtype=float), np.asarray(h["edges"]), label=f"update {r['update']}")
        ax.set_yscale("symlog", linthresh=1)
        ax.set(title=f"{m}, staleness {hi}", xlabel="log r")
        ax.legend(fontsize=7)
    axes[0].set_ylim(bottom=0)
    axes[0].set_ylabel("tokens")
    _caption(fig, f"seed {seed}; values beyond ±2 are counted in the end bins",
             "y axis linear below 1 so that empty bins are drawn at 0")
    return fig


def make_figures(out: Path, study: Study, entropy_bins: dict | None) -> list[Path]:
    """Every figure of a study into ``out/figures/``; the paths written."""
    fig_dir = Path(out) / "figures"
    fig_dir.mkdir(exist_ok=True)
    figures = {"reward_by_method": reward_by_method(study), "clip_fraction": zeroed_fraction(study),
               "competence": competence(study), "log_ratio_histograms": log_ratio_histograms(study)}
    if "grpo" in study.methods:
        figures["grpo_staleness_sweep"] = grpo_staleness_sweep(study)
    if entropy_bins:
        figures["entropy_vs_ratio"] = entropy_vs_ratio(entropy_bins, study.staleness[-1])
    paths = []
    for name, fig in figures.items():
        if fig is not None:
            fig.savefig(fig_dir / f"{name}.png", dpi=90, bbox_inches="tight")
            paths.append(fig_dir / f"{name}.png")
    return paths


def pooled_entropy_bins(study: Study, staleness: int) -> dict | None:
    """``entropy/by_ratio`` pooled over every record of the runs at ``staleness``."""
    return pool_entropy_bins(row for r in study.runs if r.staleness == staleness for row in r.rows)
