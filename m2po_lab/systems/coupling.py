"""What staleness buys: a simulated system's sample ages drive the toy study, read against simulated hours.

``run_wallclock`` (``m2po-lab wallclock``):

1. simulates the system asynchronously and synchronously (``compare``: same GPUs, batch, lengths);
2. turns the asynchronous run's trained groups into study ages (``study_ages``): a group
   a versions old becomes an age of ``a x U`` updates (U: the study's updates per rollout
   step), so the toy's rollout step stands for one training step of the system;
3. trains the toy study (``m2po_lab.study``) at staleness (0, bound): the runs at 0 train
   on-policy, as the synchronous system does; those at the ages' bound draw every group's
   age from the system (``m2po_lab.study.ages``);
4. maps updates to simulated hours at each mode's steady-state updates per hour and reports eval
   reward against hours and the time to reach a target (``m2po_lab.systems.wallclock``).

Writes ``OUT/system.json`` (both simulations' outputs and the age pmf), ``OUT/study/``
(an ordinary study directory: resumable, browsable in the explorer), ``OUT/wallclock.json``,
``OUT/wallclock.md`` and ``OUT/reward_vs_hours.png``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .. import rundir as rd
from .._checks import check_choice, check_nonnegative_int, check_positive
from .config import SystemConfig
from .presets import PRESETS as SYSTEM_PRESETS
from .presets import get_preset as system_preset

OWNED = ("system.json", "study", "wallclock.json", "wallclock.md", "reward_vs_hours.png")
"""What ``run_wallclock`` writes in its directory (anything else there is refused)."""
STEPS_PER_HOUR, UPDATES_PER_HOUR = "throughput/steps_per_hour", "throughput/updates_per_hour"
"""The simulator's outputs that set the hours of an update."""


@dataclass(frozen=True)
class WallclockConfig:
    """A system preset, the toy study trained on its ages, and the target to reach."""

    system: str = "fully-async"
    """System preset (m2po_lab.systems.PRESETS) whose asynchronous ages and step times are used."""
    max_staleness: int | None = None
    """Override the system's bound eta (versions); None: the preset's."""
    study: str = "default"
    """Study preset (m2po_lab.study.PRESETS) that sets the task, the model and the training."""
    methods: tuple[str, ...] = ("grpo", "no_tr", "m2po")
    """Losses to train; grpo is required (its synchronous runs set the target)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of every (method, mode)."""
    updates: int | None = None
    """Optimizer updates per run; None: the study preset's."""
    eval_every: int | None = 25
    """Evaluate every this many updates (the resolution of time to target); None: the study preset's."""
    target: float = 0.95
    """Target as a fraction of synchronous GRPO's mean final reward."""
    smooth: int = 3
    """Evaluations in the trailing mean that must reach the target."""

    def __post_init__(self):
        check_choice("system", self.system, SYSTEM_PRESETS)
        if self.max_staleness is not None:
            check_nonnegative_int("max_staleness", self.max_staleness)
        if "grpo" not in self.methods:
            raise ValueError(f"methods must include grpo (its synchronous runs set the target), got {self.methods}")
        if not (isinstance(self.target, (int, float)) and 0 < self.target <= 1):
            raise ValueError(f"target must be a fraction in (0, 1], got {self.target!r}")
        check_positive("smooth", self.smooth)
        check_nonnegative_int("smooth", self.smooth)

    def to_dict(self) -> dict:
        return asdict(self)


def system_config(cfg: WallclockConfig) -> SystemConfig:
    """The system of ``cfg``: its preset with ``max_staleness`` replaced where given."""
    sys_cfg = system_preset(cfg.system)
    return sys_cfg if cfg.max_staleness is None else replace(sys_cfg, max_staleness=cfg.max_staleness)


