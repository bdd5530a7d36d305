"""RL on a small real causal LM with stale-k rollouts: GRPO, M2PO or any registered loss.

Reads in the order it runs: setup (model, tasks, SFT warm start for the tiny model) ->
loop over rollout steps -> per optimizer update: (M2PO mask over the mini-batch) ->
micro-batch forward/backward -> clip -> AdamW -> one metrics line. Stale-k as in the
paper (arXiv 2510.01161, Sec. 3): the rollouts trained at update t were sampled by the
policy of update t - k; the queue holds token ids + behaviour log-probs, never models.

Per step: prompts -> G samples each (temperature 1, no top-k/top-p) -> old_logp with
``token_logprobs`` of the sampling model -> rewards -> ``group_advantages`` -> queue.
Per update (one mini-batch = prompts_per_step / updates_per_step prompts x G):

- mask_scope "minibatch" (paper, Algorithm 1): a no-grad forward over the mini-batch's
  micro-batches gives logp, ``batch_state`` decides M2PO's mask once, every micro-batch
  uses ``slice_state`` of it. "microbatch": each micro-batch decides its own (released code).
- ``aggregate(..., num_tokens=<mini-batch valid tokens>)`` so the accumulated gradient
  equals that of the mini-batch in one piece.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from pathlib import Path
from typing import cast

import torch

from m2po_lab.aggregation import aggregate
from m2po_lab import rundir as rd
from m2po_lab.losses import batch_state, get_loss, slice_state
from m2po_lab.metrics import M2, TOKENS_ZEROED, importance_metrics, masked_mean, merge_parts
from m2po_lab.staleness import StaleQueue

from .config import TrainConfig
from .policy import check_prompts, device_of, evaluate, load_policy, quiet_transformers
from .rollout import batch_bytes, load_tasks, logp_and_entropy, rollout
from .run_dir import RunDir, check_out, histograms, read_run, to_row, zeroed_examples
from .rewards import check_reward_available
from .study_records import AMP_KEY, amplified_examples, amplified_scalars
from .trackers import check_report_to, open_tracker


def _step_generator(seed: int, step: int, call: int) -> torch.Generator:
    """The random stream of rollout ``call`` of rollout step ``step`` (resume-exact)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 4099 + call)


def _combine(per_micro: list[dict], tokens: list[int], seqs: list[int], log_ratio, mask) -> dict[str, torch.Tensor]:
    """Micro-batch loss metrics -> the mini-batch's, by each key's rule (m2po_lab.metrics.SCHEMA).

    Means are weighted by tokens, sequences or candidates; quantiles are recomputed on the
    whole mini-batch's log-ratios, never averaged.
    """
    return merge_parts(per_micro, tokens, seqs, recomputed=importance_metrics(log_ratio, mask))


