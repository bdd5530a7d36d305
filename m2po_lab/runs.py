"""Read, check and aggregate run and study directories (docs/run_format.md) for the explorer.

Pure data: no Streamlit, no plotting. Every problem with a directory (missing, empty, a line
that is not JSON, a missing required key, ...) raises ``RunDirError`` with a message meant
for the reader of the page. A torn *last* line of ``metrics.jsonl`` (a run killed mid-write)
is dropped, as ``m2po_lab.study.read_metrics`` does; a bad line anywhere else is an error.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METRICS, CONFIG, SUMMARY = "metrics.jsonl", "config.json", "summary.json"
REQUIRED_KEYS = ("update", "staleness", "reward", "loss", "entropy", "grad_norm", "clip/frac", "is/ratio_mean",
                 "is/ratio_max", "is/log_ratio_abs_p99", "kl/k1", "kl/k3")
"""Keys every metrics.jsonl line carries (docs/run_format.md, "Always present")."""
QUANTILE_KEY, HIST_KEY, ENTROPY_KEY = "is/log_ratio_quantiles", "is/log_ratio_hist", "entropy_by_ratio"
_NAME = re.compile(r"^(?P<method>.+)_s(?P<staleness>\d+)_seed(?P<seed>\d+)$")  # runs/<method>_s<k>_seed<seed>


class RunDirError(ValueError):
    """A run or study directory that cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class Run:
    """One run directory: its config, its metric rows (one per update) and what it is."""

    path: str
    name: str
    kind: str
    """"toy" or "llm" (config.json "kind", or "llm" when rows carry ``masked_tokens``)."""
    method: str | None
    staleness: int | None
    seed: int | None
    config: dict
    rows: tuple[dict, ...]


@dataclass(frozen=True)
class Study:
    """A study directory: its config, ``summary.json`` (None until the study finished) and runs."""

    path: str
    config: dict
    summary: dict | None
    runs: tuple[Run, ...]

    @property
    def methods(self) -> list[str]:
        """In the study config's order, then any other method found."""
        found, listed = {r.method for r in self.runs}, self.config.get("methods", [])
        return [m for m in listed if m in found] + sorted(found - set(listed))

    @property
    def staleness(self) -> list[int]:
        return sorted({r.staleness for r in self.runs})


# ---------------------------------------------------------------- reading
def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{what} {str(path)!r} is not valid JSON ({e})") from None
    except OSError as e:
        raise RunDirError(f"cannot read {what} {str(path)!r}: {e.strerror}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{what} {str(path)!r} holds a JSON {type(data).__name__}, expected an object")
    return data


def _is_number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _finite(v) -> bool:
    return _is_number(v) and v is not None and math.isfinite(v)


def read_rows(path) -> list[dict]:
    """The rows of a metrics.jsonl, checked: JSON objects with REQUIRED_KEYS, ``update`` increasing.

    A torn last line is dropped; an empty file, a bad line before the last, a missing key, a
    non-numeric required value or a repeated update raises ``RunDirError``.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise RunDirError(f"cannot read {str(path)!r}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise RunDirError(f"{str(path)!r} is not a text file (metrics.jsonl holds one JSON object per line)") from None
    rows, last = [], -1
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):
                break  # torn last line: the run was stopped while writing it
            raise RunDirError(
                f"line {i} of {str(path)!r} is not JSON ({e.msg}); only the last line may be torn"
            ) from None
        if not isinstance(row, dict):
            raise RunDirError(f"line {i} of {str(path)!r} is a JSON {type(row).__name__}, expected an object")
        missing = [k for k in REQUIRED_KEYS if k not in row]
        if missing:
            raise RunDirError(f"line {i} of {str(path)!r} lacks the required keys {missing} (docs/run_format.md)")
        bad = [k for k in REQUIRED_KEYS if not _is_number(row[k])]
        if bad:
            raise RunDirError(f"line {i} of {str(path)!r}: {bad} must be numbers, got {[row[k] for k in bad]}")
        if not isinstance(row["update"], int) or row["update"] <= last:
            raise RunDirError(f"line {i} of {str(path)!r}: update={row['update']!r} does not follow update={last}")
        last = row["update"]
        rows.append(row)
    if not rows:
        raise RunDirError(f"{str(path)!r} holds no complete line: the run has not logged an update yet")
    return rows


def load_run(path) -> Run:
    """Read one run directory (``config.json`` optional, ``metrics.jsonl`` required)."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{str(path)!r} is not a directory" if path.exists() else f"{str(path)!r} does not exist")
    if not (path / METRICS).is_file():
        raise RunDirError(f"{str(path)!r} holds no {METRICS}: not a run directory (see docs/run_format.md)")
    config = _read_json(path / CONFIG, "run config") if (path / CONFIG).is_file() else {}
    rows = read_rows(path / METRICS)
    kind = "llm" if any("masked_tokens" in r for r in rows) else config.get("kind", "toy")
    if kind not in ("toy", "llm"):
        raise RunDirError(f"config.json of {str(path)!r}: kind={kind!r}; accepted: 'toy', 'llm'")
    m = _NAME.match(path.name)
    method = config.get("method", config.get("loss", m["method"] if m else None))
    staleness = config.get("staleness", int(m["staleness"]) if m else None)
    seed = config.get("seed", int(m["seed"]) if m else None)
    return Run(str(path), path.name, kind, method, staleness, seed, config, tuple(rows))


