"""Entry points: run one system, or run it next to its synchronous baseline."""

from __future__ import annotations

from .config import SystemConfig
from .pipeline import Pipeline
from .results import SimResult, collect, summary


def simulate(cfg: SystemConfig) -> SimResult:
    """Simulate ``cfg`` until ``cfg.steps`` training steps are done (or ``cfg.hours`` pass)."""
    return collect(Pipeline(cfg).run())


def compare(cfg: SystemConfig) -> tuple[dict[str, float], SimResult]:
    """``summary`` of ``cfg`` plus ``speedup/vs_sync``: its updates per hour over those of
    ``cfg.synchronous()`` (same GPUs, batch, lengths and seed). Returns (outputs, result)."""
    out, _, res = compare_with_baseline(cfg)
    return out, res


def compare_with_baseline(cfg: SystemConfig) -> tuple[dict[str, float], dict[str, float], SimResult]:
    """``compare``, and the synchronous run's own outputs: ``(outputs, synchronous outputs, result)``."""
    res = simulate(cfg)
    out = summary(res)
    base = dict(out) if cfg == cfg.synchronous() else summary(simulate(cfg.synchronous()))
    out["speedup/vs_sync"] = out["throughput/updates_per_hour"] / base["throughput/updates_per_hour"]
    out["speedup/sync_updates_per_hour"] = base["throughput/updates_per_hour"]
    return out, base, res
