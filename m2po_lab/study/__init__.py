"""The toy staleness study: the paper's phenomena on a small CPU, with the package's own losses."""

from .config import PRESETS, StudyConfig, get_preset
from .driver import read_metrics, run_study

__all__ = ["PRESETS", "StudyConfig", "get_preset", "read_metrics", "run_study"]
