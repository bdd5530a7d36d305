"""The usability window: the largest staleness at which a method's final reward stays near on-policy.

The paper (arXiv 2510.01161) calls the range of staleness over which stale data still
trains as well as fresh data a finite usability window. ``find_windows`` measures it on
the toy study, per method: the largest stale-k, k a multiple of ``updates_per_step`` up to
``max_staleness``, whose mean final reward over the seeds is at least ``1 - tolerance``
times the same method's at k = 0 (``final_reward`` as summary.json defines it: the mean
eval reward over the last 10% of updates).

Search: a multi-section bisection on the grid of rollout steps. Round 1 trains k = 0 and
``points_per_round`` values spread up to ``max_staleness``; each later round trains that
many values inside the bracket (largest passing k, smallest failing k above it), so the
bracket shrinks (points_per_round + 1)-fold per round. Every round is one batched study
(``BatchedStudy`` with the round's (method, k, seed) runs, all methods together), so a
search of a 64-step grid with 4 points per round takes 3 rounds: 5 + 4 + 4 values per
method at most, times the seeds. It assumes a single pass/fail boundary; every tested
point is returned, so a non-monotone curve shows.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, replace

import torch

from .._checks import check_choice, check_nonnegative_int, check_positive
from ..losses import LOSSES
from ..rundir import FINAL_TAIL
from .config import PRESETS, get_preset
from .runner import BatchedStudy, RunSpec


@dataclass(frozen=True)
class WindowConfig:
    """A usability-window search: methods, the study that trains them, the tolerance and the grid."""

    methods: tuple[str, ...] = ("m2po",)
    """Registered losses to measure (one window each)."""
    preset: str = "default"
    """Study preset (m2po_lab.study.PRESETS) that sets the task, the model and the training."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of every tested (method, staleness); finals are averaged over them."""
    updates: int | None = None
    """Optimizer updates per run; None: the preset's."""
    lr: float | None = None
    """Adam learning rate; None: the preset's."""
    max_staleness: int = 256
    """Largest staleness tested, updates (a multiple of the preset's updates_per_step)."""
    tolerance: float = 0.05
    """A staleness passes while its mean final reward >= (1 - tolerance) x the method's at staleness 0."""
    points_per_round: int = 4
    """Staleness values per method trained together in each round."""

    def __post_init__(self):
        if not self.methods:
            raise ValueError("methods must name at least one loss; accepted: " + ", ".join(sorted(LOSSES)))
        for m in self.methods:
            check_choice("methods", m, LOSSES)
        check_choice("preset", self.preset, PRESETS)
        check_positive("max_staleness", self.max_staleness)
        check_nonnegative_int("max_staleness", self.max_staleness)
        check_positive("points_per_round", self.points_per_round)
        check_nonnegative_int("points_per_round", self.points_per_round)
        if not (isinstance(self.tolerance, (int, float)) and 0 <= self.tolerance < 1):
            raise ValueError(f"tolerance must be a fraction in [0, 1), got {self.tolerance!r}")
        U = self.study().updates_per_step  # validates seeds, updates and lr too
        if self.max_staleness % U:
            raise ValueError(f"max_staleness={self.max_staleness} must be a multiple of updates_per_step={U}")

    def study(self):
        """The preset with this search's seeds, updates and lr (its staleness and methods are set per round)."""
        return get_preset(self.preset, seeds=self.seeds, updates=self.updates, lr=self.lr)

    def to_dict(self) -> dict:
        return asdict(self)


def eval_updates(cfg) -> list[int]:
    """The 0-based updates whose evaluation enters ``final_reward``: the last 10%, else the last evaluation."""
    evals = [u for u in range(cfg.updates) if (u + 1) % cfg.eval_every == 0 or u == cfg.updates - 1]
    return [u for u in evals if u >= FINAL_TAIL * cfg.updates] or evals[-1:]


def train_finals(cfg, specs: list[RunSpec], progress: bool = False) -> dict[RunSpec, float]:
    """Final reward of each run in ``specs`` (runs of ``cfg``), all trained as one batched study.

    Evaluates only at the updates ``final_reward`` reads (the same policies, the same
    common random numbers, so the same numbers as ``run_study``'s summary).
    """
    study = BatchedStudy(cfg, specs=specs)
    tail, rewards = set(eval_updates(cfg)), []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.updates, desc=f"window round ({len(specs)} runs)", unit="upd")
    for _ in study.steps():
        if study.update - 1 in tail:
            rewards.append(study.evaluate())  # (R,)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    finals = torch.stack(rewards).mean(0).tolist()  # mean over the tail evaluations, as summarize_run
    return dict(zip(study.specs, finals))


def _spread(lo: int, hi: int, n: int, include_hi: bool) -> list[int]:
    """Up to ``n`` grid points in (lo, hi) (or (lo, hi] with ``include_hi``), evenly spaced."""
    if include_hi:
        pts = {lo + round((hi - lo) * j / n) for j in range(1, n + 1)}
    else:
        pts = {lo + round((hi - lo) * j / (n + 1)) for j in range(1, n + 1)}
    return sorted(p for p in pts if lo < p < hi or (include_hi and p == hi))


