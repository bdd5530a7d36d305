"""Benchmark: M2PO's masking solver against a sort, the greedy loop and a per-token walk.

    python benchmarks/masking.py [--sizes 1e4 1e5 1e6 1e7] [--repeats 5]

For each size: heavy-tailed float32 log-ratios (Student-t, 3 degrees of freedom,
scale 0.15, so that mean M2 over the harmful tokens is ~0.07 and Algorithm 1 masks
about 1% of tokens; advantages +-1), region "harmful", tau 0.04, on the CPU with
``--threads`` intra-op threads (default 1: on a 2-core machine shared with anything
else, torch's 2-thread element-wise kernels on these sizes are slower and noisier). Prints one table
of median wall times and the ratios the targets are stated in:
  - ``keep/sort``: m2po_keep_mask over one torch.sort of the same candidate values
    (the floor; target <= 2 at every size >= 1e5);
  - ``static``: the shape-static path the solver takes under ``torch.func.vmap`` (it
    sorts every token, non-candidates as +inf; no host read at all), for comparison
    with ``sort(all)``, one sort of that full-length tensor;
  - ``walk/keep``: a per-token solver written the way the released code is (Python walk
    over sorted values, one host read per step) over m2po_keep_mask (target >= 100 at 1e6).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from m2po_lab.masking import _masked_static, m2po_keep_mask, trust_region_candidates


def make_batch(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    T = 1000 if n >= 1000 else n
    B = n // T
    z = torch.randn(B, T, generator=g)
    chi2 = torch.randn(3, B, T, generator=g).square().sum(0)
    log_ratio = 0.15 * z / (chi2 / 3).sqrt()  # Student-t(3) * 0.15, (B, T)
    adv = torch.where(torch.rand(B, generator=g) < 0.5, -1.0, 1.0)  # (B,)
    mask = torch.ones(B, T, dtype=torch.bool)
    return log_ratio, adv, mask


def greedy_loop(log_ratio, adv, mask, tau):
    """Algorithm 1 as written: argmax and drop while the mean is above tau (a sync per step)."""
    cand = trust_region_candidates(log_ratio, adv, mask).reshape(-1)
    m2 = torch.where(cand, log_ratio.reshape(-1).double().square(), torch.zeros(()))
    total, count = m2.sum().item(), int(cand.sum())
    keep = mask.reshape(-1).clone()
    while count and total / count > tau:
        i = int(m2.argmax())
        total, count = total - m2[i].item(), count - 1
        m2[i] = -math.inf
        keep[i] = False
    return keep.view_as(mask)


def per_token_walk(log_ratio, adv, mask, tau):
    """The released code's style: sort, cumsum, then walk with host reads at every step."""
    cand = trust_region_candidates(log_ratio, adv, mask)
    values, order = torch.sort(log_ratio[cand].double().square())
    csum = torch.cumsum(values, 0)
    n_kept = 0
    for k in range(values.numel()):
        prefix = float(csum[k].item())  # a host read per step, as in the released solver
        if prefix > tau * (k + 1):
            break
        n_kept = k + 1
    keep = mask.clone()
    idx = cand.nonzero()[order[n_kept:]]
    keep[idx[:, 0], idx[:, 1]] = False
    return keep


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6, 1e7])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tau", type=float, default=0.04)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    header = (
        f"{'tokens':>9} {'masked%':>8} {'keep_mask':>10} {'sort(cand)':>10} {'static':>10} {'sort(all)':>10} "
        f"{'greedy':>9} {'walk':>9} {'keep/sort':>9} {'walk/keep':>9}"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 CPU, tau={args.tau}")
    print(header)
    for size in args.sizes:
        n = int(size)
        lr, adv, mask = make_batch(n)
        cand = trust_region_candidates(lr, adv, mask)
        cand_m2 = lr[cand].square()
        all_m2 = torch.where(cand, lr.square(), torch.full_like(lr, math.inf)).reshape(-1)
        keep = m2po_keep_mask(lr, adv, mask, args.tau)
        masked = 100.0 * (1 - keep.float().mean().item())
        t_keep = timeit(lambda: m2po_keep_mask(lr, adv, mask, args.tau), args.repeats)
        t_sort = timeit(lambda: torch.sort(cand_m2, stable=True), args.repeats)
        t_sort_all = timeit(lambda: torch.sort(all_m2, stable=True), args.repeats)
        m2 = lr.square()
        t_static = timeit(lambda: _masked_static(m2, cand, args.tau), args.repeats)
        t_greedy = timeit(lambda: greedy_loop(lr, adv, mask, args.tau), 1) if n <= 1e5 else math.nan
        t_walk = timeit(lambda: per_token_walk(lr, adv, mask, args.tau), 1) if n <= 1e6 else math.nan
        if n <= 1e5:
            assert torch.equal(greedy_loop(lr, adv, mask, args.tau), keep)
        if n <= 1e6:
            assert torch.equal(per_token_walk(lr, adv, mask, args.tau), keep)
        print(
            f"{n:>9.0e} {masked:>8.3f} {t_keep * 1e3:>8.2f}ms {t_sort * 1e3:>8.2f}ms {t_static * 1e3:>8.2f}ms "
            f"{t_sort_all * 1e3:>8.2f}ms "
            f"{t_greedy:>8.3f}s {t_walk:>8.3f}s {t_keep / t_sort:>9.2f} {t_walk / t_keep:>9.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
