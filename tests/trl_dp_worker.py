"""One data-parallel rank of M2POGRPOTrainer (run by tests/test_integration_trl_dp.py under torchrun, CPU, gloo).

Trains two optimizer steps on a tiny local model and saves, per micro-batch, what the
loss saw and decided (``rank<r>.pt``), and rank 0 saves TRL's log history (``log.json``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(model_dir: str, out_dir: str) -> None:
    import datasets
    from trl import GRPOConfig

    from m2po_lab.integrations.trl import M2POGRPOTrainer, PolicyLossArgs
    from m2po_lab.llm.models import load_model_and_tokenizer
    from m2po_lab.losses import LossConfig

    torch.set_num_threads(1)

    class Spy(M2POGRPOTrainer):
        def _loss_state(self, model, inputs, logp, old_logp, adv, mask):
            out = super()._loss_state(model, inputs, logp, old_logp, adv, mask)
            self.seen.append(dict(step=self._step, logp=logp.detach().clone(), old_logp=old_logp.detach().clone(),
                                  adv=adv.detach().clone(), mask=mask.clone(), keep=out[0]["keep"].clone()))
            return out

    out = Path(out_dir)
    args = GRPOConfig(output_dir=str(out / "trl"), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, max_steps=2, learning_rate=3e-2, logging_steps=1, report_to="none",
                      save_strategy="no", use_cpu=True, seed=0, gradient_accumulation_steps=2, steps_per_generation=4)
    model, tok = load_model_and_tokenizer(model_dir, local_files_only=True)
    model.train()
    data = datasets.Dataset.from_dict({"prompt": [f"{a}+{b}=" for a in range(4) for b in range(4)]})

    def reward(completions, **kwargs):
        return [float(sum(map(ord, c)) % 7) for c in completions]

    trainer = Spy(model, reward, args=args, train_dataset=data, processing_class=tok,
                  policy_loss=PolicyLossArgs(loss="m2po", loss_config=LossConfig(tau=1e-3)))
    trainer.seen = []
    trainer.train()
    rank = trainer.accelerator.process_index
    torch.save({"seen": trainer.seen, "world": trainer.accelerator.num_processes,
                "window_scope": trainer._window_scope}, out / f"rank{rank}.pt")
    if rank == 0:
        (out / "log.json").write_text(json.dumps(trainer.state.log_history))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
