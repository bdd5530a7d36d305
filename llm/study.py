"""``m2po-lab study-llm``: a staleness sweep of the LLM trainer, written as a study directory.

Check the directory -> lock -> warm start (once) -> every (method, staleness, seed) run of
``m2po_lab.llm.trainer`` in parallel processes -> report. The layout is the toy study's
(docs/run_format.md), so ``m2po_lab.rundir.load_study``, the report code and the
explorer read it::

    STUDY/config.json            {"format", "kind": "study", "config": LLMStudyConfig fields, "environment"}
    STUDY/warm_start/            model/ (the RL start of every run) + report.json
    STUDY/runs/<method>_s<staleness>_seed<seed>/   one LLM run directory each (kind "llm")
    STUDY/summary.json, report.md, figures/         written once every run has finished

Resume: run the same command again. Finished runs are kept, interrupted ones continue
from their checkpoint through the trainer's exact resume, the rest start; a warm start
cut short is trained again from its seed. A finished study is left untouched (``force``
starts it over). Every run uses one torch thread; ``workers`` runs train at once.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import sys
import threading
import time
import types
import warnings
from pathlib import Path

from m2po_lab import rundir as rd

from .policy import quiet_transformers
from .study_config import LLMStudyConfig, train_config
from .study_warmstart import WARM_DIR, WarmStartFailed, ensure_warm_start

OWNED = (rd.CONFIG, rd.SUMMARY, rd.REPORT, rd.RUNS, "figures", WARM_DIR)
"""What a study writes in its directory (``force`` removes exactly these)."""
POLL_S = 1.0
"""How often the progress bar reads the runs' metrics files."""


def _config_doc(cfg: LLMStudyConfig, env: dict) -> dict:
    return {"format": rd.FORMAT, "kind": "study", "config": _json(cfg.to_dict()), "environment": env}


def _json(obj):
    """``obj`` as it reads back from JSON (tuples become lists): what a saved config is compared with."""
    return json.loads(json.dumps(obj))


def inspect_out_dir(cfg: LLMStudyConfig, out: Path) -> str:
    """``"new"``, ``"resume"`` or ``"finished"`` for a study of ``cfg`` in ``out``; ``RunDirError`` otherwise (reads only)."""
    if out.exists() and not out.is_dir():
        raise rd.RunDirError(f"out={str(out)!r} is a file, not a directory; choose a new directory")
    if not (out / rd.CONFIG).exists():
        # a new study may start from a warm start copied from another one (reused if its settings match)
        others = [p.name for p in out.iterdir() if p.name not in (rd.LOCK, WARM_DIR)] if out.exists() else []
        if others:
            raise rd.RunDirError(f"out={str(out)!r} exists and is not a study directory (it holds "
                                 f"{sorted(others)[:3]}); choose an empty or new directory")
        return "new"
    doc = rd.read_config(out, "study")
    if doc["config"] != _json(cfg.to_dict()):
        raise rd.RunDirError(f"out={str(out)!r} holds a study with a different config; use a new --out, or the same "
                             "options to resume it")
    return "finished" if (out / rd.SUMMARY).exists() else "resume"


