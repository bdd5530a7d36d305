"""A one-seed scan of the four runs that decide phenomenon 2: GRPO at s=0, and GRPO, M2PO, no_tr at s=256.

    python experiments/llm_staleness/scan.py --out DIR [--warm-start-from STUDY] [--seeds 0] [study-llm options ...]

Two studies share one warm start: ``DIR/s0`` (grpo at staleness 0) and ``DIR/s256``
(grpo, m2po, no_tr at staleness 256; ``--staleness`` is not accepted, the pair is fixed),
so a scan costs 4 runs instead of the full grid's 6. Every other option goes to
``m2po-lab study-llm`` (``--lr``, ``--carry-drop``, ``--extra-tokens``, ...). Prints the
analysis of ``analyze.py`` for both. About 4-6 minutes on this 2-core machine plus the
warm start (~4 min) unless ``--warm-start-from`` names a study with the same warm start.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from m2po_lab.llm.cli import study_llm_main
from m2po_lab.llm.study_warmstart import WARM_DIR

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--warm-start-from", default=None, metavar="STUDY")
    p.add_argument("--seeds", nargs="+", default=["0"])
    args, rest = p.parse_known_args()
    out = Path(args.out)
    t0 = time.time()
    plan = [("s256", ["--methods", "grpo", "m2po", "no_tr", "--staleness", "256"]),
            ("s0", ["--methods", "grpo", "--staleness", "0"])]
    source = Path(args.warm_start_from) if args.warm_start_from else None
    for name, cells in plan:
        d = out / name
        if source is not None and not (d / WARM_DIR).exists():
            d.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source / WARM_DIR, d / WARM_DIR)
        rc = study_llm_main([*rest, *cells, "--seeds", *args.seeds, "--workers", "2", "--no-progress",
                             "--out", str(d)])
        if rc:
            return rc
        source = d
    print(f"scan.py: {out}: {time.time() - t0:.0f} s", flush=True)
    for name, _ in plan:
        subprocess.run([sys.executable, str(HERE / "analyze.py"), str(out / name)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
