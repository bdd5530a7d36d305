import pytest
import torch

from m2po_lab.advantages import group_advantages
from m2po_lab.staleness import StaleQueue


def test_group_advantages_hand_computed():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    adv = group_advantages(r, 4)
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std().item()  # unbiased: sqrt(1/3)
    expected = [0.5, -0.5, -0.5, 0.5]
    assert adv[:4].tolist() == pytest.approx([e / (std + 1e-6) for e in expected], rel=1e-6)
    assert adv[4:].tolist() == [0.0] * 4  # zero variance: exactly 0, never NaN
    dr = group_advantages(r.reshape(2, 4), 4, normalize_std=False)  # Dr.GRPO: no std
    assert dr.shape == (2, 4) and dr[0].tolist() == expected and dr[1].tolist() == [0.0] * 4


def test_group_advantages_rounding_groups_are_exactly_zero():
    r = torch.full((6,), 0.3, dtype=torch.float64)
    assert group_advantages(r, 3).abs().max().item() == 0.0


@pytest.mark.parametrize(
    "rewards, group_size, match",
    [
        (torch.ones(6), 1, "group_size"),
        (torch.ones(7), 2, "shape"),
        (torch.tensor([1.0, float("nan")]), 2, "finite"),
        (torch.ones(2, 3), 2, "group_size"),
        (torch.ones(4, dtype=torch.long), 2, "floating"),
    ],
)
def test_group_advantages_bad_input(rewards, group_size, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(rewards, group_size)


def test_stale_queue_staleness_sequence():
    k, generated = 3, []

    def generate():
        generated.append(len(generated))
        return {"id": generated[-1]}

    q = StaleQueue(k)
    out = [q.next(t, generate) for t in range(10)]
    assert [b.staleness for b in out] == [0, 1, 2, 3, 3, 3, 3, 3, 3, 3]
    assert [b.version for b in out] == [0, 0, 0, 0, 1, 2, 3, 4, 5, 6]
    assert len(generated) == 10 + k  # k base batches up front, then one per update
    assert len(q) == k  # memory: k queued batches, never more
    # every generated batch is trained once, in order
    assert [b.batch["id"] for b in out] == list(range(10))


def test_stale_queue_on_policy_and_checkpoint():
    q = StaleQueue(0)
    assert [q.next(t, lambda: t).staleness for t in range(3)] == [0, 0, 0]
    q2 = StaleQueue(2)
    for t in range(4):
        q2.next(t, lambda: t)
    restored = StaleQueue(2)
    restored.load_state_dict(q2.state_dict())
    assert restored.pop(4).version == q2.pop(4).version
    with pytest.raises(ValueError, match="k=2"):
        StaleQueue(3).load_state_dict(q2.state_dict())


@pytest.mark.parametrize("k", [-1, 1.5, "2"])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k must be an integer >= 0"):
        StaleQueue(k)


def test_stale_queue_pop_errors():
    with pytest.raises(ValueError, match="empty"):
        StaleQueue(1).pop(0)
    q = StaleQueue(1)
    q.push("b", version=5)
    with pytest.raises(ValueError, match="earlier"):
        q.pop(3)
