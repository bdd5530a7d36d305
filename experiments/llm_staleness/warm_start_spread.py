"""The warm start over seeds: does it land in the same place whatever the seed (no knife edge)?

    python experiments/llm_staleness/warm_start_spread.py --preset tiny-table1 --seeds 0 1 2 [--set FIELD=VALUE ...]

Trains the study's warm start (``m2po_lab.llm.study_warmstart``) once per seed in a
temporary folder, one process at a time, one torch thread, and prints one row per seed
plus mean ± std: greedy / sampled accuracy (all sums, sums with a carry, without), the
final SFT loss and the token statistics of sampled responses.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from m2po_lab.llm.study_config import get_preset
from m2po_lab.llm.study_warmstart import train_warm_start

COLUMNS = ("start/acc_greedy", "start/acc_greedy_carry", "start/acc_greedy_no_carry", "start/acc_sampled",
           "start/acc_sampled_carry", "start/acc_sampled_no_carry", "sft/loss_tail_mean", "tokens/near_det_frac",
           "tokens/tail_mass", "tokens/logp_p01", "sft/seconds")


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny-table1")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="LLMStudyConfig overrides")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        cfg = get_preset(args.preset, **{**parse_sets(args.set), "warm_start_seed": seed})
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            report = train_warm_start(cfg, Path(tmp) / "model")
        report["wall_s"] = time.time() - t0
        rows.append(report)
        print(f"seed {seed}: " + ", ".join(f"{k.split('/')[-1]}={report[k]:.4g}" for k in COLUMNS), flush=True)
        curve = report["sft/loss_curve"]
        print(f"  SFT loss, mean of every {curve['every']} steps: " + " ".join(f"{x:.3f}" for x in curve["mean"]))
    print("\n| " + " | ".join(c.split("/")[-1] for c in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    cells = []
    for c in COLUMNS:
        xs = [r[c] for r in rows]
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        cells.append(f"{statistics.fmean(xs):.3g} ± {sd:.2g}")
    print("| " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
