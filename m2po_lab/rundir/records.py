"""The shape of a metrics row, checked on read, and the pooling the reports and the explorer share."""

from __future__ import annotations

from pathlib import Path

from ..metrics import ENTROPY_BY_RATIO, TOKENS_ZEROED
from .files import RunDirError

REQUIRED_KEYS = ("update", "staleness", "reward", "loss", "entropy", "grad_norm", "clip/frac", "is/ratio_mean",
                 "is/ratio_max", "is/log_ratio_abs_p99", "kl/k1", "kl/k3")
"""Keys every metrics.jsonl line carries (docs/run_format.md)."""
QUANTILE_KEY, HIST_KEY, ENTROPY_KEY, TOKENS_KEY = (
    "is/log_ratio_quantiles", "is/log_ratio_hist", ENTROPY_BY_RATIO, TOKENS_ZEROED)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(v, allow_none: bool = True) -> bool:
    return isinstance(v, list) and all(_number(x) or (allow_none and x is None) for x in v)


def _record_problem(key: str, rec) -> str | None:
    """What is wrong with a structured record (None when it is well formed)."""
    if key == QUANTILE_KEY:
        ok = isinstance(rec, dict) and _numbers(rec.get("q"), False) and _numbers(rec.get("v")) \
            and len(rec["q"]) == len(rec["v"])
        return None if ok else 'needs {"q": [numbers], "v": [numbers]} of equal length'
    if key == HIST_KEY:
        ok = isinstance(rec, dict) and _numbers(rec.get("edges"), False) and _numbers(rec.get("counts"), False) \
            and len(rec["edges"]) == len(rec["counts"]) + 1
        return None if ok else 'needs {"edges": [n + 1 numbers], "counts": [n numbers]}'
    if key == ENTROPY_KEY:
        ok = isinstance(rec, dict) and _numbers(rec.get("edges")) and _numbers(rec.get("entropy")) \
            and _numbers(rec.get("counts"), False) and len(rec["edges"]) == len(rec["counts"]) + 1 \
            and len(rec["entropy"]) == len(rec["counts"])
        return None if ok else 'needs {"edges": [n + 1], "entropy": [n], "counts": [n]}'
    if key == TOKENS_KEY:
        ok = isinstance(rec, list) and all(
            isinstance(t, dict) and isinstance(t.get("text"), str) and isinstance(t.get("token"), str)
            and _number(t.get("log_ratio")) for t in rec)
        return None if ok else 'needs a list of {"text": str, "token": str, "log_ratio": number}'
    return None


def check_row(row: dict, line: int, path: Path) -> None:
    """``RunDirError`` naming the line when a row lacks a required key or holds a malformed record."""
    missing = [k for k in REQUIRED_KEYS if k not in row]
    if missing:
        raise RunDirError(f"line {line} of {str(path)!r} lacks the required keys {missing} (docs/run_format.md)")
    bad = [k for k in REQUIRED_KEYS if not (row[k] is None or _number(row[k]))]
    if bad:
        raise RunDirError(f"line {line} of {str(path)!r}: {bad} must be numbers, got {[row[k] for k in bad]}")
    for key in (QUANTILE_KEY, HIST_KEY, ENTROPY_KEY, TOKENS_KEY):
        if key in row and (problem := _record_problem(key, row[key])):
            raise RunDirError(f"line {line} of {str(path)!r}: {key} {problem}")


def pool_entropy_bins(rows) -> dict | None:
    """Token-weighted mean entropy per |r-1| bin over every ``entropy/by_ratio`` record in ``rows``.

    The pooling of the study report's phenomenon-5 check and of the explorer's entropy chart.
    """
    edges, ent_sum, counts = None, None, None
    for row in rows:
        b = row.get(ENTROPY_KEY)
        if not isinstance(b, dict):
            continue
        if edges is None:
            edges, ent_sum, counts = b["edges"], [0.0] * len(b["counts"]), [0] * len(b["counts"])
        for i, (e, n) in enumerate(zip(b["entropy"], b["counts"])):
            ent_sum[i] += (e or 0.0) * n
            counts[i] += n
    if edges is None:
        return None
    return {"edges": edges, "entropy": [s / max(n, 1) for s, n in zip(ent_sum, counts)], "counts": counts}
