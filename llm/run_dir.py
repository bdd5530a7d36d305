"""The LLM trainer's run directory (docs/run_format.md), through ``m2po_lab.rundir``, and its per-update rows.

``config.json``: ``{"format", "kind": "llm", "config": TrainConfig fields, "environment",
"start": accuracies before RL (None until measured), "summary": final figures once done}``;
``metrics.jsonl`` (one line per update); ``checkpoint.pt`` (at rollout-step boundaries);
``model/`` (the tiny model's RL start). One process writes a run at a time (``.lock``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from m2po_lab import rundir as rd
from m2po_lab.histograms import log_ratio_histograms


class RunDir:
    """Owns OUT while a run trains: its lock, config document, metrics writer and checkpoint.

    ``resume=False`` needs a new or empty OUT; ``resume=True`` an unfinished run. Use as a
    context manager: the lock is held from ``__enter__`` to ``__exit__``.
    """

    def __init__(self, out, cfg_dict: dict, resume: bool, device: str = "cpu"):
        self.out = Path(out)
        self._resume, self._cfg, self._device = resume, cfg_dict, device
        self._lock = rd.DirLock(self.out)
        self._writer: rd.MetricsWriter | None = None
        self.meta: dict = {}

    def __enter__(self) -> "RunDir":
        check_out(self.out, self._resume)  # before anything is written
        try:
            self._lock.__enter__()
        except OSError as e:
            raise rd.RunDirError(f"out: cannot write {str(self.out)!r}: {e.strerror}") from None
        try:
            check_out(self.out, self._resume)  # again, under the lock
            env = rd.environment(self._device)
            if self._resume:
                self.meta = read_run(self.out)
                changes = rd.environment_changes(self.meta.get("environment"), env)
                if changes and (self.out / rd.CHECKPOINT).exists():
                    warnings.warn(f"resuming {str(self.out)!r} in a different environment ({'; '.join(changes)}): "
                                  "the result may differ from an uninterrupted run", RuntimeWarning, stacklevel=2)
            else:
                self.meta = {"format": rd.FORMAT, "kind": "llm", "config": self._cfg, "environment": env,
                             "start": None}
                self.write_meta()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._lock.__exit__(*exc)

    @property
    def config(self) -> dict:
        """The TrainConfig fields as saved."""
        return self.meta["config"]

    def write_meta(self) -> None:
        rd.write_json(self.out / rd.CONFIG, self.meta)

    def load_checkpoint(self) -> dict | None:
        return rd.load_checkpoint(self.out)

    def _metrics(self) -> rd.MetricsWriter:
        """The open metrics writer; ``RuntimeError`` before ``open_metrics``."""
        if self._writer is None:
            raise RuntimeError("RunDir: metrics.jsonl is not open (call open_metrics first)")
        return self._writer

    def save_checkpoint(self, state: dict) -> None:
        self._metrics().sync()  # every line up to the checkpoint is on disk first
        rd.save_checkpoint(self.out, state)

    def open_metrics(self, update: int) -> None:
        """Check metrics.jsonl against the checkpoint's ``update`` (no gap), cut it there, append."""
        self._writer = rd.MetricsWriter(self.out / rd.METRICS, start=update)

    def write(self, row: dict) -> None:
        self._metrics().write(row)

    def finish(self, summary: dict) -> None:
        """Mark the run finished (``summary`` in config.json), then drop the checkpoint."""
        self._metrics().close()
        self.meta["summary"] = summary
        self.write_meta()
        rd.remove_checkpoint(self.out)


def check_out(out: Path, resume: bool) -> None:
    """``RunDirError`` unless ``out`` can take a new run (``resume`` False) or holds an unfinished one."""
    if out.exists() and not out.is_dir():
        raise rd.RunDirError(f"out: {str(out)!r} is a file, not a directory")
    if not resume:
        if out.exists() and any(p.name != rd.LOCK for p in out.iterdir()):
            raise rd.RunDirError(f"out: {str(out)!r} is not empty; choose a new directory or --resume it")
        return
    meta = read_run(out)
    if "summary" in meta:
        raise rd.RunDirError(f"resume: the run in {str(out)!r} has finished ({meta['summary'].get('updates')} updates)")


def read_run(out) -> dict:
    """The config document of the LLM run in ``out`` (checked)."""
    out = Path(out)
    if not (out / rd.CONFIG).exists():
        raise rd.RunDirError(f"resume: {str(out)!r} holds no run (no config.json)")
    return rd.read_config(out, "llm")


def to_row(scalars: dict[str, torch.Tensor]) -> dict:
    """0-d tensors -> JSON numbers with ONE host sync (inf / nan -> null)."""
    keys = sorted(scalars)
    values = torch.stack([scalars[k].detach().float().cpu() for k in keys]).tolist() if keys else []
    return {k: rd.json_number(v) for k, v in zip(keys, values)}


def histograms(log_ratio: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor) -> dict:
    """``is/log_ratio_quantiles``, ``is/log_ratio_hist``, ``entropy/by_ratio`` over valid tokens."""
    lr = log_ratio.detach().float().cpu()[mask.cpu()]  # (n,)
    ent = entropy.detach().float().cpu()[mask.cpu()]  # (n,)
    return log_ratio_histograms(lr[None], ent[None])[0]


def zeroed_examples(tokenizer, input_ids, response_start: int, zeroed, log_ratio, limit: int = 16,
                    context_chars: int = 48) -> list[dict]:
    """Up to ``limit`` tokens whose gradient the loss zeroed, largest |log r| first, decoded.

    Each: {"text": the preceding context (last ``context_chars`` characters), "token", "log_ratio"}.
    """
    score = torch.where(zeroed, log_ratio.detach().abs(), torch.full_like(log_ratio, -1.0)).cpu()  # (B, R)
    k = min(limit, int(zeroed.sum()))
    if k == 0:
        return []
    top = torch.topk(score.flatten(), k).indices
    R = score.shape[1]
    out = []
    for flat in top.tolist():
        b, t = divmod(flat, R)
        ids = input_ids[b].long().tolist()
        pos = response_start + t
        context = tokenizer.decode(ids[:pos], skip_special_tokens=True)[-context_chars:]
        out.append({"text": context, "token": tokenizer.decode([ids[pos]]), "log_ratio": float(log_ratio[b, t])})
    return out
