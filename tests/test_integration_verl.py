"""m2po / m2po_released as verl policy losses (m2po_lab.integrations.verl), called through verl itself.

With verl installed (extra ``m2po-lab[verl]``, no GPU extras; CI runs this file in a second
venv, see .ci/run) every test runs on CPU. Without verl only the ImportError test runs.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from m2po_lab.aggregation import aggregate
from m2po_lab.losses import LossConfig, get_loss

HAS_VERL = importlib.util.find_spec("verl") is not None


@pytest.mark.skipif(HAS_VERL, reason="verl is installed")
def test_import_without_verl_names_the_extra():
    with pytest.raises(ImportError, match=r"m2po-lab\[verl\]"):
        import m2po_lab.integrations.verl  # noqa: F401


needs_verl = pytest.mark.skipif(not HAS_VERL, reason="needs the [verl] extra: pip install 'm2po-lab[verl]'")


def _batch(seed=0, bs=6, T=9, stale=0.3):
    g = torch.Generator().manual_seed(seed)
    old_log_prob = -torch.rand(bs, T, generator=g, dtype=torch.float64) * 3  # (bs, T)
    log_prob = (old_log_prob + stale * torch.randn(bs, T, generator=g, dtype=torch.float64)).requires_grad_()
    advantages = torch.randn(bs, 1, generator=g, dtype=torch.float64).expand(bs, T).contiguous()  # (bs, T)
    lengths = torch.randint(2, T + 1, (bs,), generator=g)
    response_mask = (torch.arange(T)[None] < lengths[:, None]).to(torch.int64)  # (bs, T) right padding
    return old_log_prob, log_prob, advantages, response_mask


def _actor_config(policy_loss, **global_batch_info):
    from verl.workers.config import ActorConfig

    return ActorConfig(
        strategy="fsdp",
        rollout_n=8,
        ppo_micro_batch_size_per_gpu=2,
        policy_loss=policy_loss,
        global_batch_info=dict(global_batch_info),
    )


def _ours(name, old_log_prob, log_prob, advantages, response_mask, cfg, mode, weights=None, **counts):
    per_token_loss, metrics = get_loss(name)(log_prob, old_log_prob, advantages, response_mask, cfg=cfg)
    if weights is not None:
        per_token_loss = per_token_loss * weights
    return aggregate(per_token_loss, response_mask, mode, **counts), metrics


@needs_verl
@pytest.mark.parametrize("name", ["m2po", "m2po_released"])
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_registered_loss_through_verl_equals_core(name, mode):
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    from m2po_lab.integrations.verl import M2POPolicyLossConfig

    old_log_prob, log_prob, advantages, response_mask = _batch()
    dp_size, batch_num_tokens, global_batch_size = 2, 3 * int(response_mask.sum()), 15  # a larger global batch
    config = _actor_config(
        M2POPolicyLossConfig(loss_mode=name, tau=0.02),
        dp_size=dp_size,
        batch_num_tokens=batch_num_tokens,
        global_batch_size=global_batch_size,
    )
    loss, metrics = get_policy_loss_fn(name)(
        old_log_prob, log_prob, advantages, response_mask, loss_agg_mode=mode, config=config
    )
    (grad,) = torch.autograd.grad(loss, log_prob)

    expected, ours = _ours(
        name, old_log_prob, log_prob, advantages, response_mask, LossConfig(tau=0.02), mode,
        num_tokens=batch_num_tokens / dp_size, num_seqs=global_batch_size / dp_size,
    )
    (expected_grad,) = torch.autograd.grad(expected, log_prob)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-9)  # verl adds 1e-8 to sequence lengths
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-9)
    assert metrics["actor/clip/frac"] == pytest.approx(float(ours["clip/frac"]))
    assert metrics["actor/clip/frac"] > 0  # the batch is stale enough for the mask to act
    assert all(isinstance(v, float) for v in metrics.values())


@needs_verl
def test_rollout_is_weights_multiply_the_per_token_loss():
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    from m2po_lab.integrations.verl import M2POPolicyLossConfig

    old_log_prob, log_prob, advantages, response_mask = _batch(seed=1)
    weights = torch.rand(old_log_prob.shape, dtype=torch.float64) * 2 * response_mask  # (bs, T)
    config = _actor_config(M2POPolicyLossConfig(loss_mode="m2po"))
    loss, _ = get_policy_loss_fn("m2po")(
        old_log_prob, log_prob, advantages, response_mask, config=config, rollout_is_weights=weights
    )
    expected, _ = _ours("m2po", old_log_prob, log_prob, advantages, response_mask, LossConfig(), "token-mean", weights)
    torch.testing.assert_close(loss, expected)


@needs_verl
def test_behaviour_rollout_rebuilds_behaviour_log_probs_from_token_weights():
    """Decoupled mode, token IS weights never truncated: M2PO sees log pi_theta - log pi_rollout."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_weights

    from m2po_lab.integrations.verl import M2POPolicyLossConfig

    rollout_log_prob, log_prob, advantages, response_mask = _batch(seed=2, stale=0.5)
    old_log_prob = rollout_log_prob + 0.2 * torch.randn(rollout_log_prob.shape, dtype=torch.float64)  # recomputed
    weights, _ = compute_rollout_correction_weights(
        log_ratio=old_log_prob - rollout_log_prob,
        response_mask=response_mask,
        rollout_is="token",
        rollout_is_threshold=1e9,
    )
    from verl.trainer.config import RolloutCorrectionConfig

    mirrored = RolloutCorrectionConfig(rollout_is="token", rollout_is_threshold=1e9)
    config = _actor_config(M2POPolicyLossConfig(loss_mode="m2po", behaviour="rollout", rollout_correction=mirrored))
    loss, _ = get_policy_loss_fn("m2po")(
        old_log_prob, log_prob, advantages, response_mask, config=config, rollout_is_weights=weights
    )
    (grad,) = torch.autograd.grad(loss, log_prob)
    expected, _ = _ours("m2po", rollout_log_prob, log_prob, advantages, response_mask, LossConfig(), "token-mean")
    (expected_grad,) = torch.autograd.grad(expected, log_prob)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)

    with pytest.raises(ValueError, match="rollout_is=token"):
        get_policy_loss_fn("m2po")(old_log_prob, log_prob, advantages, response_mask, config=config)


