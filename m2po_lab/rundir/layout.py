"""Reading run and study directories (docs/run_format.md), checked before they are trusted.

A run directory holds ``config.json`` and ``metrics.jsonl``; a study directory holds
``config.json`` (kind "study"), ``runs/<method>_s<staleness>_seed<seed>/`` and, once
finished, ``summary.json``. Every reader returns the directory's *status* beside its
data -- ``finished``, ``running`` (a live process holds its lock), ``incomplete``
(stopped before the end) -- so a page can say so instead of drawing a partial run as
if whole. Every problem is a :class:`RunDirError` naming the file and what is wrong.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import CONFIG, FORMAT, METRICS, RUNS, SUMMARY, RunDirError, read_json
from .lock import is_locked
from .metrics_io import scan_metrics
from .records import check_row

KINDS = ("toy", "llm", "study")


@dataclass(frozen=True)
class Run:
    """One run directory: what it is, its metric rows (one per update) and its status."""

    path: str
    name: str
    kind: str
    """"toy" or "llm"."""
    method: str | None
    staleness: int | None
    seed: int | None
    config: dict
    """The run's config.json."""
    rows: tuple[dict, ...]
    status: str
    """"finished", "running" or "incomplete"."""
    torn: bool = False
    """A torn last line was dropped (the run is being written, or was killed mid-write)."""


@dataclass(frozen=True)
class Study:
    """A study directory: its config, ``summary.json`` (None until finished), runs and status."""

    path: str
    config: dict
    """The StudyConfig fields."""
    summary: dict | None
    runs: tuple[Run, ...]
    status: str
    missing: tuple[str, ...] = ()
    """Runs the config names that have no metrics.jsonl (deleted, or not started)."""
    environment: dict | None = None

    @property
    def methods(self) -> list[str]:
        """In the study config's order, then any other method found."""
        found, listed = {r.method for r in self.runs}, self.config.get("methods", [])
        return [m for m in listed if m in found] + sorted(found - set(listed))

    @property
    def staleness(self) -> list[int]:
        return sorted({r.staleness for r in self.runs})


def read_config(path, kind: str | None = None) -> dict:
    """``path/config.json`` checked for this format (and ``kind`` when given)."""
    doc = read_json(Path(path) / CONFIG, "config")
    if doc.get("format") != FORMAT:
        raise RunDirError(f"{str(Path(path) / CONFIG)!r} has format {doc.get('format')!r}: it was written by another "
                          f"version of m2po-lab (this one reads format {FORMAT}); re-run it with this version")
    if doc.get("kind") not in KINDS or (kind is not None and doc["kind"] != kind):
        want = kind or " / ".join(KINDS)
        raise RunDirError(f"{str(Path(path) / CONFIG)!r}: kind={doc.get('kind')!r}, expected {want}")
    if not isinstance(doc.get("config"), dict):
        raise RunDirError(f"{str(Path(path) / CONFIG)!r} has no 'config' object")
    return doc


def _status(finished: bool, lock_dir) -> str:
    return "finished" if finished else "running" if is_locked(lock_dir) else "incomplete"


def _status_from_study(run_dir: Path) -> str:
    """A toy run's status when opened on its own: its study's (``STUDY/runs/<name>``), else "incomplete"."""
    study = run_dir.parent.parent
    if run_dir.parent.name != RUNS or not (study / CONFIG).exists():
        return "incomplete"
    try:
        read_config(study, "study")
    except RunDirError:
        return "incomplete"
    return _status((study / SUMMARY).exists(), study)


