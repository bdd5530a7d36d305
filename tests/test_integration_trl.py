"""M2POGRPOTrainer (m2po_lab.integrations.trl): two real TRL training steps on a tiny local model, CPU.

Needs the extra ``m2po-lab[trl]``; skipped without TRL (.ci/run installs it, so CI runs it).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl", reason="needs the [trl] extra: pip install 'm2po-lab[trl]'")
datasets = pytest.importorskip("datasets")

from trl import GRPOConfig  # noqa: E402

from m2po_lab.integrations.trl import M2POGRPOTrainer, PolicyLossArgs  # noqa: E402
from m2po_lab.llm.models import build_tiny_model, load_model_and_tokenizer  # noqa: E402
from m2po_lab.losses import LossConfig  # noqa: E402
from m2po_lab.masking import m2po_mask  # noqa: E402


def _reward(completions, **kwargs):
    """Any reward that differs inside a group, so advantages are non-zero."""
    return [float(sum(map(ord, c)) % 7) for c in completions]


def _config(tmp_path, **overrides):
    kw = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        learning_rate=3e-2,  # large, so the second step's batch is clearly stale
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
        gradient_accumulation_steps=2,
        steps_per_generation=4,  # one generation = 2 optimizer steps: step 2 trains 1-update-stale data
    )
    kw.update(overrides)
    return GRPOConfig(**kw)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No hub and no telemetry: the model is local."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden=32, layers=1, heads=2, seed=0)
    return path


def _trainer(cls, tiny, tmp_path, args, policy_loss):
    model, tok = load_model_and_tokenizer(tiny, local_files_only=True)
    model.train()
    data = datasets.Dataset.from_dict({"prompt": [f"{a}+{b}=" for a in range(4) for b in range(4)]})
    return cls(model, _reward, args=args, train_dataset=data, processing_class=tok, policy_loss=policy_loss)


class _Spy(M2POGRPOTrainer):
    """Records each micro-batch's logp (with its gradient kept) and the mask state it got."""

    def _loss_state(self, model, inputs, logp, old_logp, adv, mask):
        out = super()._loss_state(model, inputs, logp, old_logp, adv, mask)
        logp.retain_grad()
        self.seen.append(dict(step=self._step, logp=logp, old_logp=old_logp, adv=adv, mask=mask, keep=out[0]["keep"]))
        return out


def test_m2po_trains_two_steps_with_optimizer_batch_mask(tiny, tmp_path):
    policy = PolicyLossArgs(loss="m2po", loss_config=LossConfig(tau=1e-3))  # small tau: some tokens get masked
    trainer = _trainer(_Spy, tiny, tmp_path, _config(tmp_path), policy)
    trainer.seen = []
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    # parameters changed
    assert any(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())

    # our loss ran: its metrics reached TRL's log
    logs = [h for h in trainer.state.log_history if "m2po/m2_before" in h]
    assert len(logs) == 2
    assert {"m2po/m2_before", "m2po/threshold", "clip/frac", "is/ratio_max"} <= set(logs[0])
    assert logs[0]["is/ratio_max"] == pytest.approx(1.0)  # step 1: data of the current policy
    assert logs[1]["clip/frac"] > 0  # step 2: stale by one update, M2PO masks

    seen = trainer.seen
    assert [s["step"] for s in seen] == [0, 1, 2, 3]
    masked_total = 0
    for s in seen:
        masked = s["mask"] & ~s["keep"]
        kept = s["keep"] & (s["adv"][:, None] != 0).expand_as(s["keep"])
        assert s["logp"].grad is not None
        assert torch.all(s["logp"].grad[masked] == 0)  # masked tokens got no gradient
        assert torch.all(s["logp"].grad[kept] != 0)
        masked_total += int(masked.sum())
    assert masked_total > 0

    # the mask of step 2 was decided over both of its micro-batches at once (Algorithm 1 on the mini-batch)
    window = seen[2:]
    log_ratio = torch.cat([s["logp"].detach() - s["old_logp"] for s in window])
    adv = torch.cat([s["adv"] for s in window])
    mask = torch.cat([s["mask"] for s in window])
    expected = m2po_mask(log_ratio, adv, mask, tau=1e-3).keep
    assert trainer._window_scope
    assert torch.equal(torch.cat([s["keep"] for s in window]), expected)
    # ...and the test can tell: deciding per micro-batch (the released code's scope) masks differently here
    per_micro = torch.cat([m2po_mask(s["logp"].detach() - s["old_logp"], s["adv"], s["mask"], tau=1e-3).keep
                           for s in window])
    assert not torch.equal(per_micro, expected)
    # the step's logged metrics are the loss's metrics of the whole optimizer batch (computed once)
    from m2po_lab.losses import get_loss

    old_logp = torch.cat([s["old_logp"] for s in window])
    whole = get_loss("m2po")(log_ratio + old_logp, old_logp, adv, mask, LossConfig(tau=1e-3), keep=expected)[1]
    for k in ("is/m2", "m2po/m2_before", "clip/frac", "is/log_ratio_abs_p99"):
        assert logs[1][k] == pytest.approx(float(whole[k]), rel=1e-5), k


def test_on_policy_configuration_is_refused(tiny, tmp_path):
    args = _config(tmp_path, steps_per_generation=2)  # = gradient_accumulation_steps: ratio identically 1
    with pytest.raises(ValueError, match="steps_per_generation=2.*num_iterations=1"):
        _trainer(M2POGRPOTrainer, tiny, tmp_path, args, PolicyLossArgs())


@pytest.mark.parametrize("setting, match", [
    (dict(beta=0.1), "beta=0.1"),
    (dict(entropy_coef=0.5), "entropy_coef=0.5"),
    (dict(use_adaptive_entropy=True), "use_adaptive_entropy=True"),
])
def test_unhonoured_settings_are_refused(tiny, tmp_path, setting, match):
    """TRL's loss terms the adapter does not add are refused, never dropped silently."""
    with pytest.raises(ValueError, match=match):
        _trainer(M2POGRPOTrainer, tiny, tmp_path, _config(tmp_path, **setting), PolicyLossArgs())
