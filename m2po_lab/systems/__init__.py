"""A discrete-event simulator of RL systems with stale rollouts (SimPy).

Rollout workers decode whole groups under continuous batching, a trainer consumes
batches of ready groups, and a staleness rule (synchronous, one step off, or AReaL's
bounded asynchrony) decides what may start. ``simulate`` runs one system and returns
its records; ``sample_ages`` / ``age_pmf`` give the empirical age distribution of the
trained samples (in versions or optimizer updates), ``summary`` the outputs (staleness,
utilisation, updates per hour), ``compare`` adds the speed-up over the same system run
synchronously. The model, its assumptions and its validation: docs/systems.md.
``coupling.run_wallclock`` (``m2po-lab wallclock``) trains the toy study on a system's sample
ages and reports eval reward against simulated hours (``wallclock``: time to target).

Configs, presets, lengths and closed forms import without SimPy; the simulation entry
points import it on first use (``pip install 'm2po-lab[systems]'``).
"""

import importlib

from .closed_form import mean_staleness_estimate
from .config import MODES, SystemConfig, decode_roofline
from .lengths import LENGTH_PRESETS, LengthDist
from .presets import PRESETS, get_preset

_NEEDS_SIMPY = {
    "SimResult": ".results", "age_pmf": ".results", "sample_ages": ".results", "status_counts": ".results",
    "summary": ".results", "token_age_pmf": ".results", "token_ages": ".results", "compare": ".run",
    "compare_with_baseline": ".run",
    "simulate": ".run",
}


def __getattr__(name: str):
    if name in _NEEDS_SIMPY:
        return getattr(importlib.import_module(_NEEDS_SIMPY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LENGTH_PRESETS", "MODES", "PRESETS", "LengthDist", "SimResult", "SystemConfig", "age_pmf", "compare",
    "compare_with_baseline",
    "decode_roofline", "get_preset", "mean_staleness_estimate", "sample_ages", "simulate", "status_counts",
    "summary", "token_age_pmf", "token_ages",
]
