"""Benchmark: the cost per call of the data-parallel M2PO decision (m2po_lab.distributed) on gloo.

    python benchmarks/distributed.py [--worlds 2 4] [--sizes 1e5 1e6] [--repeats 5]

For each world size N (gloo, N CPU processes on this machine, one torch thread each) and
each mini-batch size n (tokens over all ranks, n / N per rank in rows of 1000;
heavy-tailed float32 log-ratios as in benchmarks/masking.py, Student-t(3) x 0.15,
advantages +-1, region "harmful", tau 0.04): the rounds and bytes of one call and the
median wall time on rank 0 (a barrier before each repeat) of

  - ``global``: ``batch_state("m2po", ..., group=)``: checks, candidates, the two
    all-gathers, then the sort and cut of every rank's candidates;
  - ``gather``: the two all-gathers alone (``gather_candidates``);
  - ``local``: ``batch_state("m2po", ...)`` on the rank's own rows only (the per-rank
    decision the global one replaces);
  - ``info``: ``global_batch_info`` (one all-reduce of 4 int64).

Bytes per rank and call: header 24 sent / 24 N received; values 4 C_max sent / 4 N C_max
received (C_max: the largest candidate count on a rank); ``global_batch_info`` 32 more.
Prints one table, no assertions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from m2po_lab.distributed import gather_candidates, global_batch_info
from m2po_lab.losses import batch_state
from m2po_lab.masking import trust_region_candidates


def make_share(n_total: int, world: int, rank: int):
    """This rank's rows of an n_total-token mini-batch: (log_ratio, adv, mask)."""
    g = torch.Generator().manual_seed(1000 * world + rank)
    T = 1000
    B = max(n_total // world // T, 1)
    z = torch.randn(B, T, generator=g)
    chi2 = torch.randn(3, B, T, generator=g).square().sum(0)
    log_ratio = 0.15 * z / (chi2 / 3).sqrt()  # (B, T)
    adv = torch.where(torch.rand(B, generator=g) < 0.5, -1.0, 1.0)  # (B,)
    return log_ratio, adv, torch.ones(B, T, dtype=torch.bool)


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker(rank: int, world: int, init_file: str, sizes: list[int], repeats: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    group = dist.group.WORLD
    for n in sizes:
        log_ratio, adv, mask = make_share(n, world, rank)
        old = torch.zeros_like(log_ratio)
        values = log_ratio.square()[trust_region_candidates(log_ratio, adv, mask)]  # (C,)
        counts = [torch.zeros((), dtype=torch.long) for _ in range(world)]
        dist.all_gather(counts, torch.tensor(values.numel()))
        c_max, c_total = max(int(c) for c in counts), sum(int(c) for c in counts)
        t_global = timed(lambda: batch_state("m2po", log_ratio, old, adv, mask, group=group), repeats)
        t_gather = timed(lambda: gather_candidates(values, group), repeats)
        t_local = timed(lambda: batch_state("m2po", log_ratio, old, adv, mask), repeats)
        t_info = timed(lambda: global_batch_info(mask, group), repeats)
        if rank == 0:
            sent, recv = 24 + 4 * c_max, world * (24 + 4 * c_max)
            print(
                f"{world:>5} {n:>9.0e} {c_total:>9} {2:>6} {sent / 1e6:>9.3f} {recv / 1e6:>9.3f} "
                f"{t_global * 1e3:>9.2f} {t_gather * 1e3:>9.2f} {t_local * 1e3:>9.2f} {t_info * 1e3:>8.3f}",
                flush=True,
            )
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, gloo on {os.cpu_count()} CPU cores, 1 thread per process, float32, tau=0.04")
    print(
        f"{'ranks':>5} {'tokens':>9} {'cand':>9} {'rounds':>6} {'sentMB':>9} {'recvMB':>9} "
        f"{'global_ms':>9} {'gather_ms':>9} {'local_ms':>9} {'info_ms':>8}",
        flush=True,
    )
    for world in args.worlds:
        with tempfile.TemporaryDirectory() as tmp:
            sizes = [int(s) for s in args.sizes]
            mp.spawn(worker, args=(world, os.path.join(tmp, "init"), sizes, args.repeats), nprocs=world, join=True)


if __name__ == "__main__":
    main()
