"""``summary.json``, ``report.md`` and figures of a finished LLM staleness study.

The per-run entries are the toy study's (``m2po_lab.study.report.summarize_run``: the
keys the phenomenon checks read) plus LLM fields (greedy accuracy, importance-ratio
statistics, the amplified-token share); the phenomena are judged by the toy's code
(``m2po_lab.study.phenomena.check_phenomena``) and the toy's figures are drawn by the toy's
functions. Added here: the paper's Table 1 (GRPO s=0 | GRPO, GSPO, M2PO at the highest
staleness, plus every other method), ratio statistics and the mechanism table.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from m2po_lab import rundir as rd
from m2po_lab.metrics import M2
from m2po_lab.study.figures import make_figures, pooled_entropy_bins
from m2po_lab.study.phenomena import check_phenomena
from m2po_lab.study.report import summarize_run

# metric keys this module reads (a rename in the trainer is a change here only)
EVAL_REWARD, EVAL_ACC = "eval/reward", "eval/accuracy"
RATIO_MAX, LOG_RATIO_P99 = "is/ratio_max", "is/log_ratio_abs_p99"
GRAD_NORM, ENTROPY, RESPONSE_LEN = "grad_norm", "entropy", "response_len"
AMP_FRAC, AMP_SHARE = "amp/frac", "amp/weight_share"

TABLE1_PAPER = (
    "Paper, Table 1 (mean over 8 math benchmarks, %; GRPO s=0 / GRPO s=256 / GSPO s=256 / M2PO s=256): "
    "Qwen3-Base-1.7B 33.0 / 30.4 / 30.1 / 36.6; Qwen3-Base-4B 50.7 / 40.1 / 43.2 / 51.3; "
    "Llama-3.2-3B-Instruct 25.2 / 22.5 / 22.6 / 25.3 (arXiv 2510.01161).")


def _values(run: rd.Run, key: str, since: float = 0) -> list[float]:
    return [r[key] for r in run.rows if r["update"] >= since and isinstance(r.get(key), (int, float))]


def _fmean(xs) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def _median(xs) -> float:
    return statistics.median(xs) if xs else float("nan")


def with_start_reward(run: rd.Run) -> rd.Run:
    """The run with ``start_reward`` (the sampled accuracy before RL) in its config, as the toy's runs carry it."""
    start = run.config.get("start") or {}
    return dataclasses.replace(run, config={**run.config, "start_reward": start.get(EVAL_REWARD)})


def summarize_llm_run(run: rd.Run, updates: int, max_grad_norm: float) -> dict:
    """The toy's summary entry of one run plus the LLM fields (docs/llm.md lists them)."""
    run = with_start_reward(run)
    wall = (run.config.get("summary") or {}).get("wall_s", float("nan"))
    entry = summarize_run(run, updates, wall)
    k, tail = run.staleness, rd.FINAL_TAIL * updates  # the last 10%, as final_reward
    if k is None:
        raise ValueError(f"{run.path!r}: the run has no staleness, so its steady state is undefined")
    acc = [(r["update"], r[EVAL_ACC]) for r in run.rows if isinstance(r.get(EVAL_ACC), (int, float))]
    grads = _values(run, GRAD_NORM)
    entry.update({
        "start_accuracy": (run.config.get("start") or {}).get(EVAL_ACC),
        "final_accuracy": rd.final_mean(acc, updates),
        "peak_accuracy": max((a for _, a in acc), default=float("nan")),
        "ratio_max_median": _median(_values(run, RATIO_MAX, k)),
        "ratio_max_worst": max(_values(run, RATIO_MAX), default=float("nan")),
        "log_ratio_p99_median": _median(_values(run, LOG_RATIO_P99, k)),
        "m2_steady": _fmean(_values(run, M2, k)),
        "amp_frac_steady": _fmean(_values(run, AMP_FRAC, k)),
        "amp_weight_share_steady": _fmean(_values(run, AMP_SHARE, k)),
        "grad_clipped_frac": _fmean([float(g > max_grad_norm) for g in grads]) if max_grad_norm > 0 else 0.0,
        "entropy_final": _fmean(_values(run, ENTROPY, tail)),
        "response_len_final": _fmean(_values(run, RESPONSE_LEN, tail)),
    })
    return {k_: rd.json_number(v) for k_, v in entry.items()}


def _cell(runs: list[dict], method: str, staleness: int) -> list[dict]:
    return [r for r in runs if r["method"] == method and r["staleness"] == staleness]


def _ms(xs, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    """Mean ± std over seeds (None values left out; "—" when there is none)."""
    xs = [scale * x for x in xs if x is not None]
    if not xs:
        return "—"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.{digits}f} ± {sd:.{digits}f}{unit}"


