"""The LLM trainer's run directory (docs/run_format.md) and its per-update rows.

``config.json`` (the TrainConfig fields + ``"kind": "llm"``, ``"start"``: the accuracies before RL
and ``"summary"``: the final figures, once done),
``metrics.jsonl`` (one line per update, flushed), ``checkpoint.pt`` (atomic). On resume
metrics.jsonl is cut back to the checkpoint's update, so no line is duplicated or torn.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from m2po_lab.runlog import atomic_torch_save, atomic_write_text, json_number, log_ratio_histograms, read_metrics

CHECKPOINT = "checkpoint.pt"


class RunDir:
    """Owns OUT: config check, metrics file, checkpoint."""

    def __init__(self, out, cfg_dict: dict, resume: bool):
        self.out = Path(out)
        cfg_path = self.out / "config.json"
        if resume:
            if not cfg_path.exists():
                raise ValueError(f"resume: {str(self.out)!r} holds no run (no config.json)")
            self.meta = json.loads(cfg_path.read_text())
            self._fields = [k for k in self.meta if k not in ("kind", "start", "summary")]
        else:
            if self.out.exists() and any(self.out.iterdir()):
                raise ValueError(f"out: {str(self.out)!r} is not empty; choose a new directory or --resume it")
            self.out.mkdir(parents=True, exist_ok=True)
            self.meta = {"kind": "llm", **cfg_dict, "start": None}
            self._fields = list(cfg_dict)
            self.write_meta()
        self._file = None

    @property
    def config(self) -> dict:
        """The TrainConfig fields as saved."""
        return {k: self.meta[k] for k in self._fields}

    def write_meta(self) -> None:
        atomic_write_text(self.out / "config.json", json.dumps(self.meta, indent=2))

    def load_checkpoint(self) -> dict | None:
        path = self.out / CHECKPOINT
        return torch.load(path, weights_only=True, map_location="cpu") if path.exists() else None

    def save_checkpoint(self, state: dict) -> None:
        if self._file is not None:
            self._file.flush()  # every line up to the checkpoint is on disk first
        atomic_torch_save(state, self.out / CHECKPOINT)

    def open_metrics(self, update: int) -> None:
        """Keep the complete lines with update < ``update``, then append."""
        path = self.out / "metrics.jsonl"
        kept = read_metrics(path, before=update)
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(path, "a")

    def write(self, row: dict) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def to_row(scalars: dict[str, torch.Tensor]) -> dict:
    """0-d tensors -> JSON numbers with ONE host sync (inf / nan -> null)."""
    keys = sorted(scalars)
    values = torch.stack([scalars[k].detach().float().cpu() for k in keys]).tolist() if keys else []
    return {k: json_number(v) for k, v in zip(keys, values)}


def histograms(log_ratio: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor) -> dict:
    """``is/log_ratio_quantiles``, ``is/log_ratio_hist``, ``entropy_by_ratio`` over valid tokens."""
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
