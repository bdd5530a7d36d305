"""The toy staleness study: the paper's phenomena on a small CPU, with the package's own losses."""

from .config import PRESETS, StudyConfig, get_preset
from ..rundir import read_metrics
from .driver import run_study

__all__ = ["PRESETS", "StudyConfig", "get_preset", "read_metrics", "run_study"]
