"""Read a finished (or running) LLM staleness study and print what the report does not: curves and windows.

    python experiments/llm_staleness/analyze.py STUDY [--staleness 256] [--every 100]

Per run at the chosen staleness: the eval curve (sampled accuracy every ``--every``
updates), its peak, trough after the peak and final, and by window of updates the
mechanism the issue asks about: the share of kept tokens with A > 0 and r > 2
(``amp/frac``), their share of sum r |A| (``amp/weight_share``), the per-batch max r,
M2, the gradient norm before clipping and the fraction of updates the clip acted on.
Seconds; reads metrics.jsonl only.
"""

from __future__ import annotations

import argparse
import statistics

from m2po_lab import rundir as rd

KEYS = ("amp/frac", "amp/weight_share", "is/ratio_max", "is/m2", "grad_norm", "entropy")


MEAN_KEYS = ("amp/frac", "amp/weight_share", "is/m2")
"""Averaged over a window; the others: the window's median (robust to one spike)."""


def _window(rows, lo, hi, key):
    xs = [r[key] for r in rows if lo <= r["update"] < hi and isinstance(r.get(key), (int, float))]
    if not xs:
        return float("nan")
    return statistics.fmean(xs) if key in MEAN_KEYS else statistics.median(xs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study")
    p.add_argument("--staleness", type=int, default=None, help="default: the study's highest")
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--window", type=int, default=200)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    args = p.parse_args()
    study = rd.load_study(args.study)
    k = args.staleness if args.staleness is not None else max(study.staleness)
    for run in sorted((r for r in study.runs if r.staleness == k), key=lambda r: (r.method, r.seed)):
        ev = [(r["update"], r["eval/reward"]) for r in run.rows if isinstance(r.get("eval/reward"), (int, float))]
        start = (run.config.get("start") or {}).get("eval/reward")
        curve = " ".join(f"{y:.2f}" for u, y in ev if (u + 1) % args.every == 0)
        if ev:
            pu, peak = max(ev, key=lambda t: t[1])
            trough = min((y for u, y in ev if u >= pu), default=float("nan"))
            print(f"{run.name}: start {start:.3f} peak {peak:.3f} @ {pu} trough-after-peak {trough:.3f} "
                  f"final {ev[-1][1]:.3f}\n  eval every {args.every}: {curve}")
        last = run.rows[-1]["update"] + 1
        print("  window      " + "  ".join(f"{key:>16s}" for key in KEYS) + "  clipped")
        for lo in range(0, last, args.window):
            hi = min(lo + args.window, last)
            vals = "  ".join(f"{_window(run.rows, lo, hi, key):16.4g}" for key in KEYS)
            g = [r["grad_norm"] for r in run.rows if lo <= r["update"] < hi and r.get("grad_norm") is not None]
            clipped = sum(x > args.max_grad_norm for x in g) / max(len(g), 1)
            print(f"  {lo:5d}-{hi:<5d} {vals}  {clipped:7.2f}")


if __name__ == "__main__":
    main()