def train_minibatch(model, optimizer, batch: dict, rows: slice, cfg: TrainConfig, has_state: bool, autocast):
    """One optimizer update on the mini-batch ``rows`` of a rollout batch.

    Returns (scalars: dict of 0-d tensors, tensors: full-mini-batch logp/entropy/zeroed for logging).
    """
    device = next(model.parameters()).device
    loss_fn, lcfg = get_loss(cfg.method), cfg.loss
    mask_cpu = batch["mask"][rows]  # (b, R)
    R = int(mask_cpu.any(0).nonzero().max()) + 1 if mask_cpu.any() else 1  # trim shared padding (CPU)
    P = batch["response_start"]
    ids = batch["input_ids"][rows, : P + R].to(device).long()  # (b, P + R)
    attn = batch["attention_mask"][rows, : P + R].to(device).long()  # (b, P + R)
    mask = mask_cpu[:, :R].to(device)  # (b, R)
    old_logp = batch["old_logp"][rows, :R].to(device)  # (b, R)
    adv = batch["adv"][rows].to(device)  # (b,)
    n_tokens = int(mask_cpu[:, :R].sum())  # mini-batch valid tokens: the token-mean denominator (CPU, no sync)
    micro = [slice(i, i + cfg.micro_batch_size) for i in range(0, ids.shape[0], cfg.micro_batch_size)]
    state = None
    if cfg.mask_scope == "minibatch" and has_state and len(micro) > 1:
        with torch.no_grad(), autocast():  # the extra cost of deciding over the whole mini-batch
            logp_all = torch.cat([logp_and_entropy(model, ids[m], attn[m], P, cfg.temperature)[0] for m in micro])
        state = batch_state(cfg.method, logp_all, old_logp, adv, mask, lcfg)
    optimizer.zero_grad(set_to_none=True)
    loss_sum, per_micro, weights, logps, ents, zeroed = cast("torch.Tensor | float", 0.0), [], [], [], [], []
    for m in micro:
        with autocast():
            logp, entropy = logp_and_entropy(model, ids[m], attn[m], P, cfg.temperature)  # (mb, R) each
        if state is not None:
            st = slice_state(state, m)
        elif cfg.mask_scope == "minibatch" and has_state:  # one micro-batch: it is the mini-batch
            st = batch_state(cfg.method, logp.detach(), old_logp[m], adv[m], mask[m], lcfg)
        else:
            st = {}  # microbatch scope: the loss decides on this micro-batch (released code)
        per_token_loss, metrics, zero = loss_fn(logp, old_logp[m], adv[m], mask[m], cfg=lcfg, with_zeroed=True, **st)
        loss = aggregate(per_token_loss, mask[m], cfg.agg_mode, num_tokens=n_tokens, num_seqs=ids.shape[0])
        loss.backward()
        zeroed.append(zero & (adv[m, None] != 0))  # the tokens the loss zeroed (A = 0 has no gradient anyway)
        loss_sum = loss_sum + loss.detach()
        per_micro.append(metrics)
        weights.append(int(mask_cpu[m, :R].sum()))
        logps.append(logp.detach())
        ents.append(entropy)
    clip = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    logp_all, ent_all = torch.cat(logps), torch.cat(ents)  # (b, R)
    if state is not None:  # exact mini-batch metrics of the mask that was applied
        metrics = loss_fn(logp_all, old_logp, adv, mask, cfg=lcfg, **state)[1]
    else:
        seqs = [int(mask_cpu[m, :R].any(-1).sum()) for m in micro]
        metrics = _combine(per_micro, weights, seqs, logp_all - old_logp, mask)
    log_ratio = torch.where(mask, logp_all - old_logp, torch.zeros_like(logp_all))  # (b, R)
    scalars = {
        "loss": loss_sum, "entropy": masked_mean(ent_all, mask), "grad_norm": grad_norm.float(),
        "response_len": mask.sum(-1).float().mean(),
        **metrics,
    }
    tensors = dict(ids=ids, response_start=P, mask=mask, log_ratio=log_ratio, entropy=ent_all,
                   zeroed=torch.cat(zeroed), adv=adv)
    return scalars, tensors


def train(cfg: TrainConfig, out_dir, *, resume: bool = False, progress: bool = True) -> dict:
    """Run (or resume) one RL run into ``out_dir`` (docs/run_format.md); returns the summary.

    Everything that can be checked is checked before OUT is written: the config, the
    device, the data, the model (when ``cfg.model`` is given) and the prompt lengths.
    """
    torch.set_num_threads(cfg.threads)
    device = device_of(cfg.device)
    check_out(Path(out_dir), resume)  # a wrong OUT fails before any model is loaded
    check_reward_available(cfg.reward_mode)  # optional extras (math-verify, a tracker) before OUT is written
    check_report_to(cfg.report_to)
    use_bf16 = cfg.bf16 and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    with quiet_transformers():  # the SFT and RL bars show progress; transformers' own bars stay off
        task, eval_set = load_tasks(cfg, progress)  # bad data / model / prompt lengths fail before OUT is written
        loaded = load_policy(cfg, None, task, device) if cfg.model is not None else None
        if loaded is not None:
            check_prompts(loaded[1], loaded[0], cfg, task, eval_set)
        with RunDir(out_dir, cfg.to_dict(), resume, device=str(device)) as run:
            model, tok, sft = loaded if loaded is not None else load_policy(cfg, run, task, device, progress)
            if run.meta.get("start") is None:
                run.meta["start"] = {**sft, **evaluate(model, tok, cfg, eval_set, autocast)}
                run.write_meta()
            return _rl(cfg, run, model, tok, task, eval_set, autocast, progress)


def _update_row(cfg: TrainConfig, tok, update: int, staleness: int, reward: float, scalars: dict,
                tensors: dict) -> dict:
    """One update's metrics line: the scalars (one host sync), the zeroed tokens, and every
    ``hist_every`` updates the log-ratio histograms and the amplified tokens (docs/metrics.md)."""
    scalars = {**scalars, **amplified_scalars(tensors["mask"], tensors["zeroed"], tensors["log_ratio"],
                                              tensors["adv"])}
    row = {"update": update, "staleness": staleness, "reward": reward, **to_row(scalars)}  # one host sync
    examples = zeroed_examples(tok, tensors["ids"], tensors["response_start"], tensors["zeroed"], tensors["log_ratio"])
    if examples:
        row[TOKENS_ZEROED] = examples
    if update % cfg.hist_every == 0 or update == cfg.updates - 1:
        row.update(histograms(tensors["log_ratio"], tensors["entropy"], tensors["mask"]))
        amplified = amplified_examples(tok, tensors["ids"], tensors["response_start"], tensors["mask"],
                                       tensors["zeroed"], tensors["log_ratio"], tensors["adv"])
        if amplified:
            row[AMP_KEY] = amplified
    return row


