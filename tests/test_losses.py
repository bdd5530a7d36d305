import math

import pytest
import torch

from m2po_lab.aggregation import aggregate
from m2po_lab.losses import LOSSES, LossConfig, batch_state, get_loss, slice_state
from m2po_lab.masking import trust_region_candidates
from reference import areal_greedy, student_t

ALL = sorted(LOSSES)
REQUIRED = {"grpo", "no_tr", "gspo", "tis", "mis", "cispo", "m2po", "m2po_released", "m2po_areal"}
COMMON_KEYS = {"clip/frac", "is/ratio_mean", "is/ratio_max", "is/log_ratio_abs_p99", "kl/k1", "kl/k3"}
M2PO_KEYS = {"m2po/m2_before", "m2po/m2_after", "m2po/candidates", "m2po/kept_candidates", "m2po/threshold"}


def run(name, log_ratio, adv, cfg=None, mask=None, **state):
    """Per-token loss and d(sum loss)/d(logp) for one row of tokens at old_logp = -1."""
    lr = torch.as_tensor(log_ratio, dtype=torch.float64).reshape(1, -1)
    old = torch.full_like(lr, -1.0)
    logp = (old + lr).requires_grad_(True)
    mask = torch.ones_like(lr, dtype=torch.bool) if mask is None else mask
    per_token, metrics = get_loss(name)(logp, old, torch.as_tensor(adv, dtype=torch.float64), mask, cfg, **state)
    per_token.sum().backward()
    return per_token.detach()[0], logp.grad[0], metrics


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def approx_metric(x):  # metrics are float32 tensors
    return pytest.approx(x, rel=1e-6, abs=1e-7)


def test_registry_holds_every_loss_with_docstring():
    assert REQUIRED <= set(LOSSES)
    for name, fn in LOSSES.items():
        doc = fn.__doc__ or ""
        assert "arXiv" in doc or "Yao et al." in doc or "IcePop" in doc, name
        assert "=" in doc  # an equation


def test_grpo_hand_computed():
    # tokens: (r, A) = (1.5, 1) clipped high; (1.5, -1) unclipped; (0.5, 1) unclipped;
    # (0.5, -1) clipped low; (1.1, 1) inside the range
    r = [1.5, 1.5, 0.5, 0.5, 1.1]
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0]])
    loss, grad, m = run("grpo", [math.log(x) for x in r], adv)
    assert loss.tolist() == approx([-1.2, 1.5, -0.5, 0.8, -1.1])
    assert grad.tolist() == approx([0.0, 1.5, -0.5, 0.0, -1.1])
    assert m["clip/frac"].item() == approx_metric(0.4)
    # clip-higher 0.2 / 0.28: r = 1.25 is no longer clipped
    loss, grad, _ = run("grpo", [math.log(1.25)], [1.0], LossConfig(eps_high=0.28))
    assert loss.tolist() == approx([-1.25]) and grad.tolist() == approx([-1.25])
    # dual clip c = 3 on A < 0: r = 4 -> loss capped at 3, no gradient
    loss, grad, m = run("grpo", [math.log(4.0)], [-1.0], LossConfig(dual_clip_c=3.0))
    assert loss.tolist() == approx([3.0]) and grad.tolist() == approx([0.0])
    assert m["clip/frac"].item() == 1.0 and m["clip/frac_dual"].item() == 1.0


def test_no_tr_hand_computed():
    loss, grad, m = run("no_tr", [0.3, -0.3], [2.0])
    assert loss.tolist() == approx([-2 * math.exp(0.3), -2 * math.exp(-0.3)])
    assert grad.tolist() == approx([-2 * math.exp(0.3), -2 * math.exp(-0.3)])
    assert m["clip/frac"].item() == 0.0


