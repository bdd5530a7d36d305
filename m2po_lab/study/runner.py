"""The toy staleness study: every (method, staleness, seed) run trained at once.

All runs share one stacked policy (a leading run dimension R, ``toy_envs.policies``);
each run has its own loss (from the registry), its own staleness and its own random
stream. Per rollout step: sample a batch with the current policy for every run, pick
for each group slot of each run the batch generated ``depth`` rollout steps ago (stale-k:
depth k / updates_per_step for every slot; variable ages: a depth drawn per group,
``m2po_lab.study.ages``), base-policy groups where a run has no such history yet (as in
the paper), then ``updates_per_step`` mini-batch updates. Runs stay independent: the total
loss is a sum of per-run losses and Adam acts per element; gradient clipping is per run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import vmap

from toy_envs import ForkingTextTask
from toy_envs import policies as pol

from ..advantages import group_advantages
from ..aggregation import aggregate
from ..losses import get_loss
from .ages import AgeSampler
from .config import StudyConfig

AGE_MEAN, AGE_MAX = "data/age_mean", "data/age_max"
"""Per-update keys: mean and largest age (updates) of the trained mini-batch's samples."""

EVAL_SEED = 12345
"""Seed of the evaluation's sampling, the same for every run (common random numbers)."""


@dataclass(frozen=True)
class RunSpec:
    """One run of a study."""

    method: str
    staleness: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}_s{self.staleness}_seed{self.seed}"


def token_dtype(vocab_size: int) -> torch.dtype:
    """The narrowest integer dtype that holds token ids 0 .. vocab_size - 1 (the stale queue stores them)."""
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if vocab_size - 1 <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


def run_specs(cfg: StudyConfig) -> list[RunSpec]:
    return [RunSpec(m, s, sd) for m in cfg.methods for s in cfg.staleness for sd in cfg.seeds]


def make_task(cfg: StudyConfig) -> ForkingTextTask:
    return ForkingTextTask(cfg.task_config())


