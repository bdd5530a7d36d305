"""``metrics.jsonl``: one JSON object per optimizer update, written by :class:`MetricsWriter`.

Line i holds update i: updates are 0, 1, 2, ... with no gap and no repeat, which the
reader checks. A run killed while writing leaves at most one *torn* last line (no
newline): the tolerant reader drops it (a run being written, or one to resume), the
strict reader refuses it. Anything else that is wrong is an error naming the line.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..metrics import upgrade_row
from .files import FAILPOINT_ENV, RunDirError, atomic_write_bytes, failpoint, read_bytes


def _clean(obj):
    """Non-finite floats -> None, recursively (JSON has no inf or NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _parse(path: Path, data: bytes, tolerant: bool) -> tuple[list[dict], list[bytes], bool]:
    """(rows, their raw lines with newline, torn) of the bytes of a metrics.jsonl."""
    pieces = data.split(b"\n")
    complete, tail = pieces[:-1], pieces[-1]  # tail: bytes after the last newline
    torn = bool(tail.strip())
    if torn and not tolerant:
        raise RunDirError(f"the last line of {str(path)!r} is torn (no newline): the run was stopped while "
                          "writing it, or is being written now")
    rows, raw = [], []
    for i, line in enumerate(complete, start=1):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunDirError(f"line {i} of {str(path)!r} is not JSON ({e}); only a torn last line "
                              "(without newline) is expected after a crash") from None
        if not isinstance(row, dict):
            raise RunDirError(f"line {i} of {str(path)!r} is a JSON {type(row).__name__}, expected an object")
        update = row.get("update")
        if update != len(rows) or isinstance(update, bool):
            prev = len(rows) - 1
            what = (f"holds update {update!r} after update {prev}" if isinstance(update, int) and not
                    isinstance(update, bool) else f"has update={update!r}")
            gap = f": updates {prev + 1}..{update - 1} are missing" if isinstance(update, int) and update > prev + 1 else ""
            raise RunDirError(f"line {i} of {str(path)!r} {what}{gap} (line i must hold update i - 1)")
        rows.append(upgrade_row(row))  # keys of older versions under today's names; the line itself unchanged
        raw.append(line + b"\n")
    return rows, raw, torn


def scan_metrics(path, tolerant: bool = True) -> tuple[list[dict], bool]:
    """``(rows, torn)``: the complete rows and whether a torn last line was dropped."""
    rows, _, torn = _parse(Path(path), read_bytes(path, "metrics file"), tolerant)
    return rows, torn


def read_metrics(path, tolerant: bool = False) -> list[dict]:
    """The rows of a metrics.jsonl, checked; ``tolerant`` drops a torn last line instead of refusing it."""
    return scan_metrics(path, tolerant)[0]


class MetricsWriter:
    """Appends rows to one ``metrics.jsonl``, starting at update ``start``.

    ``start == 0`` creates (or empties) the file. ``start > 0`` resumes: the file must
    hold at least updates ``0 .. start - 1`` (a torn last line is dropped); lines past
    them (logged after the checkpoint, before the crash) are cut, since the resumed run
    writes them again. Fewer lines than that is a gap, and an error: never resumed.
    Rows are flushed one by one; :meth:`sync` makes them durable (before a checkpoint).
    """

    def __init__(self, path, start: int = 0):
        self.path = Path(path)
        kept = b""
        if start > 0:
            if not self.path.exists():
                raise RunDirError(f"{str(self.path)!r} is missing, but the checkpoint is at update {start}: the "
                                  "run's logged updates are gone; start it again in a new directory")
            rows, raw, _ = _parse(self.path, read_bytes(self.path, "metrics file"), tolerant=True)
            if len(rows) < start:
                raise RunDirError(
                    f"{str(self.path)!r} holds updates 0..{len(rows) - 1} but the checkpoint is at update {start}: "
                    f"{start - len(rows)} logged update(s) are missing (truncated or damaged file). Resuming would "
                    "leave a gap; start the run again in a new directory")
            kept = b"".join(raw[:start])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, kept)
        self.next_update = start
        self._file = open(self.path, "ab")
        self._failpoints = bool(os.environ.get(FAILPOINT_ENV))

    def write(self, row: dict) -> None:
        if row.get("update") != self.next_update:
            raise ValueError(f"row update={row.get('update')!r}, expected {self.next_update}")
        line = (json.dumps(_clean(row), allow_nan=False) + "\n").encode()
        if self._failpoints:
            failpoint("metrics_row")
            self._file.write(line[: len(line) // 2])
            self._file.flush()
            failpoint("metrics_row_torn")
            line = line[len(line) // 2 :]
        self._file.write(line)
        self._file.flush()
        self.next_update += 1

    def sync(self) -> None:
        """Everything written so far is on disk (flush + fsync)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()