def test_gspo_hand_computed():
    # s = exp(mean(0.1, -0.3)) = exp(-0.1) < 1 - 3e-4
    s = math.exp(-0.1)
    loss, grad, _ = run("gspo", [0.1, -0.3], [1.0])  # A > 0, s < 1: unclipped
    assert loss.tolist() == approx([-s, -s]) and grad.tolist() == approx([-s, -s])
    loss, grad, m = run("gspo", [0.1, -0.3], [-1.0])  # A < 0, s < 1 - eps: clipped
    assert loss.tolist() == approx([1 - 3e-4] * 2) and grad.tolist() == approx([0.0, 0.0])
    assert m["clip/frac"].item() == 1.0 and m["gspo/seq_clip_frac"].item() == 1.0
    # padding does not enter the sequence mean
    mask = torch.tensor([[True, True, False]])
    loss, grad, _ = run("gspo", [0.1, -0.3, 7.0], [1.0], mask=mask)
    assert loss.tolist() == approx([-s, -s, 0.0]) and grad.tolist() == approx([-s, -s, 0.0])


def test_tis_hand_computed():
    loss, grad, m = run("tis", [math.log(3.0), math.log(0.5)], [1.0])  # cap C = 2
    assert loss.tolist() == approx([-2.0, -0.5]) and grad.tolist() == approx([-2.0, -0.5])
    assert m["clip/frac"].item() == 0.0 and m["is/weight_clip_frac"].item() == 0.5


def test_mis_hand_computed():
    r = [6.0, 0.4, 2.0]
    loss, grad, m = run("mis", [math.log(x) for x in r], [-1.5])
    assert loss.tolist() == approx([0.0, 0.0, 3.0]) and grad.tolist() == approx([0.0, 0.0, 3.0])
    assert m["clip/frac"].item() == approx_metric(2 / 3)


def test_cispo_hand_computed():
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    loss, grad, m = run("cispo", [math.log(1.5), math.log(0.5), math.log(1.1)], adv)
    assert loss.tolist() == approx([-1.28, 0.5, -1.1])  # weight clipped at 1.28; no lower bound
    assert grad.tolist() == approx([-1.28, 0.5, -1.1])  # every token keeps a gradient
    assert m["clip/frac"].item() == 0.0 and m["is/weight_clip_frac"].item() == approx_metric(1 / 3)


def test_m2po_hand_computed():
    # candidates (A > 0, r > 1): M2 0.01, 0.04, 0.25 -> mask the 0.5 token; -0.9 is not a candidate
    lr = [0.1, 0.2, 0.5, -0.9]
    loss, grad, m = run("m2po", lr, [1.0])
    expected = [-math.exp(0.1), -math.exp(0.2), 0.0, -math.exp(-0.9)]
    assert loss.tolist() == approx(expected) and grad.tolist() == approx(expected)
    assert m["m2po/m2_before"].item() == approx_metric(0.1)
    assert m["m2po/m2_after"].item() == approx_metric(0.025)
    assert m["clip/frac"].item() == approx_metric(0.25)
    assert m["m2po/threshold"].item() == approx_metric(0.5)
    # masked tokens stay in the token-mean denominator (1 / sum |o|)
    per_token = torch.tensor([expected], dtype=torch.float64)
    assert aggregate(per_token, torch.ones(1, 4, dtype=torch.bool)).item() == approx(sum(expected) / 4)


def test_m2po_released_hand_computed():
    # same batch: t^2 = 0.07 (see test_waterfill_edge_cases); the 0.5 token is clipped at e^t
    lr = [0.1, 0.2, 0.5, -0.9]
    t = math.sqrt(0.07)
    loss, grad, m = run("m2po_released", lr, [1.0])
    assert loss.tolist() == approx([-math.exp(0.1), -math.exp(0.2), -math.exp(t), -math.exp(-0.9)])
    assert grad.tolist() == approx([-math.exp(0.1), -math.exp(0.2), 0.0, -math.exp(-0.9)])
    assert m["m2po/threshold"].item() == approx_metric(t)
    # floors widen the clip: with floor_high 0.5, r = e^0.5 = 1.65 > 1.5 is still clipped, at 1.5
    loss, grad, _ = run("m2po_released", lr, [1.0], LossConfig(released_floor_high=0.5))
    assert loss[2].item() == approx(-1.5) and grad[2].item() == 0.0
    # within budget: no clipping at all
    loss, grad, m = run("m2po_released", [0.1, 0.1], [1.0])
    assert math.isinf(m["m2po/threshold"].item()) and grad.tolist() == approx([-math.exp(0.1)] * 2)


