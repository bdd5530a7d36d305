"""The numbers behind the explorer's Systems page: one simulated system next to its synchronous baseline.

``system_config`` turns the page's controls (pools, lengths, the staleness bound) into a
``SystemConfig`` on top of a preset; ``explore_system`` simulates it and its synchronous
baseline (``m2po_lab.systems.compare_with_baseline``) and returns plain numbers: the
outputs of both, the sample- and token-age pmfs (in versions), the closed-form mean age
where one holds and the study ages a variable-age study would train on. The page only
draws them. The ``teaching`` preset answers in well under a second on a small CPU.
"""

from __future__ import annotations

from dataclasses import replace

from ..systems import PRESETS, SystemConfig, mean_staleness_estimate

DEFAULT_PRESET = "teaching"
"""The preset the page opens with (about 0.2 s for both simulations here)."""
PAGE_PRESETS = ("teaching", "fully-async", "small")
"""Presets that answer in about a second (the AReaL and day-long ones take many seconds: use the CLI)."""
UNBOUNDED = "none"
"""The bound control's label for no staleness bound (``max_staleness=None``)."""


def system_config(preset: str = DEFAULT_PRESET, bound: int | str | None = "preset", **fields) -> SystemConfig:
    """``preset`` with ``fields`` replaced; ``bound``: an int (versions), ``UNBOUNDED``, or "preset" (keep it).

    A new ``trainer_gpus`` scales ``train_tokens_per_s`` with it (the same throughput per GPU).
    Raises the config's one-line ValueError for a bad combination (e.g. concurrency below the group size).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} is not accepted; accepted values: {sorted(PRESETS)}")
    cfg = PRESETS[preset]
    if "trainer_gpus" in fields and "train_tokens_per_s" not in fields:
        fields["train_tokens_per_s"] = cfg.train_tokens_per_s * fields["trainer_gpus"] / cfg.trainer_gpus
    if bound != "preset":
        fields["max_staleness"] = None if bound == UNBOUNDED else bound
    return replace(cfg, **fields)


def explore_system(cfg: SystemConfig) -> dict:
    """Simulate ``cfg`` and its synchronous baseline; plain numbers for the page.

    Returns ``outputs`` and ``sync`` (``summary`` dicts, the first with ``speedup/vs_sync``),
    ``sample_pmf`` / ``token_pmf`` (lists, P(age = a versions)), ``updates_per_step``,
    ``closed_form`` (``mean_staleness_estimate``) and ``study_ages`` (the weights a
    variable-age study of 4 updates per step would train on, ``m2po_lab.systems.coupling``).
    """
    from ..systems import age_pmf, compare_with_baseline, token_age_pmf
    from ..systems.coupling import study_ages

    out, base, res = compare_with_baseline(cfg)
    return {"outputs": out, "sync": base, "sample_pmf": age_pmf(res).tolist(), "token_pmf": token_age_pmf(res).tolist(),
            "updates_per_step": cfg.updates_per_step, "closed_form": mean_staleness_estimate(cfg),
            "study_ages": study_ages(res, 4)}


def pool_text(cfg: SystemConfig) -> str:
    """One line describing the pools and the staleness rule."""
    bound = "no bound" if cfg.max_staleness is None else f"bound {cfg.max_staleness} versions"
    return (f"{cfg.rollout_workers} x {cfg.gpus_per_worker} rollout GPUs + {cfg.trainer_gpus} trainer GPUs; "
            f"{cfg.batch_prompts} x {cfg.group_size} responses per step; mode {cfg.mode}, {bound}, partial rollouts "
            f"{'on' if cfg.partial_rollout else 'off'}")
