"""What a simulation returns, and the statistics read from it.

Ages (staleness). A sample's age is v - h, v the trainer version at the step that
consumes it and h its *head* version, the version that generated its first token (the
version it was started with; AReaL's "head offpolicyness"). A token's age is v - u, u the
version that generated that token: without partial rollouts every token of a response
has u = h; with them later tokens can be newer, so token ages are <= the sample's age.
Ages are counted in versions (weight publications, one per training step) or, times
``updates_per_step``, in optimizer updates (the unit of the paper's stale-k, measured at
the start of the consuming step as ``m2po_lab.study`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import SystemConfig
from .pipeline import DROPPED, IN_FLIGHT, READY, TRAINED, Pipeline

UNITS = ("versions", "updates")


@dataclass
class SimResult:
    """Records of one run; arrays are numpy, times in simulated seconds."""

    cfg: SystemConfig
    group_start: np.ndarray  # (N_g,) time a group was admitted
    group_version: np.ndarray  # (N_g,) head version h
    group_done: np.ndarray  # (N_g,) time its last response finished (nan: still in flight)
    group_consume: np.ndarray  # (N_g,) trainer version v that consumed it (-1: not consumed)
    group_status: np.ndarray  # (N_g,) IN_FLIGHT, READY, TRAINED or DROPPED
    length: np.ndarray  # (N_s,) response lengths, tokens; sample i is in group i // G
    sample_end: np.ndarray  # (N_s,) time each response finished (nan: in flight)
    seg_sample: np.ndarray  # (N_seg,) token segments: sample ...
    seg_version: np.ndarray  # (N_seg,) ... version that generated them ...
    seg_tokens: np.ndarray  # (N_seg,) ... and how many tokens
    step_start: np.ndarray  # (steps,) time each step took its batch
    step_end: np.ndarray  # (steps,) time its weights were published and synced
    window: tuple[float, float]  # statistics window: end of the last warm-up step .. end of the run
    rollout_busy: np.ndarray  # (workers, 3) decode, prefill, weight-load seconds inside the window
    trainer_busy: np.ndarray  # (2,) training, weight-sync seconds inside the window
    inflight_area: float  # integral over [0, t_end] of the sequences in flight, summed over workers
    system_area: float  # integral over [0, t_end] of the groups started but not consumed or dropped
    t_end: float  # time the run stopped
    n_workers: int
    wakeups: int  # worker process resumptions (the events the simulation processed)

    @property
    def group_size(self) -> int:
        return self.cfg.group_size

    def measured(self) -> np.ndarray:
        """(N_g,) True for groups trained at a step inside the statistics window."""
        return (self.group_status == TRAINED) & (self.group_consume >= self.cfg.warmup_steps)


def collect(pipe: Pipeline) -> SimResult:
    """Turn a finished :class:`Pipeline` into a :class:`SimResult`."""
    (t0, w0, tr0), (t1, w1, tr1) = pipe.snapshots[0], pipe.snapshots[-1]
    if len(pipe.snapshots) == 1:  # stopped (hours) before the warm-up ended: no window
        w0, tr0 = w1, tr1
    busy = np.asarray(w1)[:, :3] - np.asarray(w0)[:, :3]
    f = np.asarray
    return SimResult(
        cfg=pipe.cfg, group_start=f(pipe.group_start, float), group_version=f(pipe.group_version, np.int64),
        group_done=f(pipe.group_done, float), group_consume=f(pipe.group_consume, np.int64),
        group_status=f(pipe.group_status, np.int8), length=f(pipe.length, np.int64),
        sample_end=f(pipe.sample_end, float), seg_sample=f(pipe.seg_sample, np.int64),
        seg_version=f(pipe.seg_version, np.int64), seg_tokens=f(pipe.seg_tokens, np.int64),
        step_start=f(pipe.step_start, float), step_end=f(pipe.step_end, float), window=(t0, t1),
        rollout_busy=busy, trainer_busy=f(tr1) - f(tr0), inflight_area=sum(w.acc[3] for w in pipe.workers),
        system_area=pipe.sys_area, t_end=pipe.env.now, n_workers=len(pipe.workers),
        wakeups=sum(w.wakeups for w in pipe.workers),
    )


def _scale(unit: str, cfg: SystemConfig) -> int:
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r} is not accepted; accepted values: {list(UNITS)}")
    return cfg.updates_per_step if unit == "updates" else 1


def sample_ages(res: SimResult, unit: str = "versions") -> np.ndarray:
    """Ages of every trained sample in the window, int64 (one entry per response)."""
    k = _scale(unit, res.cfg)
    m = res.measured()
    ages = (res.group_consume[m] - res.group_version[m]) * k
    return np.repeat(ages, res.group_size)


def age_pmf(res: SimResult, unit: str = "versions") -> np.ndarray:
    """Empirical P(age = a) of trained samples for a = 0, 1, ..., max age (sums to 1)."""
    ages = sample_ages(res, unit)
    if not len(ages):
        raise ValueError("no sample was trained inside the statistics window: raise steps or hours")
    return np.bincount(ages) / len(ages)


def token_ages(res: SimResult, unit: str = "versions") -> tuple[np.ndarray, np.ndarray]:
    """``(ages, tokens)``: per token segment of the trained samples in the window, its age and size."""
    k = _scale(unit, res.cfg)
    group = res.seg_sample // res.group_size
    m = res.measured()[group]
    return (res.group_consume[group[m]] - res.seg_version[m]) * k, res.seg_tokens[m]


def token_age_pmf(res: SimResult, unit: str = "versions") -> np.ndarray:
    """P(age = a) of a trained *token*, a = 0, 1, ... (token-weighted; sums to 1)."""
    ages, tokens = token_ages(res, unit)
    return np.bincount(ages, weights=tokens) / tokens.sum()


def _quantile(pmf: np.ndarray, q: float) -> int:
    """Smallest a with P(age <= a) >= q (an age that occurs; no interpolation)."""
    return int(np.searchsorted(np.cumsum(pmf), q - 1e-12))


def status_counts(res: SimResult) -> dict[str, int]:
    """Groups by final state: every started group is in exactly one."""
    s = res.group_status
    return {"in_flight": int((s == IN_FLIGHT).sum()), "ready": int((s == READY).sum()),
            "trained": int((s == TRAINED).sum()), "dropped": int((s == DROPPED).sum())}


def summary(res: SimResult) -> dict[str, float]:
    """The outputs of a run under namespaced keys (docs/systems.md lists them)."""
    cfg, (t0, t1) = res.cfg, res.window
    span = max(t1 - t0, 1e-12)
    steps = int(((res.step_end > t0) & (res.step_end <= t1 + 1e-9)).sum())
    pmf, tpmf = age_pmf(res), token_age_pmf(res)
    a = np.arange(len(pmf))
    counts = status_counts(res)
    gpus_w = cfg.total_gpus if cfg.colocated else cfg.rollout_workers * cfg.gpus_per_worker
    out = {
        "staleness/sample_mean": float(a @ pmf), "staleness/sample_p50": _quantile(pmf, 0.5),
        "staleness/sample_p99": _quantile(pmf, 0.99), "staleness/sample_max": len(pmf) - 1,
        "staleness/token_mean": float(np.arange(len(tpmf)) @ tpmf), "staleness/token_p50": _quantile(tpmf, 0.5),
        "staleness/token_p99": _quantile(tpmf, 0.99),
        "util/rollout": float(res.rollout_busy[:, :2].sum() / (res.n_workers * span)),
        "util/rollout_weight_load": float(res.rollout_busy[:, 2].sum() / (res.n_workers * span)),
        "util/trainer": float(res.trainer_busy[0] / span),
        "throughput/steps_per_hour": steps / span * 3600, "throughput/updates_per_hour":
            steps * cfg.updates_per_step / span * 3600,
        "throughput/rollout_gpus": gpus_w, "samples/trained": counts["trained"] * cfg.group_size,
        "samples/dropped": counts["dropped"] * cfg.group_size,
        "samples/generated": int(np.isfinite(res.sample_end).sum()),
        "sim/hours": res.t_end / 3600, "sim/events": res.wakeups,
    }
    return out