@pytest.mark.parametrize("name", ALL)
def test_on_policy_limit_gradient(name):
    """logp == old_logp: every loss's gradient is the on-policy policy gradient -A grad logp."""
    g = torch.Generator().manual_seed(1)
    B, T = 6, 9
    logp = (-torch.rand(B, T, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    old = logp.detach().clone()
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) > 0.3
    per_token, metrics = get_loss(name)(logp, old, adv, mask)
    per_token.sum().backward()
    expected = torch.where(mask, -adv[:, None].expand(B, T), torch.zeros(B, T, dtype=torch.float64))
    torch.testing.assert_close(logp.grad, expected, atol=1e-6, rtol=0)
    assert metrics["clip/frac"].item() == 0.0
    assert COMMON_KEYS <= set(metrics)
    if name.startswith("m2po"):
        assert M2PO_KEYS <= set(metrics)


@pytest.mark.parametrize("name", ALL)
def test_padding_and_metrics_are_clean(name):
    """NaN/-inf at padding never leaks; metrics are detached 0-d tensors."""
    g = torch.Generator().manual_seed(2)
    logp = (-torch.rand(4, 5, generator=g)).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(4, 5, generator=g)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[:, -2:] = False
    old[:, -1] = float("nan")
    logp_padded = torch.where(mask, logp, torch.full_like(logp, -math.inf))
    per_token, metrics = get_loss(name)(logp_padded, old, torch.randn(4, generator=g), mask)
    per_token.sum().backward()
    assert torch.isfinite(per_token).all() and (per_token[~mask] == 0).all()
    assert torch.isfinite(logp.grad).all() and (logp.grad[~mask] == 0).all()
    for key, value in metrics.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad, key


@pytest.mark.parametrize("name", ALL)
def test_with_zeroed_names_exactly_the_tokens_with_no_gradient(name):
    """``with_zeroed=True``: the loss's own zeroed mask equals the autograd gradient's zeros.

    Stale ratios (|log r| up to ~1.5, so every clip, mask and drop acts), A != 0 everywhere,
    padding; for m2po_areal also with a proximal policy (its PPO clip then acts too).
    """
    g = torch.Generator().manual_seed(5)
    B, T = 8, 12
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    logp = (old + 0.6 * torch.randn(B, T, generator=g, dtype=torch.float64)).requires_grad_(True)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    adv = torch.where(adv.abs() < 0.05, torch.full_like(adv, 0.5), adv)  # A != 0: zero gradient means zeroed
    mask = torch.rand(B, T, generator=g) > 0.2
    extras = [{}]
    if name == "m2po_areal":
        extras.append({"prox_logp": old + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)})
    for extra in extras:
        logp.grad = None
        per_token, metrics, zeroed = get_loss(name)(logp, old, adv, mask, with_zeroed=True, **extra)
        per_token.sum().backward()
        no_grad = mask & (logp.grad == 0)
        assert zeroed.dtype == torch.bool and zeroed.shape == mask.shape and not (zeroed & ~mask).any()
        assert torch.equal(zeroed, no_grad), name
        assert metrics["clip/frac"].item() == approx_metric(zeroed.sum().item() / mask.sum().item())
        two = get_loss(name)(logp.detach(), old, adv, mask, **extra)
        assert len(two) == 2  # the default return stays (per_token_loss, metrics)
    if name in ("grpo", "gspo", "mis", "m2po", "m2po_released", "m2po_areal"):
        assert zeroed.any(), f"{name}: the inputs were meant to make it zero some tokens"