def make_optimizer(cfg: TrainConfig, model) -> torch.optim.Optimizer:
    """The RL optimizer: AdamW (the paper's), or plain SGD to see what Adam's per-parameter normalisation does."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _rl(cfg: TrainConfig, run: RunDir, model, tok, task, eval_set, autocast, progress: bool) -> dict:
    """The RL loop: rollout steps through the stale queue, U updates each, one metrics line per update."""
    model.train()
    optimizer = make_optimizer(cfg, model)
    U = cfg.updates_per_step
    queue: StaleQueue[dict] = StaleQueue(cfg.staleness // U)  # in rollout steps of U updates
    zero = torch.zeros(1, 1)
    has_state = bool(batch_state(cfg.method, zero, zero, torch.zeros(1), zero.bool()))
    update, wall_before = _restore(run, model, optimizer, queue)
    run.open_metrics(update)
    tracker = open_tracker(cfg.report_to, run.out, cfg.to_dict(), run.out.name, start_update=update)
    last_ckpt, mb = update, cfg.minibatch_size
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.updates, initial=update, desc=f"train-llm {cfg.method} s={cfg.staleness}", unit="upd")
    t_start, last_eval, bytes_per_seq = time.time(), dict(run.meta["start"]), 0.0
    try:
        while update < cfg.updates:
            step, calls = update // U, itertools.count()
            stale = queue.next(update, lambda: rollout(model, tok, task, cfg, _step_generator(cfg.seed, step, next(calls)),
                                                       autocast))
            batch = stale.batch
            bytes_per_seq = batch_bytes(batch) / batch["mask"].shape[0]
            for j in range(U):
                if update >= cfg.updates:
                    break
                t0 = time.time()
                rows = slice(j * mb, (j + 1) * mb)
                scalars, tensors = train_minibatch(model, optimizer, batch, rows, cfg, has_state, autocast)
                row = _update_row(cfg, tok, update, stale.staleness + j, float(batch["reward"][rows].mean()),
                                  scalars, tensors)
                if (update + 1) % cfg.eval_every == 0 or update == cfg.updates - 1:
                    model.eval()
                    last_eval = evaluate(model, tok, cfg, eval_set, autocast)
                    model.train()
                    row.update(last_eval)
                row["queue/bytes_per_seq"] = bytes_per_seq
                row["queue/bytes"] = bytes_per_seq * batch["mask"].shape[0] * (len(queue) + 1)
                row["time/update_s"] = time.time() - t0
                run.write(row)
                tracker.log(row, step=update)
                update += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(reward=f"{row['reward']:.3f}", m2=f"{row[M2]:.4f}",
                                    zeroed=f"{row['clip/frac']:.4f}")
            if cfg.checkpoint_every and update - last_ckpt >= cfg.checkpoint_every and update < cfg.updates:
                _checkpoint(run, model, optimizer, queue, update, wall_before + time.time() - t_start)
                last_ckpt = update
    finally:
        tracker.close()
        if bar is not None:
            bar.close()
    summary = {"start": run.meta["start"], "final": last_eval, "wall_s": wall_before + time.time() - t_start,
               "updates": update, "bytes_per_queued_seq": bytes_per_seq}
    run.finish(summary)
    return summary


def _restore(run: RunDir, model, optimizer, queue) -> tuple[int, float]:
    """Load the run's checkpoint, if any, into model, optimizer, queue and torch's RNG: (update, wall_s so far)."""
    ckpt = run.load_checkpoint()
    if ckpt is None:
        return 0, 0.0
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    queue.load_state_dict(ckpt["queue"])
    torch.set_rng_state(ckpt["rng"])
    return int(ckpt["update"]), float(ckpt.get("wall_s", 0.0))


def _checkpoint(run: RunDir, model, optimizer, queue, update: int, wall_s: float) -> None:
    """Everything a resume needs to continue bit-for-bit from ``update`` (see :func:`_restore`)."""
    run.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "queue": queue.state_dict(),
                         "rng": torch.get_rng_state(), "update": update, "wall_s": wall_s})


def resume(out_dir, progress: bool = True) -> dict:
    """Continue the unfinished run in ``out_dir`` from its last checkpoint (same config)."""
    meta = read_run(out_dir)
    if "summary" in meta:
        raise rd.RunDirError(f"resume: the run in {str(out_dir)!r} has finished ({meta['summary'].get('updates')} updates)")
    try:
        cfg = TrainConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as err:
        raise rd.RunDirError(f"resume: the config in {str(Path(out_dir) / rd.CONFIG)!r} is not valid ({err})") from None
    return train(cfg, out_dir, resume=True, progress=progress)
