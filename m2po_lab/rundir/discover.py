"""Finding run and study directories below a folder (the explorer lists them; nobody types paths)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .files import CONFIG, METRICS, RUNS, SUMMARY, RunDirError, read_json
from .lock import is_locked

MAX_DEPTH = 4
MAX_ENTRIES = 500


@dataclass(frozen=True)
class Entry:
    """A run or study directory found below a root."""

    path: str
    kind: str
    """"study" or "llm" (an LLM run); "toy" for a lone toy run outside a study."""
    status: str
    """"finished", "running" or "incomplete"."""
    mtime: float
    methods: tuple[str, ...]
    staleness: tuple[int, ...]


def _entry(d: Path, doc: dict) -> Entry | None:
    cfg = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    kind = doc.get("kind")
    if kind == "study":
        finished = (d / SUMMARY).exists()
        methods, stal = tuple(cfg.get("methods", ())), tuple(cfg.get("staleness", ()))
    elif kind == "llm":
        finished = "summary" in doc
        methods, stal = (str(cfg.get("method")),), (cfg.get("staleness"),)
    else:
        return None
    status = "finished" if finished else "running" if is_locked(d) else "incomplete"
    mtime = max((os.stat(p).st_mtime for p in (d / CONFIG, d / METRICS, d / SUMMARY) if p.exists()), default=0.0)
    return Entry(str(d), kind, status, mtime, methods, tuple(s for s in stal if isinstance(s, int)))


def discover(root) -> list[Entry]:
    """Study and LLM run directories below ``root`` (at most :data:`MAX_DEPTH` levels), newest first.

    A study's own ``runs/`` are not listed separately. Symlinked folders are not followed.
    """
    root = Path(root)
    found: list[Entry] = []
    stack = [(root, 0)]
    while stack and len(found) < MAX_ENTRIES:
        d, depth = stack.pop()
        if (d / CONFIG).is_file():
            try:
                entry = _entry(d, read_json(d / CONFIG, "config"))
            except (RunDirError, OSError):
                entry = None
            if entry is not None:
                found.append(entry)
                continue  # do not descend into a run or a study
        if depth >= MAX_DEPTH:
            continue
        try:
            subs = sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
        except OSError:
            continue
        stack += [(p, depth + 1) for p in reversed(subs)]
    return sorted(found, key=lambda e: -e.mtime)


def find_runs(path) -> dict[str, Path]:
    """Run directories at ``path``: itself, a study's ``runs/*``, or the sub-folders that are runs."""
    if not str(path).strip():
        raise RunDirError("choose a run or study directory")
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{str(path)!r} does not exist")
    if not path.is_dir():
        raise RunDirError(f"{str(path)!r} is not a directory")
    if (path / METRICS).exists():
        return {path.name: path}
    parent = path / RUNS if (path / RUNS).is_dir() else path
    runs = {d.name: d for d in sorted(parent.iterdir()) if d.is_dir() and (d / METRICS).exists()}
    if not runs:
        raise RunDirError(
            f"{str(path)!r} holds no {METRICS}, and no run directory under it (a run holds {METRICS}; "
            f"a study holds {RUNS}/<method>_s<staleness>_seed<seed>/)"
        )
    return runs
