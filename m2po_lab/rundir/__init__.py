"""Run and study directories: one writer and one reader for every producer and consumer.

The toy study, the LLM trainer, the reports and the explorer all go through this package
(docs/run_format.md states the guarantees): durable atomic writes, one writer per
directory (a lock), ``metrics.jsonl`` checked line by line (no gap, at most a torn last
line), checkpoints loaded weights-only, and the environment that produced a run.
"""

from .checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from .discover import Entry, discover, find_runs
from .environment import environment, environment_changes, environment_lines
from .files import (CHECKPOINT, CONFIG, FORMAT, LOCK, METRICS, REPORT, RUNS, SUMMARY, RunDirError, atomic_write_text,
                    json_number, read_json, remove_owned, write_json)
from .layout import (FINAL_TAIL, Run, Study, dir_signature, eval_curve, final_mean, is_study_dir, load_run, load_study, read_config, run_name, run_study_dir,
                     study_progress, under_root)
from .lock import DirLock, is_locked
from .metrics_io import MetricsWriter, read_metrics, scan_metrics
from .records import ENTROPY_KEY, HIST_KEY, QUANTILE_KEY, REQUIRED_KEYS, TOKENS_KEY, check_row, pool_entropy_bins

__all__ = [
    "run_study_dir",
    "remove_owned",
    "CHECKPOINT", "CONFIG", "ENTROPY_KEY", "FORMAT", "HIST_KEY", "LOCK", "METRICS", "QUANTILE_KEY", "REPORT",
    "REQUIRED_KEYS", "RUNS", "SUMMARY", "TOKENS_KEY", "DirLock", "Entry", "MetricsWriter", "Run", "RunDirError",
    "FINAL_TAIL", "Study", "atomic_write_text", "eval_curve", "final_mean", "check_row", "dir_signature", "discover", "environment", "environment_changes",
    "environment_lines", "find_runs", "is_locked", "is_study_dir", "json_number", "load_checkpoint", "load_run",
    "load_study", "pool_entropy_bins", "read_config", "read_json", "read_metrics", "remove_checkpoint", "run_name",
    "save_checkpoint", "scan_metrics", "study_progress", "under_root", "write_json",
]
