"""The three published M2PO rules on the same batches: the table in docs/choosing_a_method.md.

    python experiments/three_rules.py

Seeded synthetic batches (``m2po_lab.explorer.synthetic``: 4000 tokens, half with A > 0)
through ``m2po_lab.explorer.weights.three_rules`` at tau 0.04: tokens zeroed, M2 of the
candidates left, gradient norm of the token-mean loss. Seconds; deterministic.
"""

from __future__ import annotations

from m2po_lab.explorer.synthetic import synthetic_log_ratios
from m2po_lab.explorer.weights import three_rules

BATCHES = (
    ("log r ~ 0.1 t(3) (mildly stale)", dict(kind="student_t", scale=0.1, dof=3)),
    ("log r ~ 0.3 t(2) (heavy tails)", dict(kind="student_t", scale=0.3, dof=2)),
    ("log r ~ N(0, 0.2^2)", dict(kind="gaussian", scale=0.2)),
)


def main() -> None:
    print("| batch | rule | tokens zeroed | M2 after | grad norm |")
    print("|---|---|---|---|---|")
    for label, kw in BATCHES:
        log_ratio, adv, mask = synthetic_log_ratios(4000, seed=0, **kw)
        for row in three_rules(log_ratio, adv, mask, tau=0.04):
            print(f"| {label} | `{row['rule']}` | {row['tokens zeroed']} ({100 * row['zeroed frac']:.2f}%) | "
                  f"{row['M2 after']:.4f} | {row['grad norm']:.4f} |")


if __name__ == "__main__":
    main()