def is_study_dir(path) -> bool:
    return (Path(path) / "runs").is_dir()


def find_runs(path) -> dict[str, Path]:
    """Run directories under ``path``: itself, a study's ``runs/*``, or the sub-folders that are runs."""
    path = Path(path)
    if not str(path).strip() or str(path) == ".":
        raise RunDirError("enter the path of a run or study directory")
    if not path.exists():
        raise RunDirError(f"{str(path)!r} does not exist")
    if not path.is_dir():
        raise RunDirError(f"{str(path)!r} is not a directory")
    if (path / METRICS).exists():
        return {path.name: path}
    parent = path / "runs" if is_study_dir(path) else path
    runs = {d.name: d for d in sorted(parent.iterdir()) if d.is_dir() and (d / METRICS).exists()}
    if not runs:
        raise RunDirError(
            f"{str(path)!r} holds no {METRICS}, and no run directory under it (a run holds {METRICS}; "
            "a study holds runs/<method>_s<staleness>_seed<seed>/)"
        )
    return runs


def load_study(path) -> Study:
    """Read a study directory: ``config.json``, ``summary.json`` when present, every ``runs/*``."""
    path = Path(path)
    if not path.is_dir():
        find_runs(path)  # raises the message for a missing path or a file
    if not is_study_dir(path):
        raise RunDirError(f"{str(path)!r} is not a study directory: it has no runs/ folder (docs/run_format.md)")
    config = _read_json(path / CONFIG, "study config") if (path / CONFIG).is_file() else {}
    summary = _read_json(path / SUMMARY, "study summary") if (path / SUMMARY).is_file() else None
    runs = tuple(load_run(p) for p in find_runs(path).values())
    for r in runs:
        if r.method is None or r.staleness is None:
            raise RunDirError(f"run {r.path!r}: no method / staleness in its config.json or name")
    return Study(str(path), config, summary, runs)


def dir_signature(path) -> tuple:
    """(file, mtime_ns, size) of every file the explorer reads under ``path``: a cache key."""
    path = Path(path)
    if not path.is_dir():
        return (str(path), path.exists())
    files = [path / CONFIG, path / SUMMARY, path / METRICS, *path.glob("*/" + METRICS), *path.glob("runs/*/" + METRICS)]
    files += [p.with_name(CONFIG) for p in files[3:]]
    out = []
    for p in files:
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((str(p), st.st_mtime_ns, st.st_size))
    return (str(path), *sorted(out))


# ---------------------------------------------------------------- a live study's cache folder
def study_cache_dir(config: dict, root=None) -> Path:
    """A folder named by the hash of the study config: the same config reuses (or resumes) it.

    ``root`` defaults to $M2PO_LAB_CACHE, else ``<tmp>/m2po-lab-studies``.
    """
    root = Path(root or os.environ.get("M2PO_LAB_CACHE") or Path(tempfile.gettempdir()) / "m2po-lab-studies")
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return root / f"study_{key}"


def study_progress(out_dir, updates: int) -> float:
    """Fraction of ``updates`` written by the slowest run of a study in progress (0 when none yet)."""
    files = list(Path(out_dir).glob("runs/*/" + METRICS))
    if not files:
        return 0.0
    done = []
    for f in files:
        try:
            done.append(f.read_bytes().count(b"\n"))
        except OSError:
            done.append(0)
    return min(1.0, min(done) / updates)


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


def masked_tokens_at(run: Run, update: int) -> tuple[int | None, list[dict]]:
    """The ``masked_tokens`` of the latest update <= ``update`` that logged any: (that update, tokens)."""
    found, tokens = None, []
    for row in run.rows:
        if row["update"] > update:
            break
        if row.get("masked_tokens"):
            found, tokens = row["update"], row["masked_tokens"]
    return found, list(tokens)


def masked_token_count(run: Run) -> int:
    return sum(len(r.get("masked_tokens") or ()) for r in run.rows)


# ---------------------------------------------------------------- a study: groups of seeds
def select(runs, method: str | None = None, staleness: int | None = None) -> list[Run]:
    """The runs of ``method`` (any when None) at ``staleness`` (any when None)."""
    return [r for r in runs
            if (method is None or r.method == method) and (staleness is None or r.staleness == staleness)]


def seed_band(runs, key: str, window: int = 1) -> dict | None:
    """Mean, min and max over seeds of ``key`` (smoothed over ``window`` points), on the updates all share."""
    curves = [series(r, key) for r in runs]
    curves = [(x, smooth(y, window)) for x, y in curves if len(x)]
    if not curves:
        return None
    common = sorted(set.intersection(*(set(x.tolist()) for x, _ in curves)))
    ys = np.stack([y[np.isin(x, common)] for x, y in curves])  # (seeds, n)
    return {"update": np.asarray(common), "mean": ys.mean(0), "min": ys.min(0), "max": ys.max(0), "n": len(curves)}


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


def final_value(runs, key: str = "eval/reward") -> float:
    """Mean over seeds of the last logged ``key``; nan when never logged."""
    last = [y[-1] for _, y in (series(r, key) for r in runs) if len(y)]
    return float(np.mean(last)) if last else float("nan")


def pooled_entropy_by_ratio(runs) -> dict | None:
    """``entropy_by_ratio`` pooled over every record of ``runs`` (the study report's pooling), as arrays."""
    from .study.report import pool_entropy_bins

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
