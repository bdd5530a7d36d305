"""``checkpoint.pt``: everything the next update needs, written atomically, loaded weights-only."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import torch

from .files import CHECKPOINT, RunDirError, atomic_write_bytes


def save_checkpoint(out, state: dict) -> None:
    """``state`` to ``out/checkpoint.pt``, atomically and durably (a kill mid-write keeps the old one)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(out) / CHECKPOINT, buf.getvalue(), failpoint_name="checkpoint_write")


def load_checkpoint(out) -> dict | None:
    """The checkpoint of ``out`` (None when there is none); ``RunDirError`` saying what to do when it is damaged."""
    path = Path(out) / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise RunDirError(
            f"{str(path)!r} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
            "it is damaged. Delete it to restart this run from update 0, or start again in a new directory"
        ) from None
    if not isinstance(state, dict) or "update" not in state:
        raise RunDirError(f"{str(path)!r} is not an m2po-lab checkpoint (no 'update'); delete it or use a new directory")
    return state


def remove_checkpoint(out) -> None:
    (Path(out) / CHECKPOINT).unlink(missing_ok=True)
