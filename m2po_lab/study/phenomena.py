"""The five phenomena of arXiv 2510.01161, checked on a study's per-run summaries.

Each check is one function of the ``summary.json`` run entries (``method``, ``staleness``,
``seed``, ``start_reward``, ``final_reward``, ``peak_reward``, ``clip_frac_mean``,
``clip_frac_steady``, ``collapsed``), so the toy study and the LLM study judge by the same
code. Each returns ``{"phenomenon", "held": True | False | None (not evaluated), "rule",
"detail"}``: the rule is the threshold, stated beside the verdict.
"""

from __future__ import annotations

import statistics

PAPER_RATIO_RANGE = 0.7
"""The paper's entropy-vs-|r-1| figure (Fig. 3b) spans |r - 1| from 0 to ~0.68."""
MIN_BIN_TOKENS = 20
NAMES = ("1. GRPO degrades with staleness", "2. no_tr prospers, then collapses",
         "3. M2PO at high staleness matches on-policy GRPO", "4. M2PO masks far fewer tokens than GRPO clips",
         "5. Entropy rises with |r - 1|")
RULES = (
    "final reward at the highest staleness <= 0.90 x at the lowest, at most one inversion along the sweep",
    "no_tr's peak at the highest staleness >= GRPO's final there, and collapsed (peak >= 1.5 x start, final "
    "< 0.5 x peak) in at least 2 of 3 seeds",
    "M2PO's final at the highest staleness >= 0.95 x GRPO's final at the lowest, no seed collapsed",
    "M2PO's masked fraction <= 1/10 of GRPO's clipped fraction at the highest staleness, over updates >= k "
    "(every batch exactly k old)",
    f"over bins of |r - 1| up to {PAPER_RATIO_RANGE} with >= {MIN_BIN_TOKENS} tokens: at least 3 bins, the last "
    "above the first, at most one drop between neighbours",
)


def _cell(runs: list[dict], method: str, staleness: int, key: str) -> list:
    return [r[key] for r in runs if r["method"] == method and r["staleness"] == staleness]


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else float("nan")


def _div(a: float, b: float) -> float:
    return a / b if b else (float("inf") if a else float("nan"))


def _result(i: int, held, detail: str) -> dict:
    return {"phenomenon": NAMES[i], "held": held, "rule": RULES[i], "detail": detail}


def grpo_degrades(runs, lo, hi, stal) -> dict:
    f = [_mean(_cell(runs, "grpo", s, "final_reward")) for s in stal]
    inversions = sum(b > a for a, b in zip(f, f[1:]))
    held = f[-1] <= 0.9 * f[0] and inversions <= 1
    return _result(0, held, f"final reward by staleness {dict(zip(stal, [round(x, 3) for x in f]))}; s={hi} / "
                            f"s={lo} = {_div(f[-1], f[0]):.2f}; {inversions} inversion(s)")


def no_tr_collapses(runs, lo, hi) -> dict:
    peaks = _cell(runs, "no_tr", hi, "peak_reward")
    grpo_final = _mean(_cell(runs, "grpo", hi, "final_reward"))
    collapsed, n = sum(_cell(runs, "no_tr", hi, "collapsed")), len(peaks)
    held = _mean(peaks) >= grpo_final and collapsed >= (2 * n + 2) // 3
    return _result(1, held, f"no_tr s={hi} peak {_mean(peaks):.3f} vs grpo s={hi} final {grpo_final:.3f}; "
                            f"collapsed in {collapsed}/{n} seeds")


def m2po_matches_on_policy(runs, lo, hi) -> dict:
    g0 = _mean(_cell(runs, "grpo", lo, "final_reward"))
    m_final = _mean(_cell(runs, "m2po", hi, "final_reward"))
    collapsed = sum(_cell(runs, "m2po", hi, "collapsed"))
    return _result(2, m_final >= 0.95 * g0 and collapsed == 0,
                   f"m2po s={hi} final {m_final:.3f} vs 0.95 x grpo s={lo} final {0.95 * g0:.3f}; "
                   f"collapsed in {collapsed} seed(s)")


def m2po_masks_few(runs, lo, hi) -> dict:
    m_clip, g_clip = _mean(_cell(runs, "m2po", hi, "clip_frac_steady")), _mean(_cell(runs, "grpo", hi, "clip_frac_steady"))
    m_all, g_all = _mean(_cell(runs, "m2po", hi, "clip_frac_mean")), _mean(_cell(runs, "grpo", hi, "clip_frac_mean"))
    return _result(3, m_clip <= g_clip / 10,
                   f"s={hi}, updates >= {hi}: m2po masked {100 * m_clip:.4f}% vs grpo clipped {100 * g_clip:.3f}% "
                   f"({_div(g_clip, m_clip):.1f}x); over all updates, including the first {hi} on base-policy "
                   f"batches: {100 * m_all:.3f}% vs {100 * g_all:.3f}% ({_div(g_all, m_all):.1f}x)")


def entropy_rises(bins: dict | None, staleness: int) -> dict:
    if not bins:
        return _result(4, None, "no histogram records")
    rows = list(zip(bins["edges"], bins["edges"][1:], bins["entropy"], bins["counts"]))
    ent = [e for _, hi_, e, n in rows if n >= MIN_BIN_TOKENS and hi_ is not None and hi_ <= PAPER_RATIO_RANGE]
    beyond = [f"{e:.2f}" for _, hi_, e, n in rows if n >= MIN_BIN_TOKENS and (hi_ is None or hi_ > PAPER_RATIO_RANGE)]
    rising = len(ent) >= 3 and ent[-1] > ent[0] and sum(b >= a for a, b in zip(ent, ent[1:])) >= len(ent) - 2
    return _result(4, rising, f"s={staleness}, every method and seed pooled: mean token entropy by bin "
                              + ", ".join(f"{e:.2f}" for e in ent) + (f"; beyond {PAPER_RATIO_RANGE}: "
                                                                       f"{', '.join(beyond)}" if beyond else ""))


def check_phenomena(runs: list[dict], entropy_bins: dict | None) -> list[dict]:
    """All five checks (not evaluated where the methods they compare were not run, or nothing was learned)."""
    stal = sorted({r["staleness"] for r in runs})
    methods = {r["method"] for r in runs}
    lo, hi = stal[0], stal[-1]
    g0 = _mean(_cell(runs, "grpo", lo, "final_reward")) if "grpo" in methods else float("nan")
    if "grpo" in methods and not g0 > 0:  # nothing learned: no comparison means anything
        why = f"GRPO at s={lo} earned no reward (final {g0:.3f}); train longer or warm-start more"
        return [_result(i, None, why) for i in range(4)] + [entropy_rises(entropy_bins, hi)]
    out = [grpo_degrades(runs, lo, hi, stal) if "grpo" in methods and len(stal) > 1
           else _result(0, None, "needs grpo at two or more staleness values")]
    out.append(no_tr_collapses(runs, lo, hi) if {"grpo", "no_tr"} <= methods else _result(1, None, "needs grpo and no_tr"))
    if {"grpo", "m2po"} <= methods:
        out += [m2po_matches_on_policy(runs, lo, hi), m2po_masks_few(runs, lo, hi)]
    else:
        out += [_result(2, None, "needs grpo and m2po"), _result(3, None, "needs grpo and m2po")]
    return out + [entropy_rises(entropy_bins, hi)]
