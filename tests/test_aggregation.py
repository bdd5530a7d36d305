import math

import pytest
import torch

from m2po_lab.aggregation import AGG_MODES, aggregate


def test_aggregate_modes_hand_computed():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(loss, mask, "seq-mean-token-sum").item() == pytest.approx(10 / 2)
    assert aggregate(loss, mask, "seq-mean-token-sum-norm").item() == pytest.approx(10 / (2 * 3))
    assert aggregate(loss, mask, "seq-mean-token-sum-norm", norm_const=10).item() == pytest.approx(10 / 20)
    empty = torch.zeros(2, 3, dtype=torch.bool)
    assert aggregate(loss * 0, empty, "token-mean").item() == 0.0  # no valid token: 0, not NaN
    with pytest.raises(ValueError, match="mode.*token-mean"):
        aggregate(loss, mask, "sum")


# rows: 3 valid tokens, 1 valid token, fully masked (its values must not count anywhere)
LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0], [5.0, 5.0, 5.0]])
MASK = torch.tensor([[True, True, True], [True, False, False], [False, False, False]])


@pytest.mark.parametrize(
    "mode, kwargs, expected",
    [
        ("token-mean", {}, 10 / 4),
        ("token-mean", dict(num_tokens=8), 10 / 8),
        ("token-sum", {}, 10.0),
        ("seq-mean-token-mean", {}, (6 / 3 + 4 / 1) / 2),  # the empty row is not a sequence
        ("seq-mean-token-mean", dict(num_seqs=4), (2 + 4) / 4),
        ("seq-mean-token-sum", {}, 10 / 2),
        ("seq-mean-token-sum", dict(num_seqs=5), 10 / 5),
        ("seq-mean-token-sum-norm", {}, 10 / (2 * 3)),
        ("seq-mean-token-sum-norm", dict(norm_const=10), 10 / (2 * 10)),
        ("seq-mean-token-sum-norm", dict(num_seqs=4, norm_const=10), 10 / (4 * 10)),
        ("dr-grpo", {}, 10 / (3 * 3)),  # every row counts, the empty one too
        ("dr-grpo", dict(norm_const=10), 10 / (3 * 10)),
        ("dr-grpo", dict(num_seqs=6, norm_const=10), 10 / (6 * 10)),
    ],
)
def test_every_mode_hand_computed(mode, kwargs, expected):
    assert aggregate(LOSS, MASK, mode, **kwargs).item() == pytest.approx(expected, rel=1e-6)
    # dp_size multiplies every mode (engines that average gradients over ranks); it needs the global count
    local = {"token-mean": dict(num_tokens=4), "token-sum": {}, "dr-grpo": dict(num_seqs=3)}.get(mode, dict(num_seqs=2))
    local.update(kwargs)
    assert aggregate(LOSS, MASK, mode, dp_size=4, **local).item() == pytest.approx(4 * expected, rel=1e-6)
    if local:
        with pytest.raises(ValueError, match="required when dp_size > 1"):
            aggregate(LOSS, MASK, mode, dp_size=4)