def test_released_gradient_equals_masking_above_threshold():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        B, T = 8, 16
        old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 4
        lr = student_t((B, T), 2, g) * 0.2
        adv = torch.randn(B, generator=g, dtype=torch.float64)
        mask = torch.rand(B, T, generator=g) > 0.2
        logp = (old + lr).requires_grad_(True)
        per_token, m = get_loss("m2po_released")(logp, old, adv, mask)
        per_token.sum().backward()
        t = m["m2po/threshold"].item()
        cand = trust_region_candidates(lr, adv, mask)
        keep = mask & ~(cand & (lr.abs() > t))
        logp2 = (old + lr).requires_grad_(True)
        ref = torch.where(keep, -adv[:, None] * torch.exp(logp2 - old), torch.zeros_like(lr))
        ref.sum().backward()
        torch.testing.assert_close(logp.grad, logp2.grad)


@pytest.mark.parametrize("name", ["m2po", "m2po_released", "grpo"])
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_micro_batches_equal_one_big_batch(name, mode):
    """Mini-batch-scope state + global normaliser: accumulating micro-batches == one batch."""
    g = torch.Generator().manual_seed(4)
    B, T = 12, 10
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    lr = torch.randn(B, T, generator=g, dtype=torch.float64) * 0.4
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) > 0.25
    loss_fn = get_loss(name)

    logp = (old + lr).requires_grad_(True)
    per_token, _ = loss_fn(logp, old, adv, mask)
    aggregate(per_token, mask, mode).backward()

    logp_micro = (old + lr).requires_grad_(True)
    state = batch_state(name, logp_micro.detach(), old, adv, mask)
    n_tok = mask.sum()
    total = 0.0
    for rows in (slice(0, 5), slice(5, 7), slice(7, 12)):  # uneven micro-batches
        pt, _ = loss_fn(logp_micro[rows], old[rows], adv[rows], mask[rows], **slice_state(state, rows))
        part = aggregate(pt, mask[rows], mode, num_tokens=n_tok, num_seqs=B)
        part.backward()
        total += part.item()
    torch.testing.assert_close(logp_micro.grad, logp.grad)
    assert total == pytest.approx(aggregate(per_token, mask, mode).item())


def test_micro_batch_scope_differs_from_mini_batch_scope():
    """Per-micro-batch M2 (the released code's scope) can mask differently: the option is real."""
    # row 0 alone: one candidate with M2 0.09 > tau; with row 1's eight M2 = 1e-4 tokens the
    # mini-batch mean is (0.09 + 8e-4) / 9 = 0.0101 <= tau
    lr = torch.tensor([[0.3] + [0.0] * 7, [0.01] * 8], dtype=torch.float64)
    old = torch.zeros_like(lr)
    adv = torch.tensor([1.0, 1.0], dtype=torch.float64)
    mask = torch.ones(2, 8, dtype=torch.bool)
    state = batch_state("m2po", old + lr, old, adv, mask)
    _, m_micro = get_loss("m2po")(old[:1] + lr[:1], old[:1], adv[:1], mask[:1])
    _, m_mini = get_loss("m2po")(old[:1] + lr[:1], old[:1], adv[:1], mask[:1], **slice_state(state, slice(0, 1)))
    assert m_micro["clip/frac"].item() == 0.125  # micro-batch scope: masked
    assert m_mini["clip/frac"].item() == 0.0  # mini-batch scope: kept


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda t: dict(logp=t["logp"][:, :-1]), "old_logp"),
        (lambda t: dict(mask=t["mask"][:, :-1]), "mask"),
        (lambda t: dict(adv=torch.ones(7)), "adv"),
        (lambda t: dict(logp=t["logp"].clone().index_put_((torch.tensor([0]), torch.tensor([0])), torch.tensor(float("nan")))), "logp.*finite"),
        (lambda t: dict(old_logp=t["old_logp"].clone().fill_(float("inf"))), "old_logp.*finite"),
        (lambda t: dict(logp=t["logp"][0]), r"\(B, T\)"),
    ],
)
@pytest.mark.parametrize("name", ["grpo", "m2po", "m2po_released"])
def test_bad_input_is_a_clear_error(name, make, match):
    t = dict(logp=-torch.rand(3, 4), old_logp=-torch.rand(3, 4), adv=torch.randn(3), mask=torch.ones(3, 4))
    t.update(make(t))
    with pytest.raises(ValueError, match=match):
        get_loss(name)(t["logp"], t["old_logp"], t["adv"], t["mask"])


