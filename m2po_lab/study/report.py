"""``summary.json``, ``report.md`` and figures of a study directory whose runs have all finished."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from .. import rundir as rd
from ..metrics import M2
from ..rundir import Run, atomic_write_text
from .config import StudyConfig
from .figures import make_figures, pooled_entropy_bins
from .phenomena import check_phenomena


def summarize_run(run: Run, updates: int, wall_s: float) -> dict:
    """The summary.json entry of one run (every key is defined in docs/metrics.md)."""
    pts = [(r["update"], r["eval/reward"]) for r in run.rows if r.get("eval/reward") is not None]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    final = rd.final_mean(pts, updates)
    peak_i = max(range(len(ys)), key=ys.__getitem__) if ys else 0
    peak = ys[peak_i] if ys else float("nan")
    clip = [r["clip/frac"] for r in run.rows]
    steady = [r["clip/frac"] for r in run.rows if r["update"] >= run.staleness]  # every batch exactly k stale
    m2 = [r[M2] for r in run.rows]
    start = run.config["start_reward"]
    return {
        "method": run.method, "staleness": run.staleness, "seed": run.seed, "start_reward": start,
        "final_reward": final, "peak_reward": peak, "peak_update": xs[peak_i] if xs else None,
        "clip_frac_mean": statistics.fmean(clip) if clip else float("nan"),
        "clip_frac_steady": statistics.fmean(steady) if steady else float("nan"),
        "m2_mean": statistics.fmean(m2) if m2 else float("nan"),
        "collapsed": bool(peak >= 1.5 * start and final < 0.5 * peak),
        "wall_s": wall_s,
    }


def _table(runs: list[dict], key: str) -> list[str]:
    methods = list(dict.fromkeys(r["method"] for r in runs))
    stal = sorted({r["staleness"] for r in runs})
    lines = ["| method | " + " | ".join(f"s={s}" for s in stal) + " |", "|---|" + "---|" * len(stal)]
    for m in methods:
        cells = []
        for s in stal:
            xs = [r[key] for r in runs if r["method"] == m and r["staleness"] == s]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cells.append(f"{statistics.fmean(xs):.3f} ± {sd:.3f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def _markdown(cfg: StudyConfig, runs: list[dict], checks: list[dict], figures: list[Path], wall_s: float,
              environment: dict | None) -> str:
    n = len(cfg.seeds)
    lines = [
        "# Staleness study", "",
        f"{len(runs)} runs ({', '.join(cfg.methods)} x staleness {list(cfg.staleness)} x seeds {list(cfg.seeds)}), "
        f"{cfg.updates} updates each, trained together in {wall_s:.0f} s. Tables: mean ± std over {n} seed(s).", "",
        "## Final reward (mean eval reward over the last 10% of updates)", "", *_table(runs, "final_reward"), "",
        "## Peak reward", "", *_table(runs, "peak_reward"), "",
        "## Tokens with gradient zeroed (clipped or masked), mean over all updates", "",
        *_table(runs, "clip_frac_mean"), "",
        "## Phenomena (arXiv 2510.01161)", "",
    ]
    for c in checks:
        mark = {True: "held", False: "did NOT hold", None: "not evaluated"}[c["held"]]
        lines.append(f"- **{c['phenomenon']}**: {mark}. Rule: {c['rule']}. Measured: {c['detail']}")
    lines += ["", "## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures]
    if environment:
        lines += ["", "## Environment", "", *rd.environment_lines(environment), "",
                  "The same command on another machine (CPU model, thread count, library versions) can give "
                  "different numbers: float rounding differs and training amplifies it. Compare means over seeds."]
    return "\n".join(lines) + "\n"


def write_report(cfg: StudyConfig, out: Path, wall_s: float, environment: dict | None = None) -> dict:
    """figures/, report.md, then summary.json (written last: its presence marks the study finished)."""
    study = rd.load_study(out)
    runs = [summarize_run(r, cfg.updates, wall_s) for r in study.runs]
    bins = pooled_entropy_bins(study, max(cfg.staleness))
    checks = check_phenomena(runs, bins)
    figures = make_figures(out, study, bins)
    atomic_write_text(out / rd.REPORT, _markdown(cfg, runs, checks, figures, wall_s, environment))
    summary = {"config": cfg.to_dict(), "runs": runs, "phenomena": checks, "wall_s": wall_s,
               "environment": environment}
    atomic_write_text(out / rd.SUMMARY, json.dumps(summary, indent=2))
    return summary
