"""File names and durable writes of a run directory (docs/run_format.md).

Every write a resume depends on is atomic and durable: the bytes go to a temporary file
beside the target, are fsynced, replace the target with ``os.replace`` (atomic on POSIX),
and the directory entry is fsynced too. A reader therefore sees the old file or the new
one, never a mix, even after a power loss.

Reads are bounded: a file that is not a regular file (a FIFO, ``/dev/zero`` behind a
symlink, a directory) or that is larger than the limit is refused with
:class:`RunDirError`, so a reader can never hang on one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import stat
from pathlib import Path

FORMAT = 2
"""Version of the run-directory format written by this package (``config.json`` ``"format"``)."""
CONFIG, METRICS, CHECKPOINT, SUMMARY, REPORT, LOCK = (
    "config.json", "metrics.jsonl", "checkpoint.pt", "summary.json", "report.md", ".lock")
RUNS = "runs"
"""A study's run directories live in ``STUDY/runs/<method>_s<staleness>_seed<seed>/``."""
MAX_READ_BYTES = 512 * 2**20
"""Largest file a reader loads (512 MiB); larger files are refused, not read."""


class RunDirError(ValueError):
    """A run or study directory that cannot be used as asked; the message says what is wrong and what to do."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, failpoint_name: str | None = None) -> None:
    """Write ``data`` to ``path`` atomically and durably (tmp file, fsync, rename, fsync dir)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        if failpoint_name is not None and len(data) > 1:
            f.write(data[: len(data) // 2])
            f.flush()
            failpoint(failpoint_name)  # a kill here leaves a half-written tmp file, never a half-written target
            f.write(data[len(data) // 2 :])
        else:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON, atomically (non-finite floats must already be None)."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def json_number(v):
    """JSON-safe number: inf / nan become None (JSON has neither)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def read_bytes(path: Path, what: str, limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of a regular file, at most ``limit``; ``RunDirError`` naming ``what`` otherwise."""
    path = Path(path)
    try:
        st = os.stat(path)  # follows symlinks: what matters is what the link points to
    except FileNotFoundError:
        raise RunDirError(f"{what} {str(path)!r} does not exist") from None
    except OSError as e:
        raise RunDirError(f"cannot read {what} {str(path)!r}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise RunDirError(f"{what} {str(path)!r} is not a regular file; refusing to read it")
    if st.st_size > limit:
        raise RunDirError(f"{what} {str(path)!r} is {st.st_size / 2**20:.0f} MiB, over the "
                          f"{limit / 2**20:.0f} MiB a reader loads")
    try:
        with open(path, "rb") as f:
            return f.read(limit + 1)[:limit]
    except OSError as e:
        raise RunDirError(f"cannot read {what} {str(path)!r}: {e.strerror}") from None


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``; ``RunDirError`` naming ``what`` for anything else."""
    data = read_bytes(path, what)
    try:
        obj = json.loads(data.decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{what} {str(path)!r} is not valid JSON ({e}); it may be truncated") from None
    if not isinstance(obj, dict):
        raise RunDirError(f"{what} {str(path)!r} holds a JSON {type(obj).__name__}, expected an object")
    return obj


# ---------------------------------------------------------------- fault injection (tests)
FAILPOINT_ENV = "M2PO_LAB_FAILPOINT"
"""``NAME:N`` kills this process with SIGKILL at the N-th (1-based) pass through failpoint NAME.

The crash tests use it to stop a run at exact moments (mid-step, mid-checkpoint-write);
unset, a failpoint costs one dict lookup.
"""
_failpoint_counts: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get(FAILPOINT_ENV)
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _failpoint_counts[name] = _failpoint_counts.get(name, 0) + 1
    if _failpoint_counts[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def remove_owned(out: Path, names) -> None:
    """Remove what a writer owns in ``out`` (``names``: files or directories; a missing one is fine).

    ``--force`` starts a study over with it: only the writer's own entries go, never the
    directory or anything else the user keeps there (the lock file stays with its holder).
    """
    for name in names:
        p = Path(out) / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