@needs_verl
def test_documented_overrides_instantiate_our_config():
    """The override lines of docs/engines.md, composed from verl's own ppo_trainer.yaml."""
    import verl
    from hydra import compose, initialize_config_dir
    from verl.utils.config import omega_conf_to_dataclass

    from m2po_lab.integrations.verl import MIRROR, M2POPolicyLossConfig

    overrides = [
        "actor_rollout_ref.actor.policy_loss._target_=m2po_lab.integrations.verl.M2POPolicyLossConfig",
        "actor_rollout_ref.actor.policy_loss.loss_mode=m2po",
        "+actor_rollout_ref.actor.policy_loss.tau=0.04",
        "+actor_rollout_ref.actor.policy_loss.region=harmful",
        "+actor_rollout_ref.actor.policy_loss.behaviour=rollout",
        "algorithm.rollout_correction.rollout_is=token",
        "algorithm.rollout_correction.rollout_is_threshold=1e9",
        "+" + MIRROR,
        "+actor_rollout_ref.actor.policy_loss.mask_scope=dp_group",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.n=8",
    ]
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, M2POPolicyLossConfig)
    assert (actor.policy_loss.tau, actor.policy_loss.region, actor.policy_loss.behaviour) == (0.04, "harmful", "rollout")

    assert actor.policy_loss.mask_scope == "dp_group"
    mirrored = actor.policy_loss.rollout_correction  # a plain dict: verl converts only what has a _target_
    assert mirrored["rollout_is"] == "token" and mirrored["rollout_is_threshold"] == 1e9
    with pytest.raises(ValueError, match="behaviour"):
        M2POPolicyLossConfig(behaviour="stale")


