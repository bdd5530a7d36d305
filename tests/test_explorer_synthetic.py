"""m2po_lab.explorer.synthetic: seeded synthetic batches of log-ratios and advantages."""

from __future__ import annotations


import pytest
import torch

from m2po_lab.explorer.synthetic import synthetic_log_ratios


@pytest.mark.parametrize("kind", ["gaussian", "student_t"])
def test_synthetic_is_seeded_and_shaped(kind):
    a = synthetic_log_ratios(300, kind, 0.2, 3, 0.3, seed=7)
    b = synthetic_log_ratios(300, kind, 0.2, 3, 0.3, seed=7)
    c = synthetic_log_ratios(300, kind, 0.2, 3, 0.3, seed=8)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    log_ratio, adv, mask = a
    assert log_ratio.shape == adv.shape == mask.shape == (1, 300) and mask.all()
    assert adv.abs().min() >= 1e-3


def test_synthetic_sign_mix_and_tails():
    assert (synthetic_log_ratios(200, pos_frac=1.0)[1] > 0).all()
    assert (synthetic_log_ratios(200, pos_frac=0.0)[1] < 0).all()
    frac = (synthetic_log_ratios(20000, pos_frac=0.3, seed=1)[1] > 0).float().mean()
    assert abs(frac - 0.3) < 0.02
    gauss = synthetic_log_ratios(20000, "gaussian", 1.0, seed=2)[0]
    heavy = synthetic_log_ratios(20000, "student_t", 1.0, 3, seed=2)[0]
    kurt = lambda x: float((x - x.mean()).pow(4).mean() / x.var().pow(2))  # noqa: E731
    assert kurt(gauss) < 3.3 < kurt(heavy)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "laplace"}, "accepted values: \\['gaussian', 'student_t'\\]"),
        ({"n": 0}, "n must be"),
        ({"scale": 0.0}, "scale must be"),
        ({"kind": "student_t", "dof": 2.5}, "dof must be"),
        ({"pos_frac": 1.5}, "pos_frac must be"),
        ({"seed": None}, "seed must be"),
    ],
)
def test_synthetic_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_log_ratios(**{"n": 10, **kwargs})


