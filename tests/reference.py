"""Slow, obviously-correct references the fast code is compared with (tests only)."""

import math

import torch


def algorithm1_greedy(log_ratio, adv, mask, tau, region="harmful"):
    """Paper Algorithm 1 as written: drop the argmax-M2 candidate while the mean M2 > tau.

    M2 is the float32 square of a float32 input and the float64 square of any other
    (for bf16/fp16 values the two are equal: their squares are exact in float32);
    means are exact (math.fsum). Returns the keep mask (B, T) bool.
    """
    lr = log_ratio.detach()
    if adv.dim() == 1:
        adv = adv[:, None].expand_as(lr)
    lr = lr.float() if lr.dtype == torch.float32 else lr.double()
    m2 = lr.square().double().reshape(-1).tolist()
    mask_f = mask.bool().reshape(-1).tolist()
    lr_f, adv_f = lr.reshape(-1).tolist(), adv.reshape(-1).tolist()
    cand = [
        i
        for i in range(len(m2))
        if mask_f[i] and (region == "all" or (adv_f[i] > 0 and lr_f[i] > 0) or (adv_f[i] < 0 and lr_f[i] < 0))
    ]
    keep = list(mask_f)
    while cand and math.fsum(m2[i] for i in cand) / len(cand) > tau:
        worst = max(cand, key=lambda i: m2[i])
        cand.remove(worst)
        keep[worst] = False
    return torch.tensor(keep, dtype=torch.bool).reshape(lr.shape)


def waterfill_bisection(m2, tau, iters=200):
    """t with mean(min(m2, t^2)) = tau by bisection on t^2 (inf when within budget)."""
    v = [float(x) for x in m2]
    if not v or math.fsum(v) / len(v) <= tau:
        return math.inf
    lo, hi = 0.0, max(v)
    for _ in range(iters):
        mid = (lo + hi) / 2
        if math.fsum(min(x, mid) for x in v) / len(v) < tau:
            lo = mid
        else:
            hi = mid
    return math.sqrt((lo + hi) / 2)


def areal_greedy(m2_log_ratio, mask, tau):
    """AReaL's rule (PR #480, ``get_m2po_loss_mask``) as a loop over every valid token:
    while more than one token is left and their mean M2 >= tau, drop the argmax (among
    equal M2 the later token, as the package breaks ties; AReaL's sort leaves them unordered).

    M2 as in :func:`algorithm1_greedy`; means are exact (math.fsum).
    Returns the keep mask (B, T) bool.
    """
    lr = m2_log_ratio.detach()
    lr = lr.float() if lr.dtype == torch.float32 else lr.double()
    m2 = lr.square().double().reshape(-1).tolist()
    keep = mask.bool().reshape(-1).tolist()
    cand = [i for i in range(len(m2)) if keep[i]]
    while len(cand) > 1 and math.fsum(m2[i] for i in cand) / len(cand) >= tau:
        worst = max(cand, key=lambda i: (m2[i], i))
        cand.remove(worst)
        keep[worst] = False
    return torch.tensor(keep, dtype=torch.bool).reshape(lr.shape)


def student_t(shape, df, generator, dtype=torch.float64):
    """Student-t(df) draws (integer df) from an explicit generator: z / sqrt(chi2_df / df).

    ``torch.distributions.StudentT.sample`` ignores generators (it draws from the global RNG).
    """
    z = torch.randn(shape, generator=generator, dtype=dtype)
    chi2 = torch.randn((df, *shape), generator=generator, dtype=dtype).square().sum(0)
    return z / (chi2 / df).sqrt()
