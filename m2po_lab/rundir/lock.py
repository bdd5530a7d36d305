"""One writer per run directory: an exclusive lock on ``OUT/.lock`` while a run writes.

The lock is an ``fcntl.flock`` on the file: the kernel releases it when the holder exits
for any reason (kill -9 included), so a lock left by a dead process is stale by
construction and the next writer simply takes it. The file holds the holder's pid, host
and start time, which the error message of a second writer quotes. Where ``fcntl`` is
missing (Windows) the file is created exclusively and a lock whose pid no longer runs on
this host is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from .files import LOCK, RunDirError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _busy(out: Path, holder: dict) -> RunDirError:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["time"])) if "time" in holder else "?"
    return RunDirError(
        f"{str(out)!r} is being written by another process (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, since {since}); wait for it to finish or choose another --out"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class DirLock:
    """Context manager holding the exclusive lock of ``out`` (created if missing)."""

    def __init__(self, out):
        self.out = Path(out)
        self.path = self.out / LOCK
        self._fd = None

    def __enter__(self) -> "DirLock":
        self.out.mkdir(parents=True, exist_ok=True)
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()})
        if fcntl is not None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            for attempt in range(5):  # a reader's is_locked() holds a shared lock for microseconds
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == 4:
                        os.close(fd)
                        raise _busy(self.out, _holder(self.path)) from None
                    time.sleep(0.02)
            os.ftruncate(fd, 0)
            os.write(fd, me.encode())
            self._fd = fd
            return self
        try:  # pragma: no cover - Windows
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _holder(self.path)
            if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                return self.__enter__()
            raise _busy(self.out, holder) from None
        os.write(fd, me.encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        if fcntl is None:  # pragma: no cover - Windows
            self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing releases the flock
        self._fd = None


def is_locked(out) -> bool:
    """True when a live process holds the lock of ``out`` (a run is being written)."""
    path = Path(out) / LOCK
    if not path.is_file():
        return False
    if fcntl is None:  # pragma: no cover - Windows
        holder = _holder(path)
        return holder.get("host") != socket.gethostname() or _pid_alive(int(holder.get("pid", -1)))
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock if we got it
    return False
