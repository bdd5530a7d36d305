"""The study's PNG figures (matplotlib ``Figure`` objects: no pyplot, no backend switch,
so importing this module leaves a notebook's inline plotting alone)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .config import StudyConfig
from .. import rundir as rd
from .runner import RunSpec


def _subplots(nrows: int = 1, ncols: int = 1, figsize=(5, 3.5), **kw):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["update"], r[key]) for r in rows if r.get(key) is not None]
    return (np.array([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=float)) if pts else (np.array([]),) * 2


def _smooth(y: np.ndarray, w: int) -> np.ndarray:
    """Centred moving average over ``w`` points; near the ends, over the points that exist."""
    if len(y) < w or w <= 1:
        return y
    k = np.ones(w)
    return np.convolve(y, k, mode="same") / np.convolve(np.ones_like(y), k, mode="same")


def _band(ax, curves: list[tuple[np.ndarray, np.ndarray]], label, color=None, log=False, linestyle="-",
          fill=True):
    """Mean over seeds as a line, min-max over seeds as a band; returns the line (None: no data)."""
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return None
    n = min(len(c[0]) for c in curves)
    x = curves[0][0][:n]
    ys = np.stack([c[1][:n] for c in curves])
    mean = ys.mean(0)
    (line,) = ax.plot(x, mean, label=label, color=color, linestyle=linestyle)
    if fill and len(curves) > 1:
        ax.fill_between(x, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.15)
    if log:
        ax.set_yscale("log")
    return line


def make_figures(out: Path, specs: list[RunSpec], cfg: StudyConfig, entropy_bins: dict | None) -> list[Path]:
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    rows = {s: rd.read_metrics(out / rd.RUNS / s.name / rd.METRICS) for s in specs}
    by = defaultdict(list)
    for s in specs:
        by[(s.method, s.staleness)].append(s)
    stal = sorted(cfg.staleness)
    paths = []

    # 1. eval reward vs updates per method, one panel per staleness
    fig, axes = _subplots(1, len(stal), figsize=(4 * len(stal), 3.2), sharey=True, squeeze=False)
    for ax, k in zip(axes[0], stal):
        for m in cfg.methods:
            _band(ax, [_series(rows[s], "eval/reward") for s in by[(m, k)]], m)
        ax.set_title(f"staleness {k}")
        ax.set_xlabel("update")
    axes[0][0].set_ylabel("eval reward")
    axes[0][-1].legend(fontsize=8)
    paths.append(_save(fig, fig_dir / "reward_by_method.png"))

    # 2. the GRPO staleness sweep
    if "grpo" in cfg.methods:
        fig, ax = _subplots(figsize=(5, 3.5))
        cmap = matplotlib.colormaps["viridis"]
        for i, k in enumerate(stal):
            _band(ax, [_series(rows[s], "eval/reward") for s in by[("grpo", k)]], f"s={k}",
                  color=cmap(i / max(len(stal) - 1, 1)))
        ax.set(xlabel="update", ylabel="eval reward", title="GRPO (eps 0.2) by staleness")
        ax.legend(fontsize=8)
        paths.append(_save(fig, fig_dir / "grpo_staleness_sweep.png"))

    # 3. clipped / masked fraction vs updates (log scale)
    fig, axes = _subplots(1, 2, figsize=(9, 3.2), squeeze=False)
    for ax, k in zip(axes[0], (stal[0], stal[-1])):
        for m in cfg.methods:
            curves = [_series(rows[s], "clip/frac") for s in by[(m, k)]]
            curves = [(x, _smooth(y, 25) + 1e-6) for x, y in curves]
            _band(ax, curves, m, log=True)
        ax.set(title=f"clipped / masked tokens, staleness {k}", xlabel="update", ylabel="fraction (log)")
        ax.legend(fontsize=8)
    paths.append(_save(fig, fig_dir / "clip_fraction.png"))

    # 3b. what the reward is made of, at the highest staleness: fixed-position competence,
    # fork accuracy, and the entropy at fixed positions (rises when stale data erodes them)
    panels = (("eval/fixed_ok", "all fixed positions right\n(solid: policy; dashed: its batches)"),
              ("eval/fork_acc", "fork tokens right"),
              ("eval/entropy_fixed", "entropy at fixed positions (nats)"))
    if any(_series(rows[s], panels[0][0])[0].size for s in specs):
        fig, axes = _subplots(1, 3, figsize=(12, 3.2), squeeze=False)
        for i, (ax, (key, title)) in enumerate(zip(axes[0], panels)):
            for m in cfg.methods:
                line = _band(ax, [_series(rows[s], key) for s in by[(m, stal[-1])]], f"{m} s={stal[-1]}")
                if i == 0 and line is not None:  # dashed: the same, in the (stale) batches it trains on
                    data = [_series(rows[s], "data/fixed_ok") for s in by[(m, stal[-1])]]
                    data = [(x[::10], _smooth(y, 50)[::10]) for x, y in data if len(x)]
                    _band(ax, data, None, color=line.get_color(), linestyle="--", fill=False)
            if stal[0] != stal[-1] and "grpo" in cfg.methods:
                _band(ax, [_series(rows[s], key) for s in by[("grpo", stal[0])]], f"grpo s={stal[0]}", color="0.6")
            ax.set(title=title, xlabel="update")
        axes[0][-1].legend(fontsize=8)
        paths.append(_save(fig, fig_dir / "competence.png"))

    # 4. entropy vs |r - 1| (the paper's Fig. 3b)
    if entropy_bins:
        fig, ax = _subplots(figsize=(5, 3.5))
        edges = [e if e is not None else float("inf") for e in entropy_bins["edges"]]
        labels = [f"{a:g}-{b:g}" if b != float("inf") else f">{a:g}" for a, b in zip(edges, edges[1:])]
        keep = [i for i, n in enumerate(entropy_bins["counts"]) if n > 0]
        ax.bar([labels[i] for i in keep], [entropy_bins["entropy"][i] for i in keep])
        ax.set(xlabel="|r - 1|", ylabel="mean token entropy (nats)",
               title=f"entropy vs |r - 1|, staleness {stal[-1]}")
        ax.tick_params(axis="x", rotation=45)
        paths.append(_save(fig, fig_dir / "entropy_vs_ratio.png"))

    # 5. importance-weight histograms at chosen updates (highest staleness, first seed)
    methods = list(cfg.methods)
    fig, axes = _subplots(1, len(methods), figsize=(4 * len(methods), 3.2), squeeze=False, sharey=True)
    for ax, m in zip(axes[0], methods):
        spec = by[(m, stal[-1])][0]
        recs = [r for r in rows[spec] if r.get("is/log_ratio_hist")]
        for r in recs[:: max(1, len(recs) // 4)]:
            h = r["is/log_ratio_hist"]
            centers = (np.array(h["edges"][:-1]) + np.array(h["edges"][1:])) / 2
            ax.plot(centers, np.array(h["counts"]) + 0.5, label=f"update {r['update']}")
        ax.set(yscale="log", title=f"{m}, staleness {stal[-1]}", xlabel="log r")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("tokens")
    paths.append(_save(fig, fig_dir / "log_ratio_histograms.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
