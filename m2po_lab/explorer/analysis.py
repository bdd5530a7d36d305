"""The explorer's analysis of run and study directories: series, seed bands, steady fractions, tables.

Pure data: no Streamlit, no plotting. Reading and checking the directories is
``m2po_lab.rundir`` (``load_run``, ``load_study``); this module works on what it returns.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..rundir import HIST_KEY, QUANTILE_KEY, TOKENS_KEY, Run, final_mean, pool_entropy_bins


def study_cache_dir(config: dict, root=None) -> Path:
    """A folder named by the hash of a study config: the same config reuses (or resumes) it.

    ``root`` defaults to $M2PO_LAB_CACHE, else ``<tmp>/m2po-lab-studies``.
    """
    root = Path(root or os.environ.get("M2PO_LAB_CACHE") or Path(tempfile.gettempdir()) / "m2po-lab-studies")
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return root / f"study_{key}"


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------- series of one run
def numeric_keys(runs) -> list[str]:
    """Keys with a number (not a bool) in some row of some run, ``update`` excluded, sorted."""
    keys = set()
    for run in runs:
        for row in run.rows:
            keys.update(k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    keys.discard("update")
    return sorted(keys)


def series(run: Run, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(update, value) where ``key`` holds a finite number; empty arrays when never."""
    pts = [(r["update"], r[key]) for r in run.rows if _finite(r.get(key))]
    if not pts:
        return np.zeros(0, dtype=int), np.zeros(0)
    x, y = zip(*pts)
    return np.asarray(x), np.asarray(y, dtype=float)


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (the first points average what exists)."""
    y = np.asarray(y, dtype=float)
    if window <= 1 or len(y) == 0:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    n = np.minimum(np.arange(1, len(y) + 1), window)
    return (c[1:] - c[np.arange(1, len(y) + 1) - n]) / n


def update_range(runs) -> tuple[int, int]:
    """(first, last) update over the runs."""
    return min(r.rows[0]["update"] for r in runs), max(r.rows[-1]["update"] for r in runs)


def values_at(run: Run, keys, update: int) -> dict[str, float | None]:
    """Per key, its latest value at an update <= ``update`` (eval keys are logged at intervals)."""
    out = {k: None for k in keys}
    for row in run.rows:
        if row["update"] > update:
            break
        for k in keys:
            if _finite(row.get(k)):
                out[k] = float(row[k])
    return out


def quantile_bands(run: Run) -> dict | None:
    """``is/log_ratio_quantiles`` over time: {"update": (n,), "q": [..], "v": (n, len(q))}, None if never logged."""
    recs = [(r["update"], r[QUANTILE_KEY]) for r in run.rows if isinstance(r.get(QUANTILE_KEY), dict)]
    if not recs:
        return None
    q = recs[0][1]["q"]
    keep = [(u, rec["v"]) for u, rec in recs if rec.get("q") == q and len(rec.get("v", ())) == len(q)]
    v = np.array([[np.nan if x is None else x for x in vs] for _, vs in keep], dtype=float)
    return {"update": np.array([u for u, _ in keep]), "q": list(q), "v": v}


def quantile(bands: dict, q: float) -> np.ndarray:
    """The column of ``bands["v"]`` for quantile ``q``."""
    for i, qi in enumerate(bands["q"]):
        if math.isclose(qi, q):
            return bands["v"][:, i]
    raise KeyError(f"quantile {q} was not logged; logged: {bands['q']}")


def hist_updates(runs) -> list[int]:
    """Updates at which every one of ``runs`` recorded ``is/log_ratio_hist``."""
    sets = [{r["update"] for r in run.rows if isinstance(r.get(HIST_KEY), dict)} for run in runs]
    return sorted(set.intersection(*sets)) if sets else []


def hist_at(run: Run, update: int) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) of ``is/log_ratio_hist`` recorded at ``update``."""
    for r in run.rows:
        if r["update"] == update and isinstance(r.get(HIST_KEY), dict):
            return np.asarray(r[HIST_KEY]["edges"], dtype=float), np.asarray(r[HIST_KEY]["counts"], dtype=float)
    raise KeyError(f"{run.name}: no {HIST_KEY} at update {update}")


def record_at(run: Run, update: int, key: str) -> tuple[int | None, list[dict]]:
    """The non-empty ``key`` record of the latest update <= ``update`` that logged one: (that update, its items)."""
    found, items = None, []
    for row in run.rows:
        if row["update"] > update:
            break
        if row.get(key):
            found, items = row["update"], row[key]
    return found, list(items)