def test_bad_config_and_names():
    with pytest.raises(ValueError, match="loss='ppo2'.*accepted.*m2po"):
        get_loss("ppo2")
    with pytest.raises(ValueError, match="tau"):
        LossConfig(tau=0.0)
    with pytest.raises(ValueError, match="tau"):
        LossConfig(tau=-0.04)
    with pytest.raises(ValueError, match="region.*harmful"):
        LossConfig(region="bad")
    with pytest.raises(ValueError, match="eps_low"):
        LossConfig(eps_low=1.5)
    with pytest.raises(ValueError, match="dual_clip_c"):
        LossConfig(dual_clip_c=0.5)
    with pytest.raises(ValueError, match="cfg"):
        get_loss("grpo")(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), cfg={"eps": 0.2})


def test_huge_log_ratios_stay_finite():
    lr = torch.tensor([[60.0, -60.0, 95.0]], dtype=torch.float32)
    for name in ALL:
        loss, grad, m = run(name, lr, [-1.0])
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all(), name
        assert all(torch.isfinite(v) or v.item() == math.inf for v in m.values()), name


@pytest.mark.parametrize("name", ALL)
def test_compute_core_vmaps_over_runs(name):
    """LOSSES[name].compute under torch.func.vmap (how the study trains many runs) == per-run calls."""
    g = torch.Generator().manual_seed(5)
    R, B, T = 4, 6, 5
    logp = (-torch.rand(R, B, T, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    old = logp.detach() + 0.4 * torch.randn(R, B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(R, B, 1, generator=g, dtype=torch.float64).expand(R, B, T)
    mask = torch.rand(B, T, generator=g) > 0.2
    cfg = LossConfig()
    fn = get_loss(name)
    # the core's contract: padding already zeroed (the public loss does it in _prepare)
    log_ratio = torch.where(mask, logp - old, torch.zeros_like(old))
    per_token, metrics = torch.func.vmap(lambda lr, a: fn.compute(lr, a, mask, cfg))(log_ratio, adv)
    grad = torch.autograd.grad(per_token.sum(), logp)[0]
    for r in range(R):
        lp = logp[r].detach().requires_grad_(True)
        ref, ref_metrics = fn(lp, old[r], adv[r], mask, cfg)
        torch.testing.assert_close(per_token[r], ref.detach())
        torch.testing.assert_close(grad[r], torch.autograd.grad(ref.sum(), lp)[0])
        for key, value in ref_metrics.items():
            torch.testing.assert_close(metrics[key][r], value, equal_nan=True)


# ---------------------------------------------------------------- m2po_areal (AReaL PR #480)
def test_m2po_areal_hand_computed():
    """prox - old = [0.5, 0.5, 0.1] (M2 0.25, 0.25, 0.01; mean 0.17 >= tau 0.15): mask the later
    0.25 -> mean 0.13 < 0.15, stop. logp - prox = [0.3, 0, -0.1], A = [1, 1, -1]: token 0 is
    clipped at 1.2 (no gradient), token 2 unclipped. Each kept loss is times w = pi_prox/pi_behav
    and times kept_scale = 3 valid / 2 kept, so token-mean over the 3 valid = AReaL's sum / 2."""
    old = torch.full((1, 3), -1.0, dtype=torch.float64)
    prox = old + torch.tensor([[0.5, 0.5, 0.1]], dtype=torch.float64)
    logp = (prox + torch.tensor([[0.3, 0.0, -0.1]], dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    per_token, m = get_loss("m2po_areal")(logp, old, adv, mask, LossConfig(tau=0.15), prox_logp=prox)
    per_token.sum().backward()
    assert per_token[0].tolist() == approx([-1.2 * math.exp(0.5) * 1.5, 0.0, math.exp(-0.1) * math.exp(0.1) * 1.5])
    assert logp.grad[0].tolist() == approx([0.0, 0.0, 1.5])
    areal = (-1.2 * math.exp(0.5) + 1.0) / 2  # AReaL: sum over kept / number kept
    assert aggregate(per_token.detach(), mask).item() == approx(areal)
    assert 1 - m["m2po/kept_candidates"].item() / m["m2po/candidates"].item() == approx_metric(1 / 3)  # masked
    assert m["clip/frac"].item() == approx_metric(2 / 3)  # masked + clipped
    assert m["m2po/m2_before"].item() == approx_metric(0.17)
    assert m["m2po/m2_after"].item() == approx_metric(0.13)
    assert m["m2po/threshold"].item() == approx_metric(0.5)


def test_m2po_areal_masks_one_where_algorithm1_keeps_both():
    """The review's case: lr = [0.5, 0.5], tau 0.25 (no proximal: M2 of the current policy)."""
    cfg = LossConfig(tau=0.25, region="all")
    _, grad_m2po, m_m2po = run("m2po", [0.5, 0.5], [1.0], cfg)
    loss, grad, m = run("m2po_areal", [0.5, 0.5], [1.0], cfg)
    assert m_m2po["clip/frac"].item() == 0.0 and m["clip/frac"].item() == 0.5
    # the kept token: -A r with r = pi_theta / pi_behav, twice (2 valid / 1 kept)
    assert loss.tolist() == approx([-2 * math.exp(0.5), 0.0]) and grad.tolist() == approx([-2 * math.exp(0.5), 0.0])


def _areal_reference(logp, old, prox, adv, mask, tau, eps=0.2):
    """AReaL's grpo_loss_fn + ppo_actor_loss_fn (PR #480) restated in float64: a scalar loss."""
    keep = areal_greedy(old - prox, mask, tau)
    ratio = torch.exp(logp - prox)
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - eps, 1 + eps)) * torch.exp(prox - old)
    return torch.where(keep, pg, torch.zeros_like(pg)).sum() / keep.sum().clamp(min=1)


def test_m2po_areal_equals_areal_reference():
    g = torch.Generator().manual_seed(6)
    for case in range(30):
        B, T = 1 + case % 4, 1 + (case * 7) % 9
        old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
        prox = old + student_t((B, T), 3, g) * 0.3
        if case % 5 == 0:
            prox = old + torch.full((B, T), 0.3, dtype=torch.float64)  # every M2 tied
        logp = (prox + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.2).requires_grad_(True)
        adv = torch.randn(B, T, generator=g, dtype=torch.float64)
        mask = torch.rand(B, T, generator=g) > 0.25
        mask[0, 0] = True
        tau = (0.04, 0.01, 0.2)[case % 3]
        per_token, _ = get_loss("m2po_areal")(logp, old, adv, mask, LossConfig(tau=tau), prox_logp=prox)
        ours = aggregate(per_token, mask)
        (grad,) = torch.autograd.grad(ours, logp)
        lp = logp.detach().requires_grad_(True)
        ref = _areal_reference(lp, old, prox, adv, mask, tau)
        (ref_grad,) = torch.autograd.grad(ref, lp)
        assert ours.item() == approx(ref.item()), case
        torch.testing.assert_close(grad, ref_grad)


def test_m2po_areal_micro_batches_reproduce_areal_weighting_and_mini_batch_scope():
    """Per micro-batch with the mini-batch's num_tokens: AReaL's own weighting
    sum_mb (n_valid_mb / n_valid) * loss_mb. With batch_state: one mask over the mini-batch."""
    g = torch.Generator().manual_seed(8)
    B, T = 9, 6
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    prox = old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.4
    logp = prox + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.1
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) > 0.2
    fn, cfg, parts = get_loss("m2po_areal"), LossConfig(tau=0.05), (slice(0, 2), slice(2, 7), slice(7, 9))
    n_valid = mask.sum()
    per_micro = sum(
        aggregate(fn(logp[r], old[r], adv[r], mask[r], cfg, prox_logp=prox[r])[0], mask[r], num_tokens=n_valid)
        for r in parts
    )
    areal = sum(
        mask[r].sum().double() / n_valid * _areal_reference(logp[r], old[r], prox[r], adv[r][:, None], mask[r], 0.05)
        for r in parts
    )
    assert per_micro.item() == approx(areal.item())
    state = batch_state("m2po_areal", logp, old, adv, mask, cfg, prox_logp=prox)
    whole = aggregate(fn(logp, old, adv, mask, cfg, prox_logp=prox)[0], mask)
    sliced = sum(
        aggregate(fn(logp[r], old[r], adv[r], mask[r], cfg, prox_logp=prox[r], **slice_state(state, r))[0], mask[r],
                  num_tokens=n_valid)
        for r in parts
    )
    assert sliced.item() == approx(whole.item())


def test_prox_logp_is_only_for_m2po_areal():
    t = dict(logp=-torch.rand(2, 3), old_logp=-torch.rand(2, 3), adv=torch.randn(2), mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="prox_logp.*m2po_areal"):
        get_loss("grpo")(*t.values(), prox_logp=-torch.rand(2, 3))
    with pytest.raises(ValueError, match="prox_logp.*m2po_areal"):
        batch_state("m2po", *t.values(), prox_logp=-torch.rand(2, 3))
    with pytest.raises(ValueError, match="prox_logp.*shape"):
        get_loss("m2po_areal")(*t.values(), prox_logp=-torch.rand(2, 4))
    with pytest.raises(ValueError, match="prox_logp.*finite"):
        get_loss("m2po_areal")(*t.values(), prox_logp=torch.full((2, 3), float("nan")))


@pytest.mark.parametrize("bad", [0.5, float("nan"), 2.0])
@pytest.mark.parametrize("name", ["grpo", "m2po", "m2po_areal"])
def test_mask_must_be_bool_or_zero_one(name, bad):
    """A float mask is never cast with bool() (0.5 or NaN counted as valid): 0/1 only."""
    g = torch.Generator().manual_seed(9)
    logp, old, adv = -torch.rand(3, 4, generator=g), -torch.rand(3, 4, generator=g), torch.randn(3, generator=g)
    ok = torch.ones(3, 4)
    ok[1, 2] = 0.0
    ref = get_loss(name)(logp, old, adv, ok.bool())[0]
    assert torch.equal(get_loss(name)(logp, old, adv, ok)[0], ref)
    assert torch.equal(get_loss(name)(logp, old, adv, ok.to(torch.uint8))[0], ref)
    ok[0, 0] = bad
    with pytest.raises(ValueError, match="mask"):
        get_loss(name)(logp, old, adv, ok)
    if name != "grpo":  # losses without batch statistics return {} and read nothing
        with pytest.raises(ValueError, match="mask"):
            batch_state(name, logp, old, adv, ok)


def test_the_registry_records_what_each_loss_is():
    import inspect

    from m2po_lab.losses import LOSSES, REGISTRY, PolicyLoss, batch_state

    assert list(REGISTRY) == list(LOSSES)
    for name, entry in REGISTRY.items():
        assert isinstance(entry, PolicyLoss) and entry.name == name and entry.loss is LOSSES[name]
        assert entry.compute is LOSSES[name].compute and entry.doc and "\n" not in entry.doc
        assert list(inspect.signature(entry.loss).parameters) == ["logp", "old_logp", "adv", "mask", "cfg", "with_zeroed", "state"]
        zero = torch.zeros(1, 2)
        has_state = bool(batch_state(name, zero, zero, torch.ones(1), zero.bool() | True))
        assert (entry.batch_state is not None) == has_state == name.startswith("m2po"), name
    assert [n for n, e in REGISTRY.items() if e.proximal] == ["m2po_areal"]
