"""``aggregate`` against verl's own ``agg_loss`` (verl 0.9.1, ``verl/trainer/ppo/core_algos.py``).

Runs in the verl venv (``.venv-verl``, see ``.ci/run``); skips where verl is not installed.
"""

import itertools

import pytest
import torch

verl = pytest.importorskip("verl")
from verl.trainer.ppo.core_algos import agg_loss  # noqa: E402

from m2po_lab.aggregation import aggregate  # noqa: E402

VERL_MODES = ("token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def _batches():
    """Random (B, T) losses and masks with fully masked rows, single-token rows and full rows."""
    g = torch.Generator().manual_seed(0)
    for B, T in [(1, 1), (3, 5), (8, 16), (5, 40)]:
        for p in (0.0, 0.3, 0.9):
            loss = torch.randn(B, T, generator=g) * 3
            mask = torch.rand(B, T, generator=g) >= p
            mask[0] = False  # a fully masked row
            if B > 1:
                mask[1] = False
                mask[1, 0] = True  # a one-token row
            if B > 2:
                mask[2] = True  # a full row
            if mask.any():
                yield loss, mask


def _global_info(mask, dp_size, as_tensor):
    n_tok, n_seq = int(mask.sum()) * dp_size + 3, int(mask.any(-1).sum()) * dp_size + 1
    if as_tensor:
        return torch.tensor(n_tok), torch.tensor(n_seq)
    return n_tok, n_seq


@pytest.mark.parametrize("mode", VERL_MODES)
def test_default_counts_equal_verl(mode):
    """No global_batch_info: verl counts this batch's valid tokens / non-empty rows."""
    for loss, mask in _batches():
        for m in (mask, mask.float(), mask.long()):
            ours = aggregate(loss, m, mode)
            theirs = agg_loss(loss_mat=loss, loss_mask=m, loss_agg_mode=mode)
            torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", VERL_MODES)
def test_global_batch_info_equals_verl(mode):
    """With verl's global_batch_info (dp_size, batch_num_tokens, global_batch_size, loss_scale_factor)."""
    for (loss, mask), dp_size, as_tensor, scale in itertools.product(_batches(), (1, 2, 4), (False, True), (None, 7)):
        n_tok, n_seq = _global_info(mask, dp_size, as_tensor)
        theirs = agg_loss(
            loss_mat=loss, loss_mask=mask, loss_agg_mode=mode, dp_size=dp_size,
            batch_num_tokens=n_tok, global_batch_size=n_seq, loss_scale_factor=scale,
        )
        ours = aggregate(loss, mask, mode, num_tokens=n_tok, num_seqs=n_seq, norm_const=scale, dp_size=dp_size)
        torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", VERL_MODES)
def test_gradients_equal_verl(mode):
    for loss, mask in _batches():
        a = loss.clone().requires_grad_(True)
        b = loss.clone().requires_grad_(True)
        aggregate(a, mask, mode, num_tokens=int(mask.sum()), num_seqs=int(mask.any(-1).sum())).backward()
        agg_loss(b, mask, mode, batch_num_tokens=int(mask.sum()),
                 global_batch_size=int(mask.any(-1).sum())).backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7)


def test_the_one_deliberate_difference():
    """A micro-batch with nothing to count: verl divides 0 by 0 (NaN), here the loss is 0."""
    loss = torch.ones(2, 3)
    empty = torch.zeros(2, 3, dtype=torch.bool)
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        assert torch.isnan(agg_loss(loss_mat=loss, loss_mask=empty, loss_agg_mode=mode))
        assert aggregate(loss, empty, mode).item() == 0.0
    # with a global count (another micro-batch has tokens) the two agree: 0
    assert agg_loss(loss, empty, "token-mean", batch_num_tokens=5).item() == 0.0
    assert aggregate(loss, empty, "token-mean", num_tokens=5).item() == 0.0