def load_run(path, study_status: str | None = None) -> Run:
    """One run directory; ``study_status`` is the status of the study it belongs to (toy runs)."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{str(path)!r} is not a directory" if path.exists() else f"{str(path)!r} does not exist")
    if not (path / METRICS).exists():
        raise RunDirError(f"{str(path)!r} holds no {METRICS}: not a run directory (see docs/run_format.md)")
    doc = read_config(path)
    if doc["kind"] == "study":
        raise RunDirError(f"{str(path)!r} is a study directory, not a run: open it as a study")
    rows, torn = scan_metrics(path / METRICS, tolerant=True)
    if not rows:
        raise RunDirError(f"{str(path / METRICS)!r} holds no complete line: the run has not logged an update yet")
    for i, row in enumerate(rows, start=1):
        check_row(row, i, path / METRICS)
    cfg = doc["config"]
    if doc["kind"] == "llm":
        method, staleness, seed = cfg.get("method"), cfg.get("staleness"), cfg.get("seed")
        status = _status("summary" in doc, path)
    else:
        method, staleness, seed = doc.get("method"), doc.get("staleness"), doc.get("seed")
        status = study_status or _status_from_study(path)
    if not isinstance(method, str) or not isinstance(staleness, int) or not isinstance(seed, int):
        raise RunDirError(f"{str(path / CONFIG)!r}: method, staleness and seed must be a string and integers")
    return Run(str(path), path.name, doc["kind"], method, staleness, seed, doc, tuple(rows), status, torn)


def _check_summary(summary: dict, path: Path) -> None:
    runs = summary.get("runs")
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise RunDirError(f"{str(path)!r} has no 'runs' list of objects")
    for i, r in enumerate(runs):
        for key, types in (("method", str), ("staleness", int), ("seed", int)):
            if not isinstance(r.get(key), types) or isinstance(r.get(key), bool):
                raise RunDirError(f"{str(path)!r}: runs[{i}] needs {key!r} ({types.__name__}), got {r.get(key)!r}")
        for key in ("final_reward", "peak_reward", "clip_frac_mean", "clip_frac_steady", "m2_mean"):
            v = r.get(key)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)):
                raise RunDirError(f"{str(path)!r}: runs[{i}].{key} must be a number, got {v!r}")
    if not isinstance(summary.get("phenomena", []), list):
        raise RunDirError(f"{str(path)!r}: 'phenomena' must be a list")


def run_name(method: str, staleness: int, seed: int) -> str:
    return f"{method}_s{staleness}_seed{seed}"


def load_study(path) -> Study:
    """A study directory: config, summary when finished, every run that has metrics, the runs missing."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{str(path)!r} is not a directory" if path.exists() else f"{str(path)!r} does not exist")
    if not (path / CONFIG).exists():
        raise RunDirError(f"{str(path)!r} holds no {CONFIG}: not a study directory (written by m2po-lab study --out DIR)")
    doc = read_config(path, "study")
    cfg = doc["config"]
    summary = None
    if (path / SUMMARY).exists():
        summary = read_json(path / SUMMARY, "study summary")
        _check_summary(summary, path / SUMMARY)
    status = _status(summary is not None, path)
    try:
        expected = [run_name(m, s, sd) for m in cfg["methods"] for s in cfg["staleness"] for sd in cfg["seeds"]]
    except (KeyError, TypeError):
        raise RunDirError(f"{str(path / CONFIG)!r}: the study config needs methods, staleness and seeds lists") from None
    runs, missing = [], []
    for name in expected:
        d = path / RUNS / name
        started = (d / METRICS).exists() and (summary is not None or b"\n" in (d / METRICS).read_bytes()[:1 << 20])
        if started:
            runs.append(load_run(d, study_status=status))
        else:
            missing.append(name)
    if not runs:
        raise RunDirError(f"{str(path)!r}: none of the study's {len(expected)} runs has logged an update yet")
    if summary is not None and missing:
        raise RunDirError(f"{str(path)!r} is finished but {len(missing)} run(s) have no {METRICS} "
                          f"(e.g. {missing[0]}): the directory is damaged")
    return Study(str(path), cfg, summary, tuple(runs), status, tuple(missing), doc.get("environment"))


def is_study_dir(path) -> bool:
    try:
        return read_json(Path(path) / CONFIG, "config").get("kind") == "study"
    except RunDirError:
        return False


