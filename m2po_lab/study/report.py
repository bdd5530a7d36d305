"""Summaries, phenomenon checks, figures and report.md of a finished study directory."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from .. import rundir as rd
from ..rundir import atomic_write_text, pool_entropy_bins, read_metrics
from .config import StudyConfig
from .runner import RunSpec


def _eval_curve(rows: list[dict]) -> tuple[list[int], list[float]]:
    pts = [(r["update"], r["eval/reward"]) for r in rows if r.get("eval/reward") is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def summarize_run(spec: RunSpec, rows: list[dict], start_reward: float, updates: int, wall_s: float) -> dict:
    """The summary.json entry of one run (definitions in docs/metrics.md)."""
    xs, ys = _eval_curve(rows)
    tail = [y for x, y in zip(xs, ys) if x >= 0.9 * updates] or ys[-1:]
    final = statistics.fmean(tail) if tail else float("nan")
    peak_i = max(range(len(ys)), key=ys.__getitem__) if ys else 0
    peak = ys[peak_i] if ys else float("nan")
    clip = [r["clip/frac"] for r in rows]
    steady = [r["clip/frac"] for r in rows if r["update"] >= spec.staleness]  # every batch exactly k stale
    m2 = [r["m2"] for r in rows]
    return {
        "method": spec.method,
        "staleness": spec.staleness,
        "seed": spec.seed,
        "start_reward": start_reward,
        "final_reward": final,
        "peak_reward": peak,
        "peak_update": xs[peak_i] if xs else None,
        "clip_frac_mean": statistics.fmean(clip) if clip else float("nan"),
        "clip_frac_steady": statistics.fmean(steady) if steady else float("nan"),
        "m2_mean": statistics.fmean(m2) if m2 else float("nan"),
        "collapsed": bool(peak >= 1.5 * start_reward and final < 0.5 * peak),
        "wall_s": wall_s,
    }


def _cell(runs: list[dict], method: str, staleness: int, key: str) -> list[float]:
    return [r[key] for r in runs if r["method"] == method and r["staleness"] == staleness]


def _mean(xs):
    return statistics.fmean(xs) if xs else float("nan")


PAPER_RATIO_RANGE = 0.7  # the paper's entropy-vs-|r-1| figure spans |r - 1| from 0 to ~0.68


def _div(a: float, b: float) -> float:
    return a / b if b else (float("inf") if a else float("nan"))


def check_phenomena(runs: list[dict], entropy_bins: dict | None) -> list[dict]:
    """The five phenomena of the default preset (arXiv 2510.01161), each held / not held / not run."""
    stal = sorted({r["staleness"] for r in runs})
    methods = {r["method"] for r in runs}
    lo, hi = stal[0], stal[-1]
    out = []

    def add(name, held, detail):
        out.append({"phenomenon": name, "held": held, "detail": detail})

    g0 = _mean(_cell(runs, "grpo", lo, "final_reward")) if "grpo" in methods else float("nan")
    if "grpo" in methods and not g0 > 0:  # nothing learned: no comparison means anything
        why = f"GRPO at s={lo} earned no reward (final {g0:.3f}); train longer or warm-start more"
        for name in ("1. GRPO degrades with staleness", "2. no_tr prospers, then collapses",
                     "3. M2PO at high staleness matches on-policy GRPO",
                     "4. M2PO masks far fewer tokens than GRPO clips"):
            add(name, None, why)
        methods = set()
    elif "grpo" in methods and len(stal) > 1:
        f = [_mean(_cell(runs, "grpo", s, "final_reward")) for s in stal]
        inversions = sum(b > a for a, b in zip(f, f[1:]))
        held = f[-1] <= 0.9 * f[0] and inversions <= 1
        add("1. GRPO degrades with staleness", held,
            f"final reward by staleness {dict(zip(stal, [round(x, 3) for x in f]))}; s={hi} / s={lo} = "
            f"{_div(f[-1], f[0]):.2f} (needs <= 0.90); {inversions} inversion(s) (<= 1 allowed)")
    elif methods:
        add("1. GRPO degrades with staleness", None, "needs grpo at two or more staleness values")
    if {"grpo", "no_tr"} <= methods:
        peaks = _cell(runs, "no_tr", hi, "peak_reward")
        grpo_final = _mean(_cell(runs, "grpo", hi, "final_reward"))
        collapsed = sum(_cell(runs, "no_tr", hi, "collapsed"))
        n = len(peaks)
        held = _mean(peaks) >= grpo_final and collapsed >= (2 * n + 2) // 3
        add("2. no_tr prospers, then collapses", held,
            f"no_tr s={hi} peak {_mean(peaks):.3f} vs grpo s={hi} final {grpo_final:.3f}; "
            f"collapsed in {collapsed}/{n} seeds (needs >= 2/3)")
    elif methods:
        add("2. no_tr prospers, then collapses", None, "needs grpo and no_tr")
    if {"grpo", "m2po"} <= methods:
        m_final = _mean(_cell(runs, "m2po", hi, "final_reward"))
        collapsed = sum(_cell(runs, "m2po", hi, "collapsed"))
        held = m_final >= 0.95 * g0 and collapsed == 0
        add("3. M2PO at high staleness matches on-policy GRPO", held,
            f"m2po s={hi} final {m_final:.3f} vs 0.95 x grpo s={lo} final {0.95 * g0:.3f}; "
            f"collapsed in {collapsed} seed(s)")
        m_clip = _mean(_cell(runs, "m2po", hi, "clip_frac_steady"))
        g_clip = _mean(_cell(runs, "grpo", hi, "clip_frac_steady"))
        m_all = _mean(_cell(runs, "m2po", hi, "clip_frac_mean"))
        g_all = _mean(_cell(runs, "grpo", hi, "clip_frac_mean"))
        add("4. M2PO masks far fewer tokens than GRPO clips", m_clip <= g_clip / 10,
            f"s={hi}, updates >= {hi} (every batch exactly {hi} stale): m2po masked {100 * m_clip:.4f}% vs grpo "
            f"clipped {100 * g_clip:.3f}% (ratio {_div(g_clip, m_clip):.1f}x, needs >= 10x); over all updates, "
            f"including the first {hi} on base-policy batches: {100 * m_all:.3f}% vs {100 * g_all:.3f}% "
            f"({_div(g_all, m_all):.1f}x)")
    elif methods:
        add("3. M2PO at high staleness matches on-policy GRPO", None, "needs grpo and m2po")
        add("4. M2PO masks far fewer tokens than GRPO clips", None, "needs grpo and m2po")
    if entropy_bins:
        # over the range of the paper's Fig. 3b (|r - 1| up to ~0.7); bins with >= 20 tokens
        bins = list(zip(entropy_bins["edges"], entropy_bins["edges"][1:], entropy_bins["entropy"],
                        entropy_bins["counts"]))
        ent = [e for lo_, hi_, e, n in bins if n >= 20 and hi_ is not None and hi_ <= PAPER_RATIO_RANGE]
        rising = len(ent) >= 3 and ent[-1] > ent[0] and sum(b >= a for a, b in zip(ent, ent[1:])) >= len(ent) - 2
        beyond = [f"{e:.2f}" for lo_, hi_, e, n in bins if n >= 20 and (hi_ is None or hi_ > PAPER_RATIO_RANGE)]
        add("5. Entropy rises with |r - 1|", rising,
            f"mean token entropy by |r-1| bin up to {PAPER_RATIO_RANGE} (the paper's range): "
            + ", ".join(f"{e:.2f}" for e in ent) + (f"; beyond it: {', '.join(beyond)}" if beyond else ""))
    else:
        add("5. Entropy rises with |r - 1|", None, "no histogram records")
    return out


def entropy_by_ratio(out: Path, specs: list[RunSpec], staleness: int) -> dict | None:
    """Entropy-by-|r-1| bins pooled over every record of the runs at ``staleness``."""
    return pool_entropy_bins(
        row for spec in specs if spec.staleness == staleness
        for row in read_metrics(out / rd.RUNS / spec.name / rd.METRICS)
    )


def _table(runs: list[dict], key: str) -> list[str]:
    methods = list(dict.fromkeys(r["method"] for r in runs))
    stal = sorted({r["staleness"] for r in runs})
    lines = ["| method | " + " | ".join(f"s={s}" for s in stal) + " |", "|---|" + "---|" * len(stal)]
    for m in methods:
        cells = []
        for s in stal:
            xs = _cell(runs, m, s, key)
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cells.append(f"{_mean(xs):.3f} ± {sd:.3f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def write_report(cfg: StudyConfig, out: Path, specs: list[RunSpec], start_reward: list[float], wall_s: float,
                 environment: dict | None = None) -> dict:
    """figures/, report.md, then summary.json (written last: its presence marks the study finished)."""
    from .figures import make_figures

    runs = []
    for spec, s0 in zip(specs, start_reward):
        rows = read_metrics(out / rd.RUNS / spec.name / rd.METRICS)
        runs.append(summarize_run(spec, rows, s0, cfg.updates, wall_s))
    hi = max(cfg.staleness)
    bins = entropy_by_ratio(out, specs, hi)
    checks = check_phenomena(runs, bins)
    summary = {"config": cfg.to_dict(), "runs": runs, "phenomena": checks, "wall_s": wall_s,
               "environment": environment}
    figures = make_figures(out, specs, cfg, bins)
    lines = [
        "# Staleness study",
        "",
        f"{len(specs)} runs ({', '.join(cfg.methods)} x staleness {list(cfg.staleness)} x seeds "
        f"{list(cfg.seeds)}), {cfg.updates} updates each, trained together in {wall_s:.0f} s.",
        "",
        "## Final reward (mean eval reward over the last 10% of updates, mean ± std over seeds)",
        "",
        *_table(runs, "final_reward"),
        "",
        "## Peak reward",
        "",
        *_table(runs, "peak_reward"),
        "",
        "## Clipped or masked token fraction (mean over updates)",
        "",
        *_table(runs, "clip_frac_mean"),
        "",
        "## Phenomena (arXiv 2510.01161)",
        "",
    ]
    for c in checks:
        mark = {True: "held", False: "did NOT hold", None: "not evaluated"}[c["held"]]
        lines.append(f"- **{c['phenomenon']}**: {mark}. {c['detail']}")
    lines += ["", "## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures]
    if environment:
        lines += ["", "## Environment", "", *rd.environment_lines(environment), "",
                  "The same command on another machine (CPU model, thread count, library versions) can give "
                  "different numbers: float rounding differs and training amplifies it. Compare means over seeds."]
    atomic_write_text(out / rd.REPORT, "\n".join(lines) + "\n")
    atomic_write_text(out / rd.SUMMARY, json.dumps(summary, indent=2))
    return summary