def _bracket(passed: dict[int, bool]) -> tuple[int, int | None]:
    """(largest k passing with every tested k below it, smallest tested k above it, or None)."""
    ks = sorted(passed)
    lo = 0
    for k in ks:
        if not passed[k]:
            return lo, k
        lo = k
    return lo, None


def _mean_by(finals: dict[RunSpec, float], method: str, k: int) -> float:
    return statistics.fmean(v for s, v in finals.items() if s.method == method and s.staleness == k)


def find_windows(cfg: WindowConfig, progress: bool = False) -> dict:
    """Run the search (module docstring). Returns per method its window, bracket and every tested point."""
    base = cfg.study()
    U, top = base.updates_per_step, cfg.max_staleness // base.updates_per_step  # the grid in rollout steps
    finals: dict[RunSpec, float] = {}
    passed = {m: {} for m in cfg.methods}  # method -> {steps: passes}
    rounds, runs = 0, 0
    while True:
        todo = {}
        for m in cfg.methods:
            lo, hi = _bracket(passed[m])
            if rounds == 0:
                todo[m] = [0, *_spread(0, top, cfg.points_per_round, include_hi=True)]
            elif hi is not None and hi - lo > 1:
                todo[m] = _spread(lo, hi, cfg.points_per_round, include_hi=False)
        if not any(todo.values()):
            break
        specs = [RunSpec(m, k * U, sd) for m, ks in todo.items() for k in ks for sd in cfg.seeds]
        round_cfg = replace(base, methods=tuple(todo), staleness=tuple(sorted({s.staleness for s in specs})))
        finals.update(train_finals(round_cfg, specs, progress))
        rounds, runs = rounds + 1, runs + len(specs)
        for m, ks in todo.items():
            ref = _mean_by(finals, m, 0)
            for k in ks:
                passed[m][k] = k == 0 or _mean_by(finals, m, k * U) >= (1 - cfg.tolerance) * ref
    return {"config": cfg.to_dict(), "rounds": rounds, "runs": runs, "methods": {
        m: _method_result(m, passed[m], finals, U, top, cfg.seeds) for m in cfg.methods}}


def _method_result(m: str, passed: dict[int, bool], finals, U: int, top: int, seeds) -> dict:
    lo, hi = _bracket(passed)

    def per_seed(k: int) -> list[float]:
        return [finals[RunSpec(m, k * U, sd)] for sd in seeds]

    points = [{"staleness": k * U, "final_mean": statistics.fmean(per_seed(k)),
               "final_sd": statistics.stdev(per_seed(k)) if len(seeds) > 1 else 0.0, "passes": passed[k]}
              for k in sorted(passed)]
    return {"window": lo * U, "first_failing": None if hi is None else hi * U, "at_max": lo == top,
            "on_policy": points[0]["final_mean"], "points": points}


def format_table(result: dict) -> str:
    """The windows as a text table, then every tested point (mean ± std final reward over seeds)."""
    cfg = result["config"]
    head = (f"{'method':10s} {'on-policy final':>16s} {'window (updates)':>17s} {'first failing':>14s} "
            f"{'final at window':>16s}")
    lines = [f"usability window: largest staleness with mean final reward >= {1 - cfg['tolerance']:.2f} x the "
             f"method's at staleness 0; seeds {cfg['seeds']}, preset {cfg['preset']}", head, "-" * len(head)]
    for m, r in result["methods"].items():
        at = next(p for p in r["points"] if p["staleness"] == r["window"])
        window = f">= {r['window']}" if r["at_max"] else str(r["window"])
        fail = "-" if r["first_failing"] is None else str(r["first_failing"])
        lines.append(f"{m:10s} {r['on_policy']:>16.3f} {window:>17s} {fail:>14s} "
                     f"{at['final_mean']:>9.3f} ± {at['final_sd']:.3f}")
    lines.append(f"{result['runs']} study runs in {result['rounds']} rounds; tested points:")
    for m, r in result["methods"].items():
        pts = "  ".join(f"{p['staleness']}:{p['final_mean']:.3f}{'' if p['passes'] else '(x)'}" for p in r["points"])
        lines.append(f"  {m}: {pts}")
    return "\n".join(lines)


PROG = "m2po-lab window"


def _cmd_window(args) -> int:
    import sys

    from ..cliutil import dataclass_overrides, show_progress

    try:
        cfg = WindowConfig(**dataclass_overrides(args, WindowConfig))
    except ValueError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    print(format_table(find_windows(cfg, progress=show_progress(args))))
    return 0


def add_window_parser(sub) -> None:
    """Register ``m2po-lab window`` (``--method`` may repeat: ``--method m2po --method grpo``)."""
    import sys

    from ..cliutil import add_dataclass_options

    p = sub.add_parser("window", help="find each method's usability window: the largest staleness whose final "
                       "reward stays within a tolerance of on-policy (batched bisection)",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))

    def error(message: str):
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)

    p.error = error
    p.add_argument("--method", dest="methods", action="append", default=None,
                   help="a registered loss; repeat for more (default: m2po)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for tiny tensors)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (there are none off a terminal either)")
    add_dataclass_options(p, WindowConfig, skip=("methods",))
    p.set_defaults(func=_cmd_window)