def study_ages(res, updates_per_step: int) -> tuple[float, ...]:
    """Age weights for ``StudyConfig.ages``: trained groups per age, in optimizer updates, at whole rollout steps.

    A group a versions old is ``a x U_sys`` updates old (the system's updates per step),
    rounded up to a multiple of the study's ``updates_per_step`` (exact when U_sys is a
    multiple of it, as in every preset but areal-1.5b). Counts (integers) rather than
    probabilities, so the config stores the simulated distribution exactly; groups are
    the unit because a group's G responses share one age.
    """
    m = res.measured()
    ages = (res.group_consume[m] - res.group_version[m]) * res.cfg.updates_per_step  # (groups,) updates
    if not len(ages):
        raise ValueError("no group was trained inside the simulation's statistics window: raise its steps")
    steps = -(-ages // updates_per_step)  # ceil: whole rollout steps of the study
    weights = np.zeros(int(steps.max()) * updates_per_step + 1)
    weights[::updates_per_step] = np.bincount(steps)
    return tuple(float(w) for w in weights)


def study_config(cfg: WallclockConfig, ages: tuple[float, ...]):
    """The study of ``cfg`` on ``ages``: staleness (0, bound), or (0,) when every sample is fresh."""
    from ..study import get_preset

    bound = len(ages) - 1
    staleness = (0,) if bound == 0 else (0, bound)
    return get_preset(cfg.study, methods=cfg.methods, seeds=cfg.seeds, updates=cfg.updates,
                      eval_every=cfg.eval_every, staleness=staleness, ages=ages)


def simulate_pair(sys_cfg: SystemConfig) -> dict:
    """Both modes' outputs and the asynchronous run's result: ``{"async", "sync", "result"}``."""
    from .run import compare_with_baseline

    out, base, res = compare_with_baseline(sys_cfg)
    return {"async": out, "sync": base, "result": res}


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise rd.RunDirError(f"out={str(out)!r} is a file, not a directory; choose a new directory")
    others = sorted(p.name for p in out.iterdir() if p.name not in OWNED) if out.exists() else []
    if others:
        raise rd.RunDirError(f"out={str(out)!r} holds {others[:3]}, not only a wallclock study's files; "
                             "choose an empty or new directory")


def run_wallclock(cfg: WallclockConfig, out_dir, progress: bool = True, threads: int = 1, force: bool = False,
                  system: SystemConfig | None = None) -> dict:
    """Simulate, train, analyse (module docstring). ``system`` replaces ``cfg.system`` (the Python API's any system).

    Returns the wallclock.json content. Nothing is written before the configs and the
    directory are judged usable; an interrupted study resumes exactly (``run_study``).
    """
    from ..study import run_study
    from ..study.driver import inspect_out_dir
    from .results import age_pmf

    sys_cfg = system or system_config(cfg)
    sim = simulate_pair(sys_cfg)
    s_cfg = study_config(cfg, study_ages(sim["result"], _study_updates_per_step(cfg)))
    out = Path(out_dir)
    _check_out(out)
    if not force:
        inspect_out_dir(s_cfg, out / "study")  # a different study there: refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    rd.write_json(out / "system.json", {"system": sys_cfg.to_dict(), "async": sim["async"], "sync": sim["sync"],
                                        "age_pmf_versions": age_pmf(sim["result"]).tolist()})
    summary = run_study(s_cfg, out / "study", progress=progress, threads=threads, force=force)
    return analyse(cfg, out, sim, s_cfg, summary)


def _study_updates_per_step(cfg: WallclockConfig) -> int:
    from ..study import get_preset

    return get_preset(cfg.study).updates_per_step


def hours_per_update(sim: dict) -> dict[str, float]:
    """Simulated hours of one optimizer update in each mode: 1 / steady-state updates per hour."""
    return {mode: 1.0 / sim[mode][UPDATES_PER_HOUR] for mode in ("sync", "async")}


def analyse(cfg: WallclockConfig, out: Path, sim: dict, s_cfg, summary: dict) -> dict:
    """Time to target, the table, the headline and the figure of a finished coupled study; writes them to ``out``."""
    from .wallclock import headline, reward_vs_hours, speedups, table_lines, time_to_target

    study = rd.load_study(out / "study")
    hpu = hours_per_update(sim)
    bound = s_cfg.age_bound() or 0
    ttt = time_to_target(study, summary, hpu, bound, cfg.target, cfg.smooth)
    fig = reward_vs_hours(study, hpu, bound, ttt["target"])
    fig.savefig(out / "reward_vs_hours.png", dpi=110, bbox_inches="tight")
    a, s = sim["async"], sim["sync"]
    result = {"config": cfg.to_dict(), "hours_per_update": hpu, "bound_updates": bound,
              "speedup_throughput": a[STEPS_PER_HOUR] / s[STEPS_PER_HOUR], "time_to_target": ttt,
              "speedups": speedups(ttt), "headline": headline(ttt), "study_wall_s": summary["wall_s"]}
    lines = [f"# Reward against simulated hours: system {cfg.system}", "",
             f"Asynchronous: {a[STEPS_PER_HOUR]:.1f} steps per simulated hour, sample age mean "
             f"{a['staleness/sample_mean']:.2f} / p99 {a['staleness/sample_p99']} / max "
             f"{a['staleness/sample_max']} versions (x {sim['result'].cfg.updates_per_step} = updates); "
             "synchronous: "
             f"{s[STEPS_PER_HOUR]:.1f} steps per hour; throughput speed-up {result['speedup_throughput']:.2f}x.",
             "", f"Target: {cfg.target:.0%} of synchronous GRPO's final reward {ttt['reference']:.3f} = "
             f"{ttt['target']:.3f} (trailing mean of {cfg.smooth} evaluations). Mean ± std over "
             f"{len(s_cfg.seeds)} seed(s).", "", *table_lines(ttt), "", *[f"- {h}" for h in result["headline"]],
             "", "![reward vs hours](reward_vs_hours.png)"]
    rd.atomic_write_text(out / "wallclock.md", "\n".join(lines) + "\n")
    result = _json_ready(result)
    rd.write_json(out / "wallclock.json", result)
    return result


def _json_ready(obj):
    """``obj`` with numpy numbers as Python ones, tuples as lists, NaN / inf as None (JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return rd.json_number(float(obj))
    return int(obj) if isinstance(obj, np.integer) else obj