def masked_tokens_at(run: Run, update: int) -> tuple[int | None, list[dict]]:
    """The ``tokens/zeroed`` of the latest update <= ``update`` that logged any: (that update, tokens)."""
    return record_at(run, update, TOKENS_KEY)


def masked_token_count(run: Run) -> int:
    return sum(len(r.get(TOKENS_KEY) or ()) for r in run.rows)


# ---------------------------------------------------------------- a study: groups of seeds
def select(runs, method: str | None = None, staleness: int | None = None) -> list[Run]:
    """The runs of ``method`` (any when None) at ``staleness`` (any when None)."""
    return [r for r in runs
            if (method is None or r.method == method) and (staleness is None or r.staleness == staleness)]


def band_of(curves, ddof: int = 0) -> dict | None:
    """Mean, std (``ddof`` 0: population; 1: sample, 0 for one curve), min and max over ``curves`` (pairs of
    updates and values) on the updates every curve has; ``n`` is the number of curves, None when none has a point."""
    curves = [(np.asarray(x), np.asarray(y, dtype=float)) for x, y in curves if len(x)]
    if not curves:
        return None
    common = sorted(set.intersection(*(set(x.tolist()) for x, _ in curves)))
    ys = np.stack([y[np.isin(x, common)] for x, y in curves])  # (curves, n)
    std = ys.std(0, ddof=ddof) if len(curves) > ddof else np.zeros(len(common))
    return {"update": np.asarray(common), "mean": ys.mean(0), "std": std, "min": ys.min(0), "max": ys.max(0),
            "n": len(curves)}


def seed_band(runs, key: str, window: int = 1, ddof: int = 0) -> dict | None:
    """:func:`band_of` the seeds' ``key`` (smoothed over ``window`` points)."""
    return band_of([(x, smooth(y, window)) for x, y in (series(r, key) for r in runs)], ddof)


def steady_fraction(runs, key: str = "clip/frac") -> float:
    """Mean over seeds of the mean of ``key`` over updates >= staleness (every batch exactly that stale).

    The same definition as ``clip_frac_steady`` in summary.json; nan when no run has such updates.
    """
    per_run = []
    for r in runs:
        x, y = series(r, key)
        y = y[x >= (r.staleness or 0)]
        if len(y):
            per_run.append(float(y.mean()))
    return float(np.mean(per_run)) if per_run else float("nan")


def final_value(runs, key: str = "eval/reward", updates: int | None = None) -> float:
    """Mean over seeds of the final ``key`` (:func:`m2po_lab.rundir.final_mean`: over the last 10% of ``updates``,
    summary.json's ``final_reward``; the last logged value when ``updates`` is None); nan when never logged."""
    finals = [final_mean(zip(x.tolist(), y.tolist()), updates) for x, y in (series(r, key) for r in runs) if len(x)]
    return float(np.mean(finals)) if finals else float("nan")


def pooled_entropy_by_ratio(runs) -> dict | None:
    """``entropy/by_ratio`` pooled over every record of ``runs`` (the study report's pooling), as arrays."""
    pooled = pool_entropy_bins(row for run in runs for row in run.rows)
    if pooled is None:
        return None
    counts = np.asarray(pooled["counts"])
    entropy = np.where(counts > 0, np.asarray(pooled["entropy"], dtype=float), np.nan)
    return {"edges": pooled["edges"], "entropy": entropy, "counts": counts.astype(int)}


def bin_labels(edges) -> list[str]:
    """Readable labels of bins given by ``edges`` (a ``None`` last edge is infinity)."""
    fmt = lambda e: "inf" if e is None else f"{e:.2g}"  # noqa: E731
    return [f"{fmt(a)}-{fmt(b)}" for a, b in zip(edges, edges[1:])]


def summary_table(summary: dict) -> list[dict]:
    """summary.json's runs as one row per (method, staleness): means over seeds."""
    groups = defaultdict(list)
    for r in summary.get("runs", []):
        groups[(r["method"], r["staleness"])].append(r)
    out = []
    for (method, staleness), rs in groups.items():
        mean = lambda k: float(np.mean([np.nan if r.get(k) is None else r[k] for r in rs]))  # noqa: E731
        out.append({
            "method": method, "staleness": staleness, "seeds": len(rs),
            "final_reward": mean("final_reward"), "peak_reward": mean("peak_reward"),
            "clip_frac_mean": mean("clip_frac_mean"), "clip_frac_steady": mean("clip_frac_steady"),
            "m2_mean": mean("m2_mean"), "collapsed": sum(bool(r.get("collapsed")) for r in rs),
        })
    return sorted(out, key=lambda r: (r["staleness"], r["method"]))
