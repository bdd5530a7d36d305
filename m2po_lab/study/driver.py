"""Run a study to disk: check the directory -> lock -> setup -> loop -> log -> report.

The directory is checked before anything is written: a new (or empty) directory starts a
study; one holding the same study resumes it from its checkpoint, exactly; a finished
study is left untouched (``force=True`` starts over); anything else is refused with a
``RunDirError`` saying what to do. One process writes a study at a time (a lock).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch

from .. import rundir as rd
from ..histograms import log_ratio_histograms
from .config import StudyConfig
from .runner import AGE_MAX, AGE_MEAN, BatchedStudy

COMMON_KEYS = ("reward", "entropy", "grad_norm", "staleness", "data/fixed_ok", AGE_MEAN, AGE_MAX)
"""Per-update values the runner returns for every run (beside each loss's own metrics)."""

OWNED = (rd.CONFIG, rd.SUMMARY, rd.REPORT, rd.CHECKPOINT, rd.CHECKPOINT + ".tmp", rd.RUNS, "figures")
"""What a study writes in its directory (``force`` removes exactly these)."""


def _rows(study: BatchedStudy, out: dict, per_run: list[dict]) -> list[dict]:
    """One JSON row per run for the update just done (one host sync for all numbers)."""
    u = study.update - 1
    keys_by_run = [sorted(m) for m in per_run]
    values = torch.cat([torch.stack([m[k].float() for k in ks]) for m, ks in zip(per_run, keys_by_run)]).tolist()
    flat, i = [], 0
    for ks in keys_by_run:
        flat.append(values[i : i + len(ks)])
        i += len(ks)
    common = {k: out[k].tolist() for k in COMMON_KEYS}
    common["staleness"] = [int(s) if s.is_integer() else s for s in common["staleness"]]  # stale-k: k, k+1, ...
    rows = []
    for r in range(len(study.specs)):
        row = {"update": u}
        row.update({k: v[r] for k, v in common.items()})
        row.update({k: rd.json_number(v) for k, v in zip(keys_by_run[r], flat[r])})
        rows.append(row)
    return rows


def _config_doc(cfg: StudyConfig, env: dict) -> dict:
    return {"format": rd.FORMAT, "kind": "study", "config": json.loads(json.dumps(cfg.to_dict())), "environment": env}


def _same_config(stored: dict, cfg: StudyConfig) -> bool:
    """``stored`` (a config.json's) describes ``cfg``; fields added since it was written take their defaults."""
    try:
        return StudyConfig.from_dict(stored) == cfg
    except (TypeError, ValueError):
        return False


def inspect_out_dir(cfg: StudyConfig, out: Path) -> str:
    """``"new"``, ``"resume"`` or ``"finished"`` for a study of ``cfg`` in ``out``; ``RunDirError`` otherwise.

    Reads only: nothing is written before the directory has been judged usable.
    """
    if out.exists() and not out.is_dir():
        raise rd.RunDirError(f"out={str(out)!r} is a file, not a directory; choose a new directory")
    if not (out / rd.CONFIG).exists():
        others = [p.name for p in out.iterdir() if p.name != rd.LOCK] if out.exists() else []
        if others:
            raise rd.RunDirError(f"out={str(out)!r} exists and is not a study directory (it holds {sorted(others)[:3]}); "
                                 "choose an empty or new directory")
        return "new"
    doc = rd.read_config(out, "study")
    if not _same_config(doc["config"], cfg):
        raise rd.RunDirError(f"out={str(out)!r} holds a study with a different config; use a new --out, or the same "
                             "options to resume it")
    return "finished" if (out / rd.SUMMARY).exists() else "resume"


def run_study(cfg: StudyConfig, out_dir, progress: bool = True, threads: int = 1, force: bool = False) -> dict:
    """Train every run of ``cfg`` into ``out_dir`` (docs/run_format.md); resume if interrupted.

    Returns the summary (also written to ``summary.json``, with ``report.md`` and figures).
    A finished study is not retrained: its summary is returned with ``"already_finished":
    True``, unless ``force`` (then the study's files are removed and it starts over).
    """
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    out = Path(out_dir)

    def train(resume: bool) -> dict:
        torch.set_num_threads(threads)  # tiny tensors: one thread is fastest on a small CPU
        return _train(cfg, out, resume=resume, progress=progress)

    return rd.run_study_dir(out, lambda o: inspect_out_dir(cfg, o), train, OWNED, force)


def _open(cfg: StudyConfig, out: Path, resume: bool):
    """(study, start_reward, environment, wall seconds so far) ready to train: fresh, or from the checkpoint."""
    env = rd.environment("cpu")
    ckpt = rd.load_checkpoint(out) if resume else None
    if resume:
        changes = rd.environment_changes(rd.read_config(out, "study").get("environment"), env)
        if changes and ckpt is not None:
            warnings.warn(f"resuming {str(out)!r} in a different environment ({'; '.join(changes)}): the result "
                          "may differ from an uninterrupted run", RuntimeWarning, stacklevel=3)
    study = BatchedStudy(cfg, warm_start=ckpt is None)
    if ckpt is not None:
        study.load_state_dict(ckpt["study"])
        return study, ckpt["start_reward"], env, float(ckpt["wall_s"])
    start_reward = study.evaluate().tolist()
    rd.write_json(out / rd.CONFIG, _config_doc(cfg, env))
    return study, start_reward, env, 0.0


def _train(cfg: StudyConfig, out: Path, resume: bool, progress: bool) -> dict:
    from .report import write_report  # matplotlib only when needed

    study, start_reward, env, wall = _open(cfg, out, resume)
    writers = []
    for spec, s0 in zip(study.specs, start_reward):
        d = out / rd.RUNS / spec.name
        d.mkdir(parents=True, exist_ok=True)
        rd.write_json(d / rd.CONFIG, {"format": rd.FORMAT, "kind": "toy", "method": spec.method,
                                      "staleness": spec.staleness, "seed": spec.seed, "start_reward": s0,
                                      "config": cfg.to_dict()})
    try:
        for spec in study.specs:  # checks every metrics file agrees with the checkpoint
            writers.append(rd.MetricsWriter(out / rd.RUNS / spec.name / rd.METRICS, start=study.update))
        wall = _loop(cfg, out, study, start_reward, writers, progress, wall)
    finally:
        for w in writers:
            w.close()
    summary = write_report(cfg, out, wall, env)
    rd.remove_checkpoint(out)  # finished: summary.json is written, nothing left to resume
    return summary


def _loop(cfg, out, study, start_reward, writers, progress, wall_before: float) -> float:
    """Train to the end, writing rows and checkpoints; returns the study's wall seconds (all sessions)."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.updates, initial=study.update, desc=f"study ({len(study.specs)} runs)", unit="upd")
    t0 = time.time()
    try:
        for out_t, per_run in study.steps():
            rows = _rows(study, out_t, per_run)
            u = study.update - 1
            if (u + 1) % cfg.eval_every == 0 or u == cfg.updates - 1:
                detail = {k: v.tolist() for k, v in study.evaluate_detail().items()}
                for r, row in enumerate(rows):
                    row.update({f"eval/{k}": v[r] for k, v in detail.items()})
            if u % cfg.hist_every == 0 or u == cfg.updates - 1:
                for row, h in zip(rows, log_ratio_histograms(out_t["_log_ratio"], out_t["_entropy"])):
                    row.update(h)
            for w, row in zip(writers, rows):
                w.write(row)
            if cfg.checkpoint_every and study.update % cfg.checkpoint_every == 0 and study.update < cfg.updates:
                for w in writers:
                    w.sync()  # every line up to the checkpoint is on disk before the checkpoint claims it
                rd.save_checkpoint(out, {"update": study.update, "study": study.state_dict(),
                                         "start_reward": start_reward, "wall_s": wall_before + time.time() - t0})
            if bar is not None:
                bar.update(1)
                if u % 20 == 0:
                    bar.set_postfix(reward=f"{sum(r['reward'] for r in rows) / len(rows):.3f}")
    finally:
        if bar is not None:
            bar.close()
    return wall_before + time.time() - t0
