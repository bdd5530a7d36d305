"""Run a study to disk: config -> setup -> loop -> log; resumable, one line per update per run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..runlog import atomic_torch_save, atomic_write_text, json_number, log_ratio_histograms, read_metrics
from .config import StudyConfig
from .runner import BatchedStudy

CHECKPOINT = "checkpoint.pt"


def _rows(study: BatchedStudy, out: dict, per_run: list[dict]) -> list[dict]:
    """One JSON row per run for the update just done (one host sync for all numbers)."""
    u = study.update - 1
    keys_by_run = [sorted(m) for m in per_run]
    values = torch.cat([torch.stack([m[k].float() for k in ks]) for m, ks in zip(per_run, keys_by_run)]).tolist()
    flat, i = [], 0
    for ks in keys_by_run:
        flat.append(values[i : i + len(ks)])
        i += len(ks)
    common = {k: out[k].tolist() for k in ("reward", "m2", "entropy", "grad_norm", "staleness", "data/fixed_ok")}
    rows = []
    for r in range(len(study.specs)):
        row = {"update": u}
        row.update({k: v[r] for k, v in common.items()})
        row.update({k: json_number(v) for k, v in zip(keys_by_run[r], flat[r])})
        rows.append(row)
    return rows


def _check_out_dir(cfg: StudyConfig, out: Path) -> bool:
    """True when ``out`` holds a resumable study of the same config; error when it holds another."""
    cfg_path = out / "config.json"
    if not cfg_path.exists():
        if out.exists() and any(out.iterdir()):
            raise ValueError(f"out={str(out)!r} exists and is not a study directory; choose an empty or new directory")
        return False
    saved = json.loads(cfg_path.read_text())
    if saved != json.loads(json.dumps(cfg.to_dict())):
        raise ValueError(
            f"out={str(out)!r} holds a study with a different config; use a new --out, or the same options to resume"
        )
    return True


def run_study(cfg: StudyConfig, out_dir, progress: bool = True, threads: int = 1) -> dict:
    """Train every run of ``cfg``, writing ``out_dir`` (see docs/run_format.md); resume if interrupted.

    Returns the summary (also written to ``summary.json``, with ``report.md`` and figures).
    """
    from .report import write_report  # matplotlib only when needed

    torch.set_num_threads(threads)  # tiny tensors: one thread is fastest on a small CPU
    out = Path(out_dir)
    resuming = _check_out_dir(cfg, out)
    study = BatchedStudy(cfg)
    run_dirs = [out / "runs" / s.name for s in study.specs]
    start_reward = None
    if resuming and (out / CHECKPOINT).exists():
        state = torch.load(out / CHECKPOINT, weights_only=True)
        study.load_state_dict(state["study"])
        start_reward = state["start_reward"]
    if start_reward is None:
        start_reward = study.evaluate().tolist()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
    files = []
    for d, spec, s0 in zip(run_dirs, study.specs, start_reward):
        d.mkdir(parents=True, exist_ok=True)
        run_cfg = {"kind": "toy", "method": spec.method, "staleness": spec.staleness, "seed": spec.seed,
                   "start_reward": s0, "study": cfg.to_dict()}
        atomic_write_text(d / "config.json", json.dumps(run_cfg, indent=2))
        kept = read_metrics(d / "metrics.jsonl", before=study.update)  # drop lines past the checkpoint
        atomic_write_text(d / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
        files.append(open(d / "metrics.jsonl", "a"))
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
            for f, row in zip(files, rows):
                f.write(json.dumps(row) + "\n")
            if cfg.checkpoint_every and study.update % cfg.checkpoint_every == 0 and study.update < cfg.updates:
                for f in files:
                    f.flush()
                atomic_torch_save({"study": study.state_dict(), "start_reward": start_reward}, out / CHECKPOINT)
            if bar is not None:
                bar.update(1)
                if u % 20 == 0:
                    bar.set_postfix(reward=f"{sum(r['reward'] for r in rows) / len(rows):.3f}")
    finally:
        for f in files:
            f.close()
        if bar is not None:
            bar.close()
    wall = time.time() - t0
    (out / CHECKPOINT).unlink(missing_ok=True)
    return write_report(cfg, out, study.specs, start_reward, wall)