@needs_verl
@pytest.mark.parametrize("settings, needle", [
    ({}, "must see algorithm.rollout_correction"),
    ({"rollout_is": "token", "rollout_is_threshold": 1e9, "rollout_is_batch_normalize": True}, "batch-normalised"),
    ({"rollout_is": "token", "rollout_is_threshold": 2.0}, "never truncated"),
    ({"rollout_is": "sequence", "rollout_is_threshold": 1e9}, "rollout_is=token"),
    ({"rollout_is": "token", "rollout_is_threshold": 1e9, "bypass_mode": True}, "decoupled mode"),
])
def test_behaviour_rollout_refuses_settings_it_cannot_invert(settings, needle):
    from verl.trainer.config import RolloutCorrectionConfig

    from m2po_lab.integrations.verl import M2POPolicyLossConfig

    with pytest.raises(ValueError, match=needle):
        M2POPolicyLossConfig(behaviour="rollout", rollout_correction=RolloutCorrectionConfig(**settings))
    M2POPolicyLossConfig(behaviour="old_log_prob", rollout_correction=RolloutCorrectionConfig(**settings))  # unused


@needs_verl
def test_verl_plugins_entry_point_registers_on_import(tmp_path):
    """A fresh interpreter: `import verl` alone loads the entry point and registers both losses."""
    dist = tmp_path / "m2po_plugin_probe-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: m2po-plugin-probe\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[verl.plugins]\nm2po = m2po_lab.integrations.verl:register\n")
    code = textwrap.dedent(
        """
        import verl
        from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
        assert {"m2po", "m2po_released"} <= set(POLICY_LOSS_REGISTRY), sorted(POLICY_LOSS_REGISTRY)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    env.pop("VERL_USE_EXTERNAL_PLUGINS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


# ---------------------------------------------------------------- mask_scope=dp_group on gloo
def _dp_worker(rank, world, init_file):
    import datetime

    import torch.distributed as dist
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    from m2po_lab.integrations.verl import M2POPolicyLossConfig

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        differs = 0.0
        for name in ("m2po", "m2po_released"):
            for seed in range(4):
                parts = [_batch(seed=10 * seed + r, bs=3 + r, T=9, stale=0.6) for r in range(world)]  # uneven shards
                total = sum(int(p[3].sum()) for p in parts)
                old_log_prob, log_prob, advantages, response_mask = parts[rank]
                config = _actor_config(M2POPolicyLossConfig(loss_mode=name, tau=0.01, mask_scope="dp_group"),
                                       dp_size=world, batch_num_tokens=total, global_batch_size=sum(len(p[0]) for p in parts))
                loss, metrics = get_policy_loss_fn(name)(old_log_prob, log_prob, advantages, response_mask,
                                                         config=config)
                (grad,) = torch.autograd.grad(loss, log_prob)
                # one process on the concatenated mini-batch (verl's dp_size=1 path)
                cat = [torch.cat([p[k].detach() for p in parts]) for k in range(4)]
                whole = cat[1].clone().requires_grad_()
                one = _actor_config(M2POPolicyLossConfig(loss_mode=name, tau=0.01), dp_size=1, batch_num_tokens=total,
                                    global_batch_size=len(whole))
                ref_loss, ref_metrics = get_policy_loss_fn(name)(cat[0], whole, cat[2], cat[3], config=one)
                (ref_grad,) = torch.autograd.grad(ref_loss, whole)
                rows = slice(sum(len(p[0]) for p in parts[:rank]), sum(len(p[0]) for p in parts[: rank + 1]))
                summed = loss.detach().clone()
                dist.all_reduce(summed)
                assert summed.item() / world == pytest.approx(ref_loss.item(), rel=1e-9), (name, seed)
                torch.testing.assert_close(grad / world, ref_grad[rows], rtol=1e-9, atol=1e-12)
                for k, v in ref_metrics.items():
                    assert metrics[k] == pytest.approx(v, rel=1e-5, abs=1e-7), (name, seed, k)
                # the same call deciding on this shard alone (the default scope)
                local = _actor_config(M2POPolicyLossConfig(loss_mode=name, tau=0.01), dp_size=world,
                                      batch_num_tokens=total, global_batch_size=len(whole))
                alone, _ = get_policy_loss_fn(name)(old_log_prob, log_prob, advantages, response_mask, config=local)
                differs += float(alone.item() != loss.item())
        flags = torch.tensor([differs])
        dist.all_reduce(flags)
        assert flags.item() > 0  # some shard alone decided otherwise: the test can tell the scopes apart
        # two micro-batches per rank: the tokens do not add up to the mini-batch, every rank refuses
        old_log_prob, log_prob, advantages, response_mask = _batch(seed=99 + rank)
        total = 2 * world * int(response_mask.sum())  # pretend the mini-batch is twice what this call holds
        config = _actor_config(M2POPolicyLossConfig(loss_mode="m2po", mask_scope="dp_group"), dp_size=world,
                               batch_num_tokens=total + 10**6, global_batch_size=12)
        with pytest.raises(ValueError, match="ppo_micro_batch_size_per_gpu"):
            get_policy_loss_fn("m2po")(old_log_prob, log_prob, advantages, response_mask, config=config)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@needs_verl
@pytest.mark.parametrize("world", [2, 3])
def test_dp_group_scope_equals_one_process_on_the_whole_mini_batch(world, tmp_path, monkeypatch):
    """verl's own entry point (get_policy_loss_fn) on `world` gloo processes: loss, gradient and metrics of the
    dp_group decision equal one process's on the concatenated mini-batch."""
    import types

    import torch.multiprocessing as mp

    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    mp.spawn(_dp_worker, args=(world, str(tmp_path / "init")), nprocs=world, join=True)


@needs_verl
def test_dp_group_scope_refuses_what_it_cannot_make_exact():
    from verl.workers.config import ActorConfig, FSDPActorConfig, McoreActorConfig

    from m2po_lab.integrations.verl import M2POPolicyLossConfig

    old_log_prob, log_prob, advantages, response_mask = _batch()
    policy = M2POPolicyLossConfig(loss_mode="m2po", mask_scope="dp_group")
    info = {"dp_size": 1, "batch_num_tokens": int(response_mask.sum())}
    cases = (
        (ActorConfig, dict(strategy="fsdp", use_dynamic_bsz=True, ppo_max_token_len_per_gpu=4096), "use_dynamic_bsz"),
        (FSDPActorConfig, dict(strategy="fsdp", ppo_micro_batch_size_per_gpu=2, ulysses_sequence_parallel_size=2),
         "sequence parallelism"),
        (McoreActorConfig, dict(strategy="megatron", ppo_micro_batch_size_per_gpu=2), "FSDP"),
    )
    for cls, kw, needle in cases:
        config = cls(rollout_n=8, policy_loss=policy, global_batch_info=info, **kw)
        with pytest.raises(ValueError, match=needle):
            get_policy_loss_fn_m2po()(old_log_prob, log_prob, advantages, response_mask, config=config)
    fine = ActorConfig(strategy="fsdp", rollout_n=8, ppo_micro_batch_size_per_gpu=2, policy_loss=policy,
                       global_batch_info=info)
    get_policy_loss_fn_m2po()(old_log_prob, log_prob, advantages, response_mask, config=fine)  # one process: fine
    with pytest.raises(ValueError, match="mask_scope"):
        M2POPolicyLossConfig(mask_scope="global")


def get_policy_loss_fn_m2po():
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    return get_policy_loss_fn("m2po")
