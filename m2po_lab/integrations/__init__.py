"""Adapters that run m2po-lab's policy losses inside the engines users grow into.

- :mod:`m2po_lab.integrations.trl`: ``M2POGRPOTrainer``, a TRL ``GRPOTrainer`` subclass
  (extra ``m2po-lab[trl]``).
- :mod:`m2po_lab.integrations.verl`: ``m2po`` and ``m2po_released`` registered as verl
  policy losses, loaded on every Ray worker through the ``verl.plugins`` entry point
  (extra ``m2po-lab[verl]``; keep it in its own environment, apart from ``[trl]``).

Nothing is imported here: each adapter imports its engine and fails with an
``ImportError`` naming the extra when the engine is missing. See docs/engines.md.
"""