class BatchedStudy:
    """State of all runs of a study: parameters, optimizer, stale rollouts, RNG streams."""

    def __init__(self, cfg: StudyConfig, warm_start: bool = True, specs: list[RunSpec] | None = None):
        """``warm_start=False`` skips the supervised warm start (a resume overwrites the parameters anyway);
        ``specs``: train only these runs of ``cfg`` (any subset of ``run_specs(cfg)``, in any order)."""
        self.cfg = cfg
        self.specs = run_specs(cfg) if specs is None else list(specs)
        known = set(run_specs(cfg))
        unknown = [s.name for s in self.specs if s not in known]
        if unknown or not self.specs or len(set(self.specs)) != len(self.specs):
            raise ValueError(f"specs must be distinct runs of the study's config, got {unknown or len(self.specs)}")
        self.task = make_task(cfg)
        R = len(self.specs)
        # Runs that share a seed share their initial policy: initialise and warm-start each
        # seed once, then copy it (and its generator state) to every run of that seed.
        seeds = sorted({s.seed for s in self.specs})
        seed_gens = pol.run_generators(seeds)
        pcfg = pol.PolicyConfig.for_task(self.task, hidden=cfg.hidden)
        init = pol.init_params(len(seeds), pcfg, seed_gens)
        if cfg.warm_start_steps and warm_start:
            pol.supervised_warm_start(
                init, self.task, cfg.warm_start_steps, cfg.warm_start_lr, seed_gens, fork_prior=cfg.fork_prior
            )
        which = torch.tensor([seeds.index(s.seed) for s in self.specs])  # (R,) seed of each run
        self.params = {k: v.detach()[which].clone().requires_grad_(True) for k, v in init.items()}
        self.gens = [torch.Generator() for _ in range(R)]
        for g, i in zip(self.gens, which.tolist()):
            g.set_state(seed_gens[i].get_state())
        self.base = {k: v.detach().clone() for k, v in self.params.items()}  # the base policy
        self.opt = torch.optim.Adam(self.params.values(), lr=cfg.lr)
        self.ages = AgeSampler(cfg.ages, cfg.updates_per_step, self.specs)
        self.rollouts: dict[int, dict[str, torch.Tensor]] = {}  # step -> batch of every run
        self.batch: dict[str, torch.Tensor] | None = None  # the current rollout step's stale batch of every run
        self.token_dtype = token_dtype(cfg.vocab_size)
        self.update = 0
        self.loss_cfg = cfg.loss
        self.groups: dict[str, list[int]] = {}
        for r, s in enumerate(self.specs):
            self.groups.setdefault(s.method, []).append(r)

    # ------------------------------------------------------------ rollouts
    @torch.no_grad()
    def _generate(self, params, runs: list[int], version: int) -> dict[str, torch.Tensor]:
        cfg, G = self.cfg, self.cfg.group_size
        gens = [self.gens[r] for r in runs]  # each run draws from its own stream
        sub = {k: v[runs] for k, v in params.items()}
        prompts = torch.stack([self.task.sample_prompts(cfg.prompts_per_step, g) for g in gens])  # (R', P)
        prompts = prompts.repeat_interleave(G, dim=1)  # (R', N) groups contiguous
        responses, logp = pol.sample(sub, prompts, gens)  # (R', N, L), (R', N, L)
        rewards = self.task.score(prompts.reshape(-1), responses.reshape(-1, responses.shape[-1]))
        rewards = rewards.view(len(runs), -1)  # (R', N)
        adv = group_advantages(rewards.reshape(-1), G).view_as(rewards)  # (R', N)
        version_t = torch.full(rewards.shape, version)  # (R', N) the update each sample was generated at
        return dict(prompts=prompts, responses=responses.to(self.token_dtype), old_logp=logp, rewards=rewards,
                    adv=adv, version=version_t)  # the narrowest token dtype that holds V: the queue is the memory

    def _stale_batch(self, step: int) -> dict[str, torch.Tensor]:
        """For every run, each group slot from the rollout step ``depth`` steps before ``step``.

        Stale-k runs take one whole batch (depth k / U for every slot); variable-age runs
        gather slot by slot. Memory: the batches of the last ``max_depth`` steps.
        """
        R, P, G = len(self.specs), self.cfg.prompts_per_step, self.cfg.group_size
        self.rollouts[step] = self._generate(self.params, list(range(R)), version=self.update)
        source = (step - self.ages.depths(P)).clamp(min=-1)  # (R, P) step each slot trains from; -1: base policy
        need_base = [r for r in range(R) if bool((source[r] < 0).any())]
        base = self._generate(self.base, need_base, version=0) if need_base else None

        def batch_of(r: int, s: int) -> dict[str, torch.Tensor]:
            return {k: v[need_base.index(r)] for k, v in base.items()} if s < 0 else \
                {k: v[r] for k, v in self.rollouts[s].items()}

        parts = []
        for r in range(R):
            steps = source[r].unique().tolist()
            if len(steps) == 1:  # one whole batch (always, for stale-k runs)
                parts.append(batch_of(r, steps[0]))
                continue
            rows = source[r].repeat_interleave(G)  # (N,) source step of every sample; groups contiguous
            part = {k: torch.empty_like(v) for k, v in batch_of(r, steps[0]).items()}
            for s in steps:
                pick, src = rows == s, batch_of(r, s)
                for k in part:
                    part[k][pick] = src[k][pick]
            parts.append(part)
        oldest = step - self.ages.max_depth
        for s in [s for s in self.rollouts if s <= oldest]:
            del self.rollouts[s]
        return {k: torch.stack([p[k] for p in parts]) for k in parts[0]}

    # ------------------------------------------------------------ one update
    def _update(self, mb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimizer update of every run on its mini-batch. Returns (R,)-tensors of metrics."""
        cfg = self.cfg
        responses = mb["responses"].long()  # (R, n, L)
        logp, ent = pol.token_logp_and_entropy(self.params, mb["prompts"], responses)  # (R, n, L)
        mask = torch.ones(logp.shape[1:], dtype=torch.bool)  # (n, L) fixed-length responses
        log_ratio = logp - mb["old_logp"]  # (R, n, L), carries the gradient
        adv = mb["adv"][..., None].expand_as(log_ratio)  # (R, n, L)
        total = logp.new_zeros(())
        per_run: list[dict[str, torch.Tensor]] = [None] * len(self.specs)
        for method, runs in self.groups.items():
            # the registered loss's pure core, vmapped over this method's runs: each run
            # keeps its own batch statistics (M2PO's mask) and its own metrics
            compute = get_loss(method).compute
            idx = torch.tensor(runs)

            def run_loss(lr, a):
                per_token, metrics = compute(lr, a, mask, self.loss_cfg)
                return aggregate(per_token, mask, cfg.agg_mode), metrics

            loss, metrics = vmap(run_loss)(log_ratio[idx], adv[idx])  # (R_m,), {key: (R_m,)}
            total = total + loss.sum()
            for i, r in enumerate(runs):
                per_run[r] = {k: v[i].detach() for k, v in metrics.items()}
                per_run[r]["loss"] = loss[i].detach()
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        grads = [p.grad for p in self.params.values()]
        grad_norm = torch.stack([g.flatten(1).square().sum(1) for g in grads]).sum(0).sqrt()  # (R,)
        if cfg.max_grad_norm > 0:
            scale = (cfg.max_grad_norm / (grad_norm + 1e-6)).clamp(max=1.0)  # (R,)
            for g in grads:
                g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
        self.opt.step()
        self.update += 1
        log_ratio = log_ratio.detach()
        ages = (self.update - 1) - mb["version"]  # (R, n) updates since each sample was generated
        out = {
            "reward": mb["rewards"].mean(1),
            # what the (stale) batch shows of the fixed positions, against eval/fixed_ok (the policy now)
            "data/fixed_ok": self.task.fixed_ok(mb["prompts"], responses).float().mean(1),
            "entropy": ent.detach().mean((1, 2)),
            "grad_norm": grad_norm,
            "staleness": ages.double().mean(1),  # an integer for stale-k batches (the driver writes it as one)
            AGE_MEAN: ages.double().mean(1),
            AGE_MAX: ages.max(1).values,
            "_log_ratio": log_ratio,  # (R, n, L) for histograms
            "_adv": mb["adv"],  # (R, n)
            "_entropy": ent.detach(),
        }
        return out, per_run

    @torch.no_grad()
    def evaluate(self) -> torch.Tensor:
        """Mean sampled reward on every prompt, ``eval_samples`` each. (R,)

        Common random numbers: every run, at every evaluation, samples with the same
        uniforms (``EVAL_SEED``), so a run's evaluation does not depend on the other runs
        of the study, and differences between runs are differences between policies.
        """
        return self.evaluate_detail()["reward"]

    @torch.no_grad()
    def evaluate_detail(self) -> dict[str, torch.Tensor]:
        """The evaluation of ``evaluate``, split by position kind. Each value (R,):

        ``reward``; ``fixed_ok``: fraction of responses with every fixed position right
        (the competence the reward is gated on); ``fork_acc``: fraction of fork tokens
        right (against ``task.fork_target`` of the response itself); ``entropy_fixed`` /
        ``entropy_fork``: mean entropy of the policy's distribution at fixed / fork
        positions along the sampled responses.
        """
        cfg, R, task = self.cfg, len(self.specs), self.task
        prompts = torch.arange(cfg.n_prompts).repeat(cfg.eval_samples).expand(R, -1)  # (R, P*k)
        # one generator per run, all seeded alike: every run draws the same numbers, at every
        # evaluation and whichever other runs share the study
        gens = pol.run_generators([EVAL_SEED] * R)
        responses, _, ent = pol.sample(self.params, prompts, gens, with_entropy=True)  # (R, N, L) x2
        flat_p, flat_r = prompts.reshape(-1), responses.reshape(-1, responses.shape[-1])
        rewards = task.score(flat_p, flat_r).view(R, -1)  # (R, N)
        fixed_ok = task.fixed_ok(flat_p, flat_r).view(R, -1)  # (R, N)
        fork_ok = flat_r[:, task.fork_positions] == task.fork_target(flat_p, flat_r)  # (R*N, F)
        fixed = ~task.is_fork  # (L,)
        return {
            "reward": rewards.mean(1),
            "fixed_ok": fixed_ok.float().mean(1),
            "fork_acc": fork_ok.view(R, -1).float().mean(1),
            "entropy_fixed": ent[..., fixed].mean((1, 2)) if bool(fixed.any()) else torch.zeros(R),
            "entropy_fork": ent[..., task.is_fork].mean((1, 2)),
        }

    def steps(self):
        """Yield ``(update_metrics, per_run_loss_metrics)`` after every optimizer update.

        A rollout step generates one batch and trains ``updates_per_step`` mini-batches of it;
        ``self.batch`` holds that batch, so a checkpoint taken mid-step resumes at the next
        mini-batch of the same batch (exactly as the uninterrupted run).
        """
        cfg = self.cfg
        n_mb = cfg.prompts_per_step * cfg.group_size // cfg.updates_per_step
        while self.update < cfg.updates:
            step, first = divmod(self.update, cfg.updates_per_step)
            if first == 0:
                self.batch = self._stale_batch(step)
            elif self.batch is None:
                raise ValueError(f"update {self.update} is inside a rollout step but no step batch is loaded")
            for m in range(first, cfg.updates_per_step):
                rows = slice(m * n_mb, (m + 1) * n_mb)
                yield self._update({k: (v[:, rows] if v.dim() > 1 else v) for k, v in self.batch.items()})
                if self.update >= cfg.updates:
                    return

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "update": self.update,
            "params": {k: v.detach() for k, v in self.params.items()},
            "base": self.base,
            "opt": self.opt.state_dict(),
            "gens": [g.get_state() for g in self.gens],
            "rollouts": {str(k): v for k, v in self.rollouts.items()},
            "age_gens": self.ages.state_dict(),
            "batch": self.batch if self.update % self.cfg.updates_per_step else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.update = int(state["update"])
        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(v)
        self.base = state["base"]
        self.opt.load_state_dict(state["opt"])
        for g, s in zip(self.gens, state["gens"]):
            g.set_state(s)
        self.rollouts = {int(k): v for k, v in state["rollouts"].items()}
        self.batch = state["batch"]
        self.ages.load_state_dict(state.get("age_gens", {}))  # absent: a stale-k checkpoint from before variable ages
        for batch in [*self.rollouts.values(), *([self.batch] if self.batch else [])]:
            if batch["version"].dim() == 1:  # a checkpoint from before per-sample versions: one per run
                batch["version"] = batch["version"][:, None].expand_as(batch["rewards"]).clone()
