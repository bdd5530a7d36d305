"""Sample ages of a study: a fixed k per run (the paper's stale-k), or one age per group drawn from a distribution.

A study's runs are stale-k (every group of the rollout step trained at update t was
generated at update t - k, arXiv 2510.01161) unless ``StudyConfig.ages`` gives a
distribution: then the runs at its bound (``staleness`` equal to the largest age with
weight) draw an age for every *group* of every rollout step, P(age = a) proportional to
``ages[a]``, a in optimizer updates, as a simulated system's samples carry their own
ages (``m2po_lab.systems.age_pmf``). A group is the unit because its G responses share one
advantage baseline and, in a system, one head version (they are admitted together).

Rollouts exist once per rollout step (every ``updates_per_step`` = U updates), so an age
a reads the group from the rollout step ``depth = ceil(a / U)`` steps back: at the step's
first mini-batch it is ``depth * U`` >= a updates old, exactly a when a is a multiple of U
(as every age a system gives in updates is: versions x U). Before a run has that many
steps of history, the group comes from a fresh batch of the base policy, as in stale-k.

Draws are independent per (step, group slot): a stored group is trained once *on
average* (it may be trained twice, or not at all), and the age distribution is matched,
not its correlations across steps. Each run draws from its own generator seeded
``AGE_SEED + seed``, so the runs of one seed see the same ages whatever their method
(common random numbers), and the sampling streams of stale-k runs are untouched.
"""

from __future__ import annotations

import math

import torch

AGE_SEED = 7919
"""A run's age stream is ``torch.Generator().manual_seed(AGE_SEED + seed)``."""


def check_age_weights(ages: tuple[float, ...]) -> None:
    """ValueError unless ``ages`` is empty or finite weights >= 0, positive sum, last one > 0."""
    if not ages:
        return
    for w in ages:
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
            raise ValueError(f"ages must hold finite weights >= 0 (P(age = a) for a = 0, 1, ...), got {w!r}")
    if ages[-1] <= 0:
        raise ValueError(f"ages must end with a weight > 0 (its last index is the bound; drop trailing zeros), "
                         f"got {ages[-1]!r}")


def age_bound(ages: tuple[float, ...]) -> int | None:
    """The largest age (updates) of the distribution ``ages``; None when empty (stale-k only)."""
    return len(ages) - 1 if ages else None


def age_mean(ages: tuple[float, ...]) -> float:
    """E[age] in updates under the weights ``ages``."""
    return sum(a * w for a, w in enumerate(ages)) / sum(ages)


class AgeSampler:
    """For every rollout step, the depth (rollout steps back) each group slot of each run trains from.

    ``fixed`` (R,) holds the stale-k depth k / U of every run; ``variable`` lists the runs
    that draw ages. ``max_depth`` bounds the rollout steps a study must keep.
    """

    def __init__(self, ages: tuple[float, ...], updates_per_step: int, specs):
        U = updates_per_step
        bound = age_bound(ages)
        self.fixed = torch.tensor([s.staleness // U for s in specs], dtype=torch.int64)  # (R,)
        self.variable = [r for r, s in enumerate(specs) if bound is not None and s.staleness == bound]
        w = torch.tensor(ages or (1.0,), dtype=torch.float64)
        cdf = torch.cumsum(w, 0)
        self.cdf = cdf / cdf[-1]  # (A,) exact 1 at the end: every uniform in [0, 1) finds an age
        self.depth_of = torch.tensor([-(-a // U) for a in range(len(w))], dtype=torch.int64)  # (A,) ceil(a / U)
        self.gens = {r: torch.Generator().manual_seed(AGE_SEED + specs[r].seed) for r in self.variable}
        self.max_depth = int(max(self.fixed.max(), self.depth_of[-1] if self.variable else 0))

    def depths(self, n_groups: int) -> torch.Tensor:
        """(R, n_groups) int64: rollout steps back for each group slot (stale-k runs: constant rows)."""
        depth = self.fixed[:, None].repeat(1, n_groups)  # (R, P)
        for r, g in self.gens.items():
            u = torch.rand(n_groups, generator=g, dtype=torch.float64)  # (P,)
            depth[r] = self.depth_of[torch.searchsorted(self.cdf, u, right=True)]
        return depth

    def state_dict(self) -> dict:
        return {str(r): g.get_state() for r, g in self.gens.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {str(r) for r in self.gens}:
            raise ValueError(f"the checkpoint's age streams {sorted(state)} are not this study's "
                             f"{sorted(str(r) for r in self.gens)}")
        for r, g in self.gens.items():
            g.set_state(state[str(r)])