def test_fully_masked_row_is_not_a_sequence():
    """The review's case: loss [[1, 1], [0, 0]] with row 2 masked: verl 0.9.1 gives 1.0 (ours was 0.5)."""
    loss = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([[True, True], [False, False]])
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == 1.0
    assert aggregate(loss, mask, "seq-mean-token-sum").item() == 2.0
    assert aggregate(loss, mask, "dr-grpo").item() == 2.0 / (2 * 2)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_nothing_to_count_is_zero_with_zero_gradient(mode):
    """A batch with no valid token: loss 0 (the empty sum over its own count 0), never NaN."""
    loss = torch.full((2, 3), 7.0, requires_grad=True)
    empty = torch.zeros(2, 3, dtype=torch.bool)
    for kwargs in ({}, dict(num_tokens=0, num_seqs=0), dict(num_tokens=torch.tensor(0), num_seqs=torch.tensor(0))):
        if mode == "dr-grpo" and "num_seqs" in kwargs:
            continue  # dr-grpo counts rows: this batch has 2
        kwargs = {k: v for k, v in kwargs.items() if (k == "num_tokens") == (mode == "token-mean")}
        out = aggregate(loss, empty, mode, **kwargs)
        (grad,) = torch.autograd.grad(out, loss)
        assert out.item() == 0.0 and torch.equal(grad, torch.zeros(2, 3))
    zero_rows = aggregate(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.bool), mode)
    assert zero_rows.item() == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="token-mean", num_tokens=0), "num_tokens"),
        (dict(mode="token-mean", num_tokens=-3), "num_tokens"),
        (dict(mode="token-mean", num_tokens=float("nan")), "num_tokens"),
        (dict(mode="token-mean", num_tokens=torch.tensor(0)), "num_tokens"),
        (dict(mode="token-mean", num_tokens=torch.tensor([4, 4])), "num_tokens"),
        (dict(mode="token-mean", num_tokens=True), "num_tokens"),
        (dict(mode="seq-mean-token-mean", num_seqs=0), "num_seqs"),
        (dict(mode="seq-mean-token-sum", num_seqs=torch.tensor(-1.0)), "num_seqs"),
        (dict(mode="dr-grpo", num_seqs=0), "num_seqs"),
        (dict(mode="seq-mean-token-sum-norm", norm_const=0), "norm_const"),
        (dict(mode="token-mean", dp_size=0), "dp_size"),
        (dict(mode="token-mean", dp_size=1.5), "dp_size"),
    ],
)
def test_bad_counts_are_a_clear_error(kwargs, match):
    """A normaliser <= 0 is a ValueError naming it (before, it was silently clamped to 1)."""
    with pytest.raises(ValueError, match=match):
        aggregate(LOSS, MASK, **kwargs)


@pytest.mark.parametrize("bad", [0.5, float("nan"), 2.0, -1.0])
def test_mask_must_be_bool_or_zero_one(bad):
    float_mask = MASK.float()
    assert aggregate(LOSS, float_mask).item() == aggregate(LOSS, MASK).item()  # 0/1 floats are fine
    assert aggregate(LOSS, MASK.long(), "seq-mean-token-mean").item() == pytest.approx(3.0)
    float_mask[0, 0] = bad
    with pytest.raises(ValueError, match="mask"):
        aggregate(LOSS, float_mask)


def test_padding_never_leaks_nan():
    loss = LOSS.clone().requires_grad_(True)
    for mode in AGG_MODES:
        poisoned = torch.where(MASK, loss, torch.full_like(loss, math.nan))
        out = aggregate(poisoned, MASK, mode)
        (grad,) = torch.autograd.grad(out, loss)
        assert torch.isfinite(out) and torch.isfinite(grad).all() and (grad[~MASK] == 0).all(), mode


def test_low_precision_loss_gives_the_float32_answer():
    """fp16 sums of > 65,504 tokens overflowed; bf16 sums rounded. Both now sum in float32."""
    loss = torch.full((40, 2000), -1.0, dtype=torch.float16, requires_grad=True)
    mask = torch.ones(40, 2000, dtype=torch.bool)
    out = aggregate(loss, mask)
    out.backward()
    assert out.dtype == torch.float32 and out.item() == -1.0
    assert loss.grad.dtype == torch.float16 and torch.isfinite(loss.grad).all()
    g = torch.Generator().manual_seed(0)
    bf = torch.randn(16, 300, generator=g).to(torch.bfloat16)
    m = torch.rand(16, 300, generator=g) > 0.3
    for mode in AGG_MODES:
        assert torch.equal(aggregate(bf, m, mode), aggregate(bf.float(), m, mode)), mode


@pytest.mark.parametrize("mode", AGG_MODES)
def test_micro_batches_with_global_counts_equal_one_batch(mode):
    g = torch.Generator().manual_seed(1)
    loss = torch.randn(10, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(10, 7, generator=g) > 0.4
    mask[3] = False  # a fully masked row
    whole = aggregate(loss, mask, mode, norm_const=7)
    counts = dict(num_tokens=mask.sum(), num_seqs=(mask.any(-1)).sum())
    if mode == "dr-grpo":
        counts["num_seqs"] = 10
    splits = (slice(0, 3), slice(3, 4), slice(4, 10))
    parts = [aggregate(loss[r], mask[r], mode, norm_const=7, **counts) for r in splits]
    assert sum(p.item() for p in parts) == pytest.approx(whole.item(), rel=1e-12)
