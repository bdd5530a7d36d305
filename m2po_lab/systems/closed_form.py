"""Closed-form estimates of mean staleness, independent of the simulator (docs/systems.md derives them).

Notation: B = batch_prompts, G = group_size, W = rollout_workers, eta = max_staleness,
tau = train + weight-sync seconds of a step, lambda = groups consumed per second, so a
version is published every T = B / lambda seconds.

- Trainer-bound with a bound (generation could outrun the trainer): every slot the bound
  opens at a publication is refilled at once, by the version just published, and that
  group is consumed eta steps later: E[age] = eta. With a queue cap Q instead (slots open
  at consumption), E[age] = Q / B; with both, the smaller.
- Generation-bound with partial rollouts (the trainer waits for data, the bound does not
  bind): each worker holds n = max_concurrency - (G - 1) / 2 sequences (whole groups fill
  the free slots), all decoding at one rate r, so a group lasts max(L_1..L_G) / r and the
  pool finishes lambda = W n r / (G E[L]) groups per second; Little's law gives
  N_flight = lambda * E[group time] = (W n / G) E[max_G L] / E[L] groups in flight. A sample
  started at a uniformly random phase of the publication grid, consumed D seconds later
  (D = N_flight / lambda in flight + the wait for the batch to fill, published tau later),
  sees E[floor((D + tau) / T)] versions, which works out to

      E[age] = N_flight / B + tau / T - 1 / (2 B).
"""

from __future__ import annotations

from .config import SystemConfig
from .lengths import LengthDist


def _rates(cfg: SystemConfig, dist: LengthDist) -> tuple[float, float, float]:
    """(groups/s the full rollout pool generates, groups/s the trainer can take, tau seconds)."""
    n = cfg.max_concurrency - (cfg.group_size - 1) / 2
    tokens_s = cfg.rollout_workers * cfg.decode_tokens_per_s * n / (n + cfg.decode_half_concurrency)
    full = tokens_s / (cfg.group_size * dist.mean_length())
    # pauses: weight loading once per step (B groups), one prompt prefill per group on its worker
    pause = cfg.weight_sync_s / cfg.batch_prompts + cfg.prompt_tokens / cfg.prefill_tokens_per_s / cfg.rollout_workers
    gen = full / (1 + full * pause)
    step_tokens = cfg.batch_prompts * cfg.group_size * (dist.mean_length() + cfg.prompt_tokens)
    tau = step_tokens / cfg.train_tokens_per_s + cfg.updates_per_step * cfg.update_overhead_s + cfg.weight_sync_s
    return gen, cfg.batch_prompts / tau, tau


def mean_staleness_estimate(cfg: SystemConfig, margin: float = 1.25) -> dict:
    """``{"regime": ..., "mean": E[sample age] in versions, or None}`` from the configuration alone.

    ``margin``: how much faster one side must be than the other for the regime to count as
    bound by the slower side; near balance neither formula holds and ``mean`` is None.
    The KV-cache rebuild after an interrupting weight update is left out (keep it small).
    """
    if cfg.mode == "sync":
        return {"regime": "sync", "mean": 0.0}
    if cfg.mode == "one_step_off":
        return {"regime": "one_step_off", "mean": 1.0}
    dist = LengthDist.from_config(cfg)
    gen, train, tau = _rates(cfg, dist)
    B, G = cfg.batch_prompts, cfg.group_size
    eta_cap = cfg.max_staleness * B if cfg.max_staleness is not None else None
    caps = [c for c in (eta_cap, cfg.queue_capacity) if c is not None]
    if gen > margin * train and caps:
        return {"regime": "trainer-bound", "mean": min(caps) / B}
    if train > margin * gen and cfg.partial_rollout:
        n = cfg.max_concurrency - (G - 1) / 2
        flight = cfg.rollout_workers * n / G * dist.mean_max(G) / dist.mean_length()
        if not caps or flight + B <= min(caps):  # the bound must not bind
            return {"regime": "generation-bound", "mean": flight / B + tau * gen / B - 1 / (2 * B)}
    return {"regime": "no closed form", "mean": None}
