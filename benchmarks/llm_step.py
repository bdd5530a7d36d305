"""Time per optimizer update of the LLM trainer: m2po vs grpo, and the cost of mini-batch scope.

Same tiny model, same stale-looking rollout batch, same micro-batching; every variant is
timed in this one run (interleaved repeats, median), so the ratios compare like with like:

- m2po (mask_scope="microbatch", the released code's scope) / grpo: the cost of M2PO's
  sort + cumsum per micro-batch (target <= 1.05x);
- m2po (mask_scope="minibatch", paper Algorithm 1) / m2po microbatch: the extra no-grad
  forward over the mini-batch that decides the mask once.

    python benchmarks/llm_step.py --threads 1 --hidden 128 --rows 256 --micro 64
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time

import torch

from m2po_lab.llm.config import TrainConfig
from m2po_lab.llm.models import build_tiny_model, load_model_and_tokenizer
from m2po_lab.llm.rollout import load_tasks, rollout
from m2po_lab.llm.trainer import train_minibatch

VARIANTS = (("grpo", "microbatch"), ("m2po", "microbatch"), ("m2po", "minibatch"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--hidden", type=int, default=128, help="tiny model width")
    ap.add_argument("--layers", type=int, default=2, help="tiny model depth")
    ap.add_argument("--rows", type=int, default=256, help="sequences per mini-batch (one update)")
    ap.add_argument("--micro", type=int, default=64, help="micro-batch size")
    ap.add_argument("--digits", type=int, default=3, help="arith operand digits (sets the response length)")
    ap.add_argument("--repeats", type=int, default=7, help="timed updates per variant (median reported)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    null = contextlib.nullcontext
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_model(tmp, hidden=args.hidden, layers=args.layers)
        model, tok = load_model_and_tokenizer(path)
        base = TrainConfig(model=str(path), n_digits=args.digits, prompts_per_step=args.rows // 8, group_size=8,
                           updates_per_step=1, micro_batch_size=args.micro, max_new_tokens=2 * args.digits + 2,
                           device="cpu")
        task, _ = load_tasks(base)
        batch = rollout(model, tok, task, base, torch.Generator().manual_seed(0), null)
        g = torch.Generator().manual_seed(1)  # stale-looking: perturbed behaviour log-probs, random advantages
        batch["old_logp"] = batch["old_logp"] + 0.3 * torch.randn(batch["old_logp"].shape, generator=g)
        batch["adv"] = torch.randn(batch["adv"].shape, generator=g)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        tokens = int(batch["attention_mask"].sum())
        times = {v: [] for v in VARIANTS}
        for rep in range(args.repeats + 1):  # first round = warm-up, discarded
            for loss, scope in VARIANTS:
                cfg = TrainConfig(**{**base.to_dict(), "method": loss, "mask_scope": scope})
                model.load_state_dict(state)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-9)
                t0 = time.perf_counter()
                train_minibatch(model.train(), opt, batch, slice(0, args.rows), cfg, loss == "m2po", null)
                if rep:
                    times[(loss, scope)].append(time.perf_counter() - t0)
    med = {v: statistics.median(t) for v, t in times.items()}
    ref = med[("grpo", "microbatch")]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny Qwen2 {n_params / 1e6:.2f}M params, {args.rows} seqs/update, micro {args.micro}, "
          f"{tokens} tokens (prompt+response), threads {args.threads}, median of {args.repeats}")
    print(f"{'loss':6s} {'scope':11s} {'s/update':>9s} {'tokens/s':>9s} {'vs grpo':>8s}")
    for (loss, scope), t in med.items():
        print(f"{loss:6s} {scope:11s} {t:9.4f} {tokens / t:9.0f} {t / ref:7.3f}x")
    mini, micro = med[("m2po", "minibatch")], med[("m2po", "microbatch")]
    print(f"m2po microbatch / grpo = {micro / ref:.3f}x (target <= 1.05x); "
          f"minibatch scope extra = {mini / micro:.3f}x of microbatch scope")


if __name__ == "__main__":
    main()
