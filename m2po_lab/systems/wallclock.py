"""Eval reward against simulated hours: time to target per (method, mode), its table and its figure.

Updates become hours at the steady-state rate of the system that would produce them:
a run at staleness 0 stands for the synchronous system, a run at the ages' bound for the
asynchronous one, and ``u`` optimizer updates take ``u / updates_per_hour`` simulated
hours (``throughput/updates_per_hour`` of ``summary``, warm-up steps excluded): one
update of the toy stands for one optimizer update of the system.

Time to target: the first evaluation at which the trailing mean of the last ``smooth``
evaluations (fewer at the start; the reward before RL counts as the evaluation at update 0)
reaches ``target x`` the synchronous GRPO runs' mean final reward (``final_reward`` of
summary.json: the mean eval reward over the last 10% of updates). A run that never gets
there has no time; a cell lists how many of its seeds reached it.
"""

from __future__ import annotations

import statistics

import numpy as np
from matplotlib.figure import Figure

from ..rundir import eval_curve

EVAL_KEY, FINAL_KEY = "eval/reward", "final_reward"
"""The eval-reward metric and the summary.json key of a run's final reward."""
MODES = ("sync", "async")


def updates_to_target(xs, ys, target: float, smooth: int) -> int | None:
    """The first update count whose trailing ``smooth``-evaluation mean reaches ``target``; None if none does."""
    for i in range(len(ys)):
        if statistics.fmean(ys[max(0, i - smooth + 1): i + 1]) >= target:
            return int(xs[i])
    return None


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def time_to_target(study, summary: dict, hours_per_update: dict, bound: int, target: float, smooth: int) -> dict:
    """The target and, per (method, mode), updates and hours to reach it per seed, with mean and std."""
    finals = {(r["method"], r["staleness"], r["seed"]): r[FINAL_KEY] for r in summary["runs"]}
    ref = [v for (m, s, _), v in finals.items() if m == "grpo" and s == 0]
    goal = target * statistics.fmean(ref)
    rows = []
    for method in dict.fromkeys(r.method for r in study.runs):
        for mode, k in (("sync", 0), ("async", bound)):
            runs = sorted((r for r in study.runs if r.method == method and r.staleness == k), key=lambda r: r.seed)
            if not runs or (mode == "async" and bound == 0):
                continue
            upd = {r.seed: updates_to_target(*eval_curve(r), goal, smooth) for r in runs}
            hours = {sd: (u * hours_per_update[mode] if u is not None else None) for sd, u in upd.items()}
            got = [h for h in hours.values() if h is not None]
            fin = [finals[method, k, r.seed] for r in runs]
            rows.append({"method": method, "mode": mode, "staleness": k, "updates": upd, "hours": hours,
                         "reached": len(got), "seeds": len(runs), "hours_mean_sd": _mean_sd(got),
                         "final_mean_sd": _mean_sd(fin)})
    return {"target": goal, "target_frac": target, "reference": statistics.fmean(ref), "rows": rows}


def speedups(ttt: dict) -> list[dict]:
    """Hours of synchronous GRPO over hours of each asynchronous method: ratio of means, and per seed (paired)."""
    by = {(r["method"], r["mode"]): r for r in ttt["rows"]}
    base = by.get(("grpo", "sync"))
    out = []
    for (method, mode), row in by.items():
        if mode != "async" or base is None or not row["reached"] or not base["reached"]:
            continue
        paired = [base["hours"][sd] / h for sd, h in row["hours"].items()
                  if h is not None and base["hours"].get(sd) is not None]
        out.append({"method": method, "ratio": base["hours_mean_sd"][0] / row["hours_mean_sd"][0],
                    "per_seed": paired, "reached": row["reached"], "seeds": row["seeds"]})
    return out


def table_lines(ttt: dict) -> list[str]:
    """Markdown table: method, mode, final reward, updates and simulated hours to target (mean ± std over seeds)."""
    lines = ["| method | system | staleness (updates) | final reward | updates to target | hours to target | "
             "reached |", "|---|---|---|---|---|---|---|"]
    for r in ttt["rows"]:
        f, (h, hs) = r["final_mean_sd"], r["hours_mean_sd"]
        upd = [u for u in r["updates"].values() if u is not None]
        um, us = _mean_sd(upd)
        k = "0" if r["mode"] == "sync" else f"ages up to {r['staleness']}"
        cell_u = f"{um:.0f} ± {us:.0f}" if upd else "not reached"
        cell_h = f"{h:.3f} ± {hs:.3f}" if upd else "not reached"
        lines.append(f"| {r['method']} | {r['mode']} | {k} | {f[0]:.3f} ± {f[1]:.3f} | {cell_u} | {cell_h} | "
                     f"{r['reached']}/{r['seeds']} |")
    return lines


def headline(ttt: dict) -> list[str]:
    """One sentence per asynchronous method: how much sooner than synchronous GRPO it reaches the target."""
    lines = []
    for s in speedups(ttt):
        seeds = ", ".join(f"{x:.2f}" for x in s["per_seed"])
        lines.append(f"async {s['method']} reaches {ttt['target_frac']:.0%} of on-policy final reward "
                     f"{s['ratio']:.2f}x sooner than synchronous GRPO (per seed: {seeds}; reached by "
                     f"{s['reached']}/{s['seeds']} seeds)")
    return lines


def reward_vs_hours(study, hours_per_update: dict, bound: int, goal: float) -> Figure:
    """Eval reward against optimizer updates (left) and simulated hours (right); mean over seeds, ± 1 std band."""
    fig = Figure(figsize=(10.0, 3.6), layout="constrained")
    ax_u, ax_h = fig.subplots(1, 2, sharey=True)
    colors = {}
    for method in dict.fromkeys(r.method for r in study.runs):
        for mode, k in (("sync", 0), ("async", bound)):
            runs = [r for r in study.runs if r.method == method and r.staleness == k]
            if not runs or (mode == "async" and bound == 0):
                continue
            pts = [eval_curve(r) for r in runs]
            n = min(len(p[0]) for p in pts)
            x = np.array(pts[0][0][:n], dtype=float)
            ys = np.array([p[1][:n] for p in pts])  # (seeds, n)
            mean, sd = ys.mean(0), ys.std(0, ddof=1) if len(runs) > 1 else np.zeros(n)
            style = "--" if mode == "sync" else "-"
            for ax, scale in ((ax_u, 1.0), (ax_h, hours_per_update[mode])):
                (line,) = ax.plot(x * scale, mean, style, color=colors.get(method), lw=1.4,
                                  label=f"{method} {mode}" + ("" if mode == "sync" else f" (ages <= {k})"))
                colors[method] = line.get_color()
                ax.fill_between(x * scale, mean - sd, mean + sd, color=line.get_color(), alpha=0.12, lw=0)
    for ax, xl in ((ax_u, "optimizer updates"), (ax_h, "simulated hours")):
        ax.axhline(goal, color="k", ls=":", lw=0.8)
        ax.set(xlabel=xl)
    ax_u.set(ylabel="eval reward (sampled)", title="per update: what staleness costs")
    ax_h.set(title="per simulated hour: what asynchrony buys")
    ax_h.legend(fontsize=7)
    fig.text(0.5, -0.01, f"line: mean over {len({r.seed for r in study.runs})} seed(s), band: ± 1 std; dashed: "
             f"synchronous system (on-policy), solid: asynchronous (its sample ages); dotted: target {goal:.3f}",
             ha="center", va="top", fontsize=8)
    return fig