def run_study_llm(cfg: LLMStudyConfig, out_dir, workers: int = 1, progress: bool = True, force: bool = False) -> dict:
    """Train every run of ``cfg`` into ``out_dir`` (resuming what an interrupted call left); write the report.

    Returns the summary (also ``summary.json``); a finished study is not retrained (its
    summary comes back with ``"already_finished": True``) unless ``force``.
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    return rd.run_study_dir(Path(out_dir), lambda out: inspect_out_dir(cfg, out),
                            lambda resume: _train(cfg, Path(out_dir), resume, workers, progress), OWNED, force)


def _train(cfg: LLMStudyConfig, out: Path, resume: bool, workers: int, progress: bool) -> dict:
    from .study_report import write_report  # matplotlib only when needed

    env = rd.environment(cfg.device)
    if resume:
        changes = rd.environment_changes(rd.read_config(out, "study").get("environment"), env)
        if changes:
            warnings.warn(f"resuming {str(out)!r} in a different environment ({'; '.join(changes)}): the result "
                          "may differ from an uninterrupted run", RuntimeWarning, stacklevel=3)
    else:
        rd.write_json(out / rd.CONFIG, _config_doc(cfg, env))
    t0 = time.time()
    if progress and not (out / WARM_DIR / "report.json").exists():
        print(f"study-llm: warm start ({cfg.warm_start_steps} supervised steps, once for every run) ...",
              file=sys.stderr, flush=True)
    try:
        with quiet_transformers():
            model, warm = ensure_warm_start(cfg, out, progress)
    except WarmStartFailed:
        if not resume:  # leave --out as it was: the same command with another seed can use it
            rd.remove_owned(out, OWNED)
        raise
    jobs = _jobs(cfg, out, model.resolve())
    monitor = _Monitor(out, cfg, enabled=progress)
    try:
        _execute(jobs, workers)
    finally:
        monitor.close()
    if progress:
        print("study-llm: summary, report and figures ...", file=sys.stderr, flush=True)
    return write_report(cfg, out, time.time() - t0, env, warm)


def _jobs(cfg: LLMStudyConfig, out: Path, model: Path) -> list[tuple[str, dict, str, bool]]:
    """(run name, TrainConfig dict, run directory, resume?) of every run left to train; checks what is on disk."""
    jobs = []
    for method, staleness, seed in cfg.cells:
        name = rd.run_name(method, staleness, seed)
        d = out / rd.RUNS / name
        want = _json(train_config(cfg, method, staleness, seed, str(model)).to_dict())
        if (d / rd.CONFIG).exists():
            doc = rd.read_config(d, "llm")
            if doc["config"] != want:
                raise rd.RunDirError(f"{str(d / rd.CONFIG)!r} holds a run with another config than this study's "
                                     "(was the study moved, or the run replaced?); use a new --out")
            if "summary" in doc:
                continue
            jobs.append((name, want, str(d), True))
        else:
            jobs.append((name, want, str(d), False))
    return jobs


def _train_one(cfg_dict: dict, run_dir: str, resume: bool) -> dict:
    """One run of the study (in a worker process or in this one): the trainer's train, or its exact resume."""
    import torch

    from .config import TrainConfig
    from .trainer import resume as resume_run
    from .trainer import train

    torch.set_num_threads(1)
    with quiet_transformers():
        if resume:
            return resume_run(run_dir, progress=False)
        return train(TrainConfig.from_dict(cfg_dict), run_dir, progress=False)


def _execute(jobs: list, workers: int) -> None:
    """Run ``jobs``: in this process one after another (``workers`` 1), else in a pool of spawned processes."""
    if workers == 1 or len(jobs) <= 1:
        for _, cfg_dict, run_dir, resume in jobs:
            _train_one(cfg_dict, run_dir, resume)
        return
    ctx = multiprocessing.get_context("spawn")  # no forked torch / OpenMP state in the workers
    pool = cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx)
    try:
        with _plain_main():  # every worker starts inside submit()
            futures = {pool.submit(_train_one, cfg_dict, run_dir, resume): name
                       for name, cfg_dict, run_dir, resume in jobs}
        for fut in cf.as_completed(futures):
            try:
                fut.result()
            except Exception as err:
                raise RuntimeError(f"run {futures[fut]} failed: {type(err).__name__}: {err}") from err
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


@contextlib.contextmanager
def _plain_main():
    """Spawned workers do not re-import this process's ``__main__``.

    ``spawn`` runs the parent's main script again in each child unless it is an importable
    module; under Streamlit (the explorer), a notebook or ``python -`` that script is a page,
    a kernel or stdin, and the child dies before it trains. The workers need only
    ``m2po_lab``, so while they start ``__main__`` is an empty module.
    """
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


class _Monitor:
    """A tqdm bar over every run's updates, fed by counting the lines of their metrics files (a thread)."""

    def __init__(self, out: Path, cfg: LLMStudyConfig, enabled: bool):
        self._stop = threading.Event()
        self._thread = None
        if not enabled:
            return
        from tqdm import tqdm

        self._files = [out / rd.RUNS / rd.run_name(m, s, sd) / rd.METRICS for m, s, sd in cfg.cells]
        self._seen = {f: (0, 0) for f in self._files}  # file -> (bytes read, newlines in them)
        self._bar = tqdm(total=len(self._files) * cfg.updates, desc=f"study-llm ({len(self._files)} runs)",
                         unit="upd", initial=self._count(), file=sys.stderr)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _count(self) -> int:
        """Lines written so far over every run (reads only the bytes appended since the last call)."""
        for f in self._files:
            offset, lines = self._seen[f]
            try:
                if f.stat().st_size < offset:  # cut back on resume: count again
                    offset, lines = 0, 0
                with open(f, "rb") as fh:
                    fh.seek(offset)
                    new = fh.read()
            except OSError:
                continue
            self._seen[f] = (offset + len(new), lines + new.count(b"\n"))
        return sum(lines for _, lines in self._seen.values())

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            self._bar.update(self._count() - self._bar.n)

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._bar.update(self._count() - self._bar.n)
        self._bar.close()
