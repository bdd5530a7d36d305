"""GPU check: CUDA results equal CPU results, the masking solvers on the device, LLM tokens/s at 0.5B.

    bash benchmarks/gpu_check.sh                 # one CUDA GPU, < 8 minutes, no download
    python benchmarks/gpu_check.py --device cpu --quick   # the same code on a CPU, seconds (a smoke test)

Three tables, printed as they finish:

1. **Parity.** Every registered loss on the same float32 (and bf16) inputs on the CPU and
   on the device: the largest difference of per-token loss, gradient and every metric,
   and whether M2PO's mask (its kept tokens) is identical. bf16 inputs are widened to
   float32 inside the losses, so their masks must match exactly too.
2. **Solvers on the device.** ``m2po_keep_mask`` against one stable sort of the same
   candidates (the floor) and a per-token walk with a host read per step (the released
   code's style; up to 1e6 tokens), heavy-tailed log-ratios as in benchmarks/masking.py,
   at 1e5-1e7 tokens; every timing ends with a device synchronisation.
3. **The LLM trainer's update** (``m2po_lab.llm.trainer.train_minibatch``) on a model of
   the Qwen2.5-0.5B architecture built from its config with random weights (no
   download), bf16 autocast: GRPO, M2PO per micro-batch and M2PO over the mini-batch;
   seconds per update and tokens/s.

Nothing here is a test: the suite never needs a GPU. Put the printed tables in the note.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/masking.py's batch and walk

from masking import make_batch, per_token_walk  # noqa: E402

from m2po_lab.losses import LOSSES, LossConfig, get_loss  # noqa: E402
from m2po_lab.masking import m2po_keep_mask, trust_region_candidates  # noqa: E402

QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=True)
"""The Qwen2.5-0.5B architecture (its published config.json), built with random weights."""
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=512, max_position_embeddings=512, tie_word_embeddings=True)
"""``--quick``: a model that runs in seconds on a CPU."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int) -> float:
    fn()  # warm-up (kernels, allocator)
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _loss_inputs(seed: int, B: int = 16, T: int = 48):
    g = torch.Generator().manual_seed(seed)
    old = -3 * torch.rand(B, T, generator=g)
    logp = old + 0.4 * torch.randn(B, T, generator=g)  # stale enough for every mask and clip to act
    adv = torch.randn(B, generator=g)
    mask = torch.rand(B, T, generator=g) > 0.2
    prox = old + 0.5 * (logp - old)
    return logp, old, adv, mask, prox


def _run_loss(name, logp, old, adv, mask, prox, device, dtype):
    x = logp.to(device, dtype).requires_grad_()
    extra = {"prox_logp": prox.to(device, dtype)} if name == "m2po_areal" else {}
    per_token, metrics = get_loss(name)(x, old.to(device, dtype), adv.to(device, dtype), mask.to(device),
                                        LossConfig(tau=0.02), **extra)
    (grad,) = torch.autograd.grad(per_token.float().sum(), x)
    return per_token.detach().float().cpu(), grad.float().cpu(), {k: v.detach().float().cpu() for k, v in metrics.items()}


def parity(device: torch.device) -> bool:
    print(f"\n1. parity: every loss, CPU vs {device} (largest |difference|; mask: M2PO's kept tokens identical)")
    print(f"{'loss':15s} {'dtype':9s} {'loss':>10s} {'grad':>10s} {'metrics':>10s} {'mask':>6s}")
    ok = True
    for name in sorted(LOSSES):
        for dtype in (torch.float32, torch.bfloat16):
            worst = [0.0, 0.0, 0.0]
            same_mask = True
            for seed in range(3):
                inputs = _loss_inputs(seed)
                a = _run_loss(name, *inputs, torch.device("cpu"), dtype)
                b = _run_loss(name, *inputs, device, dtype)
                worst[0] = max(worst[0], float((a[0] - b[0]).abs().max()))
                worst[1] = max(worst[1], float((a[1] - b[1]).abs().max()))
                worst[2] = max(worst[2], max((float((a[2][k] - b[2][k]).abs().nan_to_num(0.0)) for k in a[2]),
                                             default=0.0))
                if name == "m2po":
                    lr = (inputs[0].to(dtype).float() - inputs[1].to(dtype).float())
                    keep_a = m2po_keep_mask(lr, inputs[2], inputs[3], 0.02)
                    keep_b = m2po_keep_mask(lr.to(device), inputs[2].to(device), inputs[3].to(device), 0.02).cpu()
                    same_mask &= bool(torch.equal(keep_a, keep_b))
            tol = 1e-4 if dtype == torch.float32 else 2e-2
            row_ok = max(worst) <= tol and same_mask
            ok &= row_ok
            print(f"{name:15s} {str(dtype)[6:]:9s} {worst[0]:10.2e} {worst[1]:10.2e} {worst[2]:10.2e} "
                  f"{'same' if same_mask else 'DIFF':>6s}{'' if row_ok else '  <- above tolerance'}")
    return ok