def under_root(path, root) -> Path:
    """``path`` resolved, if it lies inside ``root``; ``RunDirError`` otherwise (the explorer reads below its root)."""
    root = Path(root).resolve()
    p = (root / Path(path).expanduser()).resolve()
    if p != root and root not in p.parents:
        raise RunDirError(f"{str(path)!r} is outside the runs root {str(root)!r}; start the explorer with "
                          "--runs-root to read there")
    return p


def study_progress(out_dir, updates: int) -> float:
    """Fraction of ``updates`` written by the slowest run of a study in progress (0 when none yet)."""
    files = list(Path(out_dir).glob(f"{RUNS}/*/{METRICS}"))
    done = []
    for f in files:
        try:
            done.append(f.read_bytes().count(b"\n"))
        except OSError:
            done.append(0)
    return min(1.0, min(done) / updates) if done and updates > 0 else 0.0


def dir_signature(path) -> tuple:
    """(file, mtime_ns, size) of every file a reader reads under ``path``: a cache key."""
    path = Path(path)
    if not path.is_dir():
        return (str(path), path.exists())
    files = [path / CONFIG, path / SUMMARY, path / METRICS, path / ".lock"]
    files += [p for d in path.glob(f"{RUNS}/*") for p in (d / METRICS, d / CONFIG)]
    out = []
    for p in files:
        try:
            st = os.stat(p)
        except OSError:
            continue
        out.append((str(p), st.st_mtime_ns, st.st_size))
    return (str(path), is_locked(path), *sorted(out))


def eval_curve(run: Run, key: str = "eval/reward") -> tuple[np.ndarray, np.ndarray]:
    """(updates done, ``key``) from update 0 on: a row of ``update`` u was logged after u + 1 updates, and
    the value before RL is the point at 0: an LLM run's ``start[key]`` (after its SFT warm start), a toy
    run's ``start_reward`` (for ``eval/reward``)."""
    pts = [(r["update"] + 1, r[key]) for r in run.rows if finite(r.get(key))]
    starts = run.config.get("start")
    start = starts.get(key) if isinstance(starts, dict) else None
    if start is None and key == "eval/reward":
        start = run.config.get("start_reward")
    if finite(start):
        pts.insert(0, (0, start))
    return np.array([p[0] for p in pts], dtype=int), np.array([p[1] for p in pts], dtype=float)


FINAL_TAIL = 0.9
"""A study's "final" value is the mean over the logged values at 0-based updates >= 0.9 x its updates."""


def final_mean(points, updates: int | None) -> float:
    """The studies' "final" value of ``(update, value)`` points: their mean over updates >= 0.9 x ``updates``
    (the last 10%), else (none there, or ``updates`` None) the last value; nan when there are none."""
    pts = list(points)
    if not pts:
        return math.nan
    tail = [v for u, v in pts if updates is not None and u >= FINAL_TAIL * updates] or [pts[-1][1]]
    return float(np.mean(tail))


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def run_study_dir(out: Path, inspect, train, owned, force: bool = False) -> dict:
    """The protocol both studies write by: inspect -> lock -> inspect again -> (force: start over) -> train.

    ``inspect(out)`` returns "new", "resume" or "finished" (or raises :class:`RunDirError`);
    ``train(resume)`` trains and returns the summary; ``owned`` names what ``force`` removes.
    A finished study is not touched: its summary comes back with ``"already_finished": True``.
    One process per directory: a second writer gets a :class:`RunDirError` from the lock.
    """
    from .files import remove_owned
    from .lock import DirLock

    out = Path(out)
    if inspect(out) == "finished" and not force:
        return {**read_json(out / SUMMARY, "study summary"), "already_finished": True}
    try:
        lock = DirLock(out).__enter__()
    except OSError as e:
        raise RunDirError(f"cannot write out={str(out)!r}: {e.strerror}") from None
    try:
        state = inspect(out)  # again, under the lock: another process may have moved on
        if state == "finished" and not force:
            return {**read_json(out / SUMMARY, "study summary"), "already_finished": True}
        if force and state != "new":
            remove_owned(out, owned)
            state = "new"
        return train(state == "resume")
    finally:
        lock.__exit__(None, None, None)
