"""One LLM staleness study (``m2po-lab study-llm``), optionally reusing another study's warm start.

    python experiments/llm_staleness/run.py --out DIR [--warm-start-from STUDY] [study-llm options ...]

Every option after ``--out`` / ``--warm-start-from`` is passed to ``m2po-lab study-llm``
unchanged (``--preset``, ``--methods``, ``--lr``, ``--workers``, ...). With
``--warm-start-from``, ``STUDY/warm_start/`` is copied into ``DIR`` first: the study
then reuses it (its settings must be the same; the study checks) instead of training its
own, so experiments that differ only in RL settings start from the same weights.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from m2po_lab.llm.cli import study_llm_main
from m2po_lab.llm.study_warmstart import WARM_DIR


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--warm-start-from", default=None, metavar="STUDY")
    args, rest = p.parse_known_args()
    out = Path(args.out)
    if args.warm_start_from and not (out / WARM_DIR).exists():
        src = Path(args.warm_start_from) / WARM_DIR
        if not (src / "report.json").exists():
            print(f"run.py: error: {str(src)!r} holds no finished warm start", file=sys.stderr)
            return 2
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, out / WARM_DIR)
    t0 = time.time()
    rc = study_llm_main([*rest, "--out", str(out)])
    print(f"run.py: {out}: exit {rc}, {time.time() - t0:.0f} s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