def solvers(device: torch.device, sizes: list[float], repeats: int) -> None:
    print(f"\n2. solvers on {device} (median of {repeats}, synchronised), tau 0.04")
    print(f"{'tokens':>8s} {'masked%':>8s} {'keep_mask':>10s} {'sort(cand)':>11s} {'walk':>9s} {'keep/sort':>10s} "
          f"{'walk/keep':>10s}")
    for n in sizes:
        log_ratio, adv, mask = (t.to(device) for t in make_batch(int(n)))
        cand = trust_region_candidates(log_ratio, adv, mask)
        keep = m2po_keep_mask(log_ratio, adv, mask, 0.04)
        t_keep = _timed(lambda: m2po_keep_mask(log_ratio, adv, mask, 0.04), device, repeats)
        t_sort = _timed(lambda: torch.sort(log_ratio[cand].square(), stable=True), device, repeats)
        t_walk = (_timed(lambda: per_token_walk(log_ratio, adv, mask, 0.04), device, 1) if n <= 1e6
                  else float("nan"))
        masked = 100 * float((mask & ~keep).sum()) / float(mask.sum())
        print(f"{n:8.0e} {masked:8.3f} {1e3 * t_keep:8.2f}ms {1e3 * t_sort:9.2f}ms {t_walk:8.3f}s "
              f"{t_keep / t_sort:10.2f} {t_walk / t_keep:10.0f}")


def llm_update(device: torch.device, quick: bool, repeats: int) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from m2po_lab.llm.config import TrainConfig
    from m2po_lab.llm.trainer import train_minibatch

    arch = TINY if quick else QWEN25_05B
    rows, prompt, response, micro = (16, 16, 32, 8) if quick else (64, 128, 512, 8)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**arch)).to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, arch["vocab_size"], (rows, prompt + response), generator=g)
    lengths = torch.randint(response // 2, response + 1, (rows,), generator=g)
    mask = torch.arange(response)[None] < lengths[:, None]  # (rows, response)
    attn = torch.cat([torch.ones(rows, prompt, dtype=torch.long), mask.long()], 1)
    batch = dict(input_ids=ids, attention_mask=attn, response_start=prompt, mask=mask,
                 old_logp=-torch.rand(rows, response, generator=g) * 4 - 8, adv=torch.randn(rows, generator=g))
    use_bf16 = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    tokens = int(attn.sum())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-12)
    print(f"\n3. one LLM update on {device}: {'tiny' if quick else 'Qwen2.5-0.5B architecture'} "
          f"({n_params / 1e6:.1f}M params, random weights){', bf16 autocast' if use_bf16 else ''}; "
          f"{rows} sequences x ({prompt} prompt + <= {response} response), micro-batch {micro}; median of {repeats}")
    print(f"{'loss':6s} {'scope':11s} {'s/update':>9s} {'tokens/s':>10s} {'vs grpo':>8s}")
    ref = None
    for method, scope in (("grpo", "microbatch"), ("m2po", "microbatch"), ("m2po", "minibatch")):
        cfg = TrainConfig(model="random-weights", method=method, mask_scope=scope, prompts_per_step=rows // 8,
                          group_size=8, updates_per_step=1, micro_batch_size=micro, device=str(device))
        t = _timed(lambda: train_minibatch(model, opt, batch, slice(0, rows), cfg, method == "m2po", autocast),
                   device, repeats)
        ref = ref or t
        print(f"{method:6s} {scope:11s} {t:9.3f} {tokens / t:10.0f} {t / ref:7.3f}x")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="'cuda', 'cuda:N' or 'cpu' (cpu: a smoke test of this script)")
    ap.add_argument("--quick", action="store_true", help="small sizes and a tiny model (seconds on a CPU)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device (torch.cuda.is_available() is False); --device cpu runs the "
              "script's code on the CPU", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu_check: torch {torch.__version__}, {name}")
    t0 = time.time()
    ok = parity(device)
    solvers(device, [1e4, 1e5] if args.quick else [1e5, 1e6, 1e7], 2 if args.quick else args.repeats)
    llm_update(device, args.quick, 2 if args.quick else args.repeats)
    print(f"\ngpu_check: {time.time() - t0:.0f} s; parity {'held' if ok else 'NOT held'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
