"""Experiment trackers for ``train-llm --report-to``: the numbers of every ``metrics.jsonl`` row, live.

Like TRL's ``report_to``: ``tensorboard`` (event files in ``OUT/tensorboard``), ``wandb``
(``wandb.init(dir=OUT)``; ``WANDB_PROJECT``, ``WANDB_MODE=offline`` as usual) or ``trackio``
(local-first, ``TRACKIO_PROJECT``; its data lives where trackio keeps it, ``TRACKIO_DIR``).
``metrics.jsonl`` stays the record; a tracker only mirrors its numeric keys, verbatim, at
``step`` = the update. Each library is imported only when asked for.

A resumed run re-runs the updates the interrupted one logged after its last checkpoint. A
tracker shows each step once: TensorBoard purges them (``purge_step``, so it shows the re-run),
wandb and trackio, which cannot drop logged steps, skip the steps they already have
(``OUT/<tracker>_last_step``), so they keep the interrupted run's values of those steps.
"""

from __future__ import annotations

import importlib
import numbers
import os
import uuid
from pathlib import Path

from m2po_lab.rundir import atomic_write_text

TRACKERS = ("none", "tensorboard", "wandb", "trackio")
EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}  # pip extra of m2po-lab per tracker
_MODULES = {"tensorboard": "torch.utils.tensorboard", "wandb": "wandb", "trackio": "trackio"}


def check_report_to(name: str) -> None:
    """``ValueError`` unless ``name`` is a tracker whose library imports ('none' always passes)."""
    if name not in TRACKERS:
        raise ValueError(f"report_to={name!r}: expected one of {', '.join(TRACKERS)}")
    if name == "none":
        return
    try:
        importlib.import_module(_MODULES[name])
    except ImportError:
        raise ValueError(f"report_to={name!r} needs the {name} package: "
                         f"pip install 'm2po-lab[{EXTRAS[name]}]'") from None


def scalars(row: dict) -> dict:
    """The numbers of a metrics row (int and float, not bool; NaN kept), keys verbatim."""
    return {k: v for k, v in row.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)}


class Tracker:
    """Sends metrics rows somewhere; this base (``report_to='none'``) sends nothing."""

    def log(self, row: dict, step: int) -> None:
        """Send the numbers of ``row`` (one ``metrics.jsonl`` line) at ``step``."""

    def close(self) -> None:
        """Flush and finish; a second call does nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_tracker(name: str, out_dir, config: dict, run_name: str, start_update: int = 0) -> Tracker:
    """A ``name`` tracker of the run in ``out_dir``; ``start_update`` > 0: a resumed run's first update."""
    check_report_to(name)
    if name == "none":
        return Tracker()
    out = Path(out_dir)
    return {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "trackio": TrackioTracker}[name](
        out, config, run_name, start_update)


class TensorBoardTracker(Tracker):
    """``add_scalar`` per key into ``OUT/tensorboard``; a resume purges the steps it re-runs."""

    def __init__(self, out: Path, config: dict, run_name: str, start_update: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        log_dir = out / "tensorboard"
        # a resume from update 0 (no checkpoint yet) must purge too: an existing log dir says it is one
        purge = start_update if (start_update > 0 or log_dir.exists()) else None
        self._writer: SummaryWriter | None = SummaryWriter(log_dir=str(log_dir), purge_step=purge)

    def log(self, row: dict, step: int) -> None:
        if self._writer is None:
            raise RuntimeError("TensorBoardTracker.log after close()")
        for key, value in scalars(row).items():
            self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


class _StepSkipping(Tracker):
    """A tracker that cannot drop logged steps: on resume it skips those it already has."""

    def __init__(self, out: Path, name: str):
        self._step_file = out / f"{name}_last_step"
        try:
            self._have = int(self._step_file.read_text().strip())  # the last step a previous session sent
        except (FileNotFoundError, ValueError):
            self._have = -1
        self._last = self._have

    def log(self, row: dict, step: int) -> None:
        if step <= self._have:
            return
        self._send(scalars(row), step)
        if step > self._last:
            self._last = step
            atomic_write_text(self._step_file, f"{step}\n")

    def _send(self, values: dict, step: int) -> None:
        raise NotImplementedError


def _stored(path: Path, make) -> str:
    """The string kept in ``path``, written there by ``make()`` on first use."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    value = make()
    atomic_write_text(path, f"{value}\n")
    return value


class WandbTracker(_StepSkipping):
    """One wandb run per run directory: its id is kept in ``OUT/wandb_id``, so a resume continues it."""

    def __init__(self, out: Path, config: dict, run_name: str, start_update: int = 0):
        import wandb

        out.mkdir(parents=True, exist_ok=True)
        super().__init__(out, "wandb")
        run_id = _stored(out / "wandb_id", lambda: uuid.uuid4().hex[:12])
        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "m2po-lab"), name=run_name, dir=str(out),
                               config=config, id=run_id, resume="allow")

    def _send(self, values: dict, step: int) -> None:
        self._run.log(values, step=step)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


class TrackioTracker(_StepSkipping):
    """A trackio run named ``run_name`` (kept in ``OUT/trackio_run``); a resume continues it by name."""

    def __init__(self, out: Path, config: dict, run_name: str, start_update: int = 0):
        import trackio

        out.mkdir(parents=True, exist_ok=True)
        super().__init__(out, "trackio")
        name_file = out / "trackio_run"
        resume = "allow" if name_file.exists() else "never"  # a new run directory never joins an old same-named run
        name = _stored(name_file, lambda: run_name)
        self._trackio = trackio
        self._open = True
        trackio.init(project=os.environ.get("TRACKIO_PROJECT", "m2po-lab"), name=name, config=config, resume=resume)

    def _send(self, values: dict, step: int) -> None:
        self._trackio.log(values, step=step)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._trackio.finish()