def table1_columns(cfg) -> list[tuple[str, int]]:
    """The paper's Table 1 columns first (GRPO at the lowest staleness; GRPO, GSPO, M2PO at the highest), then the rest."""
    lo, hi = min(cfg.staleness), max(cfg.staleness)
    paper = [("grpo", lo), ("grpo", hi), ("gspo", hi), ("m2po", hi)]
    cells = [(m, s) for s in sorted(cfg.staleness) for m in cfg.methods]
    first = [c for c in paper if c in cells]
    return list(dict.fromkeys(first + [c for c in cells if c[1] == hi] + cells))


def table1(runs: list[dict], cfg) -> list[dict]:
    """One row per (method, staleness) in Table 1 order: means and stds over seeds (summary.json's ``table1``)."""
    out = []
    for m, s in table1_columns(cfg):
        rs = _cell(runs, m, s)
        if not rs:
            continue
        row = {"method": m, "staleness": s, "seeds": len(rs), "collapsed": sum(bool(r["collapsed"]) for r in rs)}
        for key in ("final_reward", "peak_reward", "final_accuracy", "clip_frac_mean", "clip_frac_steady"):
            xs = [r[key] for r in rs if r[key] is not None]
            row[key] = _fmean(xs)
            row[key + "_std"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
        out.append({k: rd.json_number(v) for k, v in row.items()})
    return out


def _table1_md(runs: list[dict], cfg) -> list[str]:
    lines = ["| run | final sampled acc. (`eval/reward`) | peak | final greedy acc. | collapsed | "
             "zeroed, all updates | zeroed, updates >= k |", "|---|---|---|---|---|---|---|"]
    for m, s in table1_columns(cfg):
        rs = _cell(runs, m, s)
        if rs:
            lines.append(f"| {m} s={s} | {_ms([r['final_reward'] for r in rs])} | {_ms([r['peak_reward'] for r in rs])}"
                         f" | {_ms([r['final_accuracy'] for r in rs])} | {sum(bool(r['collapsed']) for r in rs)}/"
                         f"{len(rs)} | {_ms([r['clip_frac_mean'] for r in rs], 3, 100, '%')} | "
                         f"{_ms([r['clip_frac_steady'] for r in rs], 3, 100, '%')} |")
    return lines


def _ratio_md(runs: list[dict], cfg) -> list[str]:
    lines = ["| run | median per-batch max r | worst max r | median p99 \\|log r\\| | M2 (mean) | "
             "A>0 & r>2 kept: share of tokens | their share of sum r\\|A\\| | updates grad-clipped |",
             "|---|---|---|---|---|---|---|---|"]
    for m, s in table1_columns(cfg):
        rs = _cell(runs, m, s)
        if rs:
            lines.append(
                f"| {m} s={s} | {_ms([r['ratio_max_median'] for r in rs], 2)} | "
                f"{max(r['ratio_max_worst'] or 0 for r in rs):.3g} | {_ms([r['log_ratio_p99_median'] for r in rs])} | "
                f"{_ms([r['m2_steady'] for r in rs], 4)} | {_ms([r['amp_frac_steady'] for r in rs], 3, 100, '%')} | "
                f"{_ms([r['amp_weight_share_steady'] for r in rs], 3, 100, '%')} | "
                f"{_ms([r['grad_clipped_frac'] for r in rs], 1, 100, '%')} |")
    return lines


def _series(run: rd.Run, key: str, smooth: int = 1) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["update"] + 1, r[key]) for r in run.rows if isinstance(r.get(key), (int, float))]
    if not pts:
        return np.zeros(0), np.zeros(0)
    x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=float)
    if smooth > 1 and len(y) >= smooth:
        k = np.ones(smooth)
        y = np.convolve(y, k, mode="same") / np.convolve(np.ones_like(y), k, mode="same")
    return x, y


def ratio_figure(study: rd.Study, window: int = 25) -> Figure:
    """Per-batch max r, p99 |log r|, M2 and the amplified weight share over training at the highest staleness."""
    hi = study.staleness[-1]
    panels = ((RATIO_MAX, "per-batch max r", True), (LOG_RATIO_P99, "p99 |log r|", False), (M2, "M2 = mean (log r)^2", True),
              (AMP_SHARE, "share of sum r|A| on A>0, r>2", False))
    fig = Figure(figsize=(16, 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (key, label, log) in zip(axes, panels):
        drawn = []
        for i, m in enumerate(study.methods):
            curves = [_series(r, key, window) for r in study.runs if r.method == m and r.staleness == hi]
            curves = [c for c in curves if len(c[0])]
            if not curves:
                continue
            n = min(len(c[0]) for c in curves)
            y = np.mean([c[1][:n] for c in curves], 0)
            ax.plot(curves[0][0][:n], y, color=f"C{i}", label=m, lw=1.2)
            drawn.append(y)
        if hi > 0:
            ax.axvline(hi, color="k", ls=":", lw=0.8)
        if log and any((y > 0).any() for y in drawn):
            ax.set_yscale("log")
        ax.set(xlabel="optimizer updates", title=f"{label}, s={hi}")
    axes[0].legend(fontsize=8)
    fig.text(0.5, -0.01, f"mean over seeds of a {window}-update moving mean; dotted: update k, from which every batch "
             "is exactly k updates old", ha="center", va="top", fontsize=8)
    return fig


def accuracy_figure(study: rd.Study) -> Figure:
    """Greedy held-out accuracy (``eval/accuracy``) over training, one panel per staleness."""
    stal = study.staleness
    fig = Figure(figsize=(4.2 * len(stal), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(stal), sharey=True))
    for ax, k in zip(axes, stal):
        for i, m in enumerate(study.methods):
            curves = [_series(r, EVAL_ACC) for r in study.runs if r.method == m and r.staleness == k]
            curves = [c for c in curves if len(c[0])]
            if curves:
                n = min(len(c[0]) for c in curves)
                ax.plot(curves[0][0][:n], np.mean([c[1][:n] for c in curves], 0), color=f"C{i}", label=m)
        ax.set(title=f"staleness {k}", xlabel="optimizer updates")
    axes[0].set_ylabel("greedy accuracy (eval/accuracy)")
    axes[-1].legend(fontsize=8)
    fig.text(0.5, -0.01, "mean over seeds", ha="center", va="top", fontsize=8)
    return fig


def _markdown(cfg, runs, checks, figures, wall_s, environment, warm) -> str:
    n = len(cfg.seeds)
    w = warm or {}
    lines = [
        "# LLM staleness study", "",
        f"{len(runs)} runs ({', '.join(cfg.methods)} x staleness {list(cfg.staleness)} x seeds {list(cfg.seeds)}) of a "
        f"{w.get('parameters', 0) / 1e6:.2f}M-parameter Qwen2 (vocabulary {w.get('vocab_size')}) on {cfg.n_digits}-digit "
        f"addition, {cfg.updates} updates each (lr {cfg.lr:g}, {cfg.prompts_per_step} prompts x {cfg.group_size} per "
        f"rollout step, {cfg.updates_per_step} updates per step, gradient clip {cfg.max_grad_norm:g}), from one warm "
        f"start; {wall_s:.0f} s in all. Tables: mean ± std over {n} seed(s).", "",
        "## Warm start (the RL start of every run)", "",
        f"{cfg.warm_start_steps} supervised steps on a teacher that forgets each carry with probability "
        f"{cfg.carry_drop:g}: greedy accuracy {w.get('start/acc_greedy', float('nan')):.3f} (sums with a carry "
        f"{w.get('start/acc_greedy_carry', float('nan')):.3f}, without {w.get('start/acc_greedy_no_carry', float('nan')):.3f}),"
        f" sampled {w.get('start/acc_sampled', float('nan')):.3f}; {100 * w.get('tokens/near_det_frac', float('nan')):.1f}% "
        f"of sampled tokens have top probability >= 0.99; final SFT loss {w.get('sft/loss_tail_mean', float('nan')):.3f}.",
        "", "## Table 1 (the paper's columns first)", "", *_table1_md(runs, cfg), "", TABLE1_PAPER, "",
        "## Phenomena (arXiv 2510.01161), judged by the toy study's rules", "",
    ]
    for c in checks:
        mark = {True: "held", False: "did NOT hold", None: "not evaluated"}[c["held"]]
        lines.append(f"- **{c['phenomenon']}**: {mark}. Rule: {c['rule']}. Measured: {c['detail']}")
    lines += ["", "## Importance ratios and what no trust region amplifies (updates >= k)", "", *_ratio_md(runs, cfg),
              "", "## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures]
    if environment:
        lines += ["", "## Environment", "", *rd.environment_lines(environment), "",
                  "The same command on another machine can give different numbers (float rounding differs and "
                  "training amplifies it): compare means over seeds."]
    return "\n".join(lines) + "\n"


def write_report(cfg, out: Path, wall_s: float, environment: dict | None = None, warm: dict | None = None) -> dict:
    """figures/, report.md, then summary.json (written last: its presence marks the study finished)."""
    study = rd.load_study(out)
    study = dataclasses.replace(study, runs=tuple(with_start_reward(r) for r in study.runs))
    runs = [summarize_llm_run(r, cfg.updates, cfg.max_grad_norm) for r in study.runs]
    bins = pooled_entropy_bins(study, max(cfg.staleness))
    checks = check_phenomena(runs, bins)
    figures = make_figures(out, study, bins)
    for name, fig in (("accuracy_by_method", accuracy_figure(study)), ("ratio_stats", ratio_figure(study))):
        fig.savefig(Path(out) / "figures" / f"{name}.png", dpi=90, bbox_inches="tight")
        figures.append(Path(out) / "figures" / f"{name}.png")
    rd.atomic_write_text(out / rd.REPORT, _markdown(cfg, runs, checks, figures, wall_s, environment, warm))
    summary = {"config": json.loads(json.dumps(cfg.to_dict())), "runs": runs, "phenomena": checks,
               "table1": table1(runs, cfg), "warm_start": warm, "wall_s": wall_s, "environment": environment}
    rd.atomic_write_text(out / rd.SUMMARY, json.dumps(summary, indent=2, allow_nan=False))
    return summary
