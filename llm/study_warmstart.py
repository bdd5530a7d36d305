"""The LLM study's warm start: one tiny model, supervised once per study, the RL start of every run.

``STUDY/warm_start/model/`` holds the weights (``save_pretrained``) and
``STUDY/warm_start/report.json`` what it was trained with and how good it is; the report
is written last (atomically), so its presence marks a finished warm start. A study that
finds a finished warm start with the same settings reuses it; one interrupted mid-way is
trained again from its seed (the same weights on the same machine).

The teacher forgets each carry with probability ``carry_drop`` (``tasks.drop_carries``),
so the warm start converges to a *distribution*: near-deterministic on every token but
the carried digits, which it writes right with probability about 1 - carry_drop. Trained
long enough, that distribution is fixed by the data, not by where in the loss curve the
training stopped (docs/llm.md: the spread over seeds is measured).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from m2po_lab import rundir as rd

from .models import build_tiny_model, generate, load_model_and_tokenizer
from .sft import complete, score_texts, sft_warm_start
from .tasks import ArithmeticTask, carry_sum, get_reward

WARM_DIR, WARM_REPORT = "warm_start", "report.json"
EVAL_SEED = 12345
"""Held-out prompts and sampling of the warm-start report (the same for every study)."""
FIELDS = ("n_digits", "little_endian", "fixed_width", "hidden", "layers", "heads", "extra_tokens", "warm_start_steps",
          "warm_start_lr", "warm_start_batch", "warm_start_seed", "carry_drop", "marked_frac", "label_smoothing", "device")
"""The study fields the warm start depends on (a study with other values trains its own)."""


def warm_start_fields(cfg) -> dict:
    return {k: getattr(cfg, k) for k in FIELDS}


def ensure_warm_start(cfg, study_dir, progress: bool = False) -> tuple[Path, dict]:
    """(model directory, report) of the study's warm start: reused when finished with these settings, else trained."""
    d = Path(study_dir) / WARM_DIR
    report_path = d / WARM_REPORT
    if report_path.exists():
        report = rd.read_json(report_path, "warm-start report")
        if report.get("config") == warm_start_fields(cfg) and (d / "model" / "config.json").exists():
            return d / "model", report
        raise rd.RunDirError(f"{str(report_path)!r} was trained with other settings; use a new --out")
    if d.exists():
        shutil.rmtree(d)  # an interrupted warm start: train it again from its seed
    d.mkdir(parents=True)
    report = train_warm_start(cfg, d / "model", progress)
    check_warm_start(cfg, report)  # before the report marks it finished: a refused start is never reused
    rd.write_json(report_path, report)
    return d / "model", report


class WarmStartFailed(ValueError):
    """The warm start did not learn what its teacher teaches; no run may start from it."""


def check_warm_start(cfg, report: dict) -> None:
    """Refuse a warm start stuck on the SFT plateau (``cfg.warm_start_min_acc``; docs/llm.md).

    The 3000-step warm start leaves a loss plateau near 1.45 (the model writes digits
    without reading the prompt) after 800-1200 steps on some seeds and never on others;
    stuck, it writes even the sums without a carry wrong, and every run would train from
    a policy with nothing to build on.
    """
    acc = report.get("start/acc_greedy_no_carry")
    if acc is None or not cfg.warm_start_min_acc or acc >= cfg.warm_start_min_acc:
        return
    raise WarmStartFailed(
        f"the warm start (warm_start_seed={cfg.warm_start_seed}, {cfg.warm_start_steps} steps) did not leave the SFT "
        f"loss plateau: greedy accuracy {acc:.3f} on sums without a carry (needs >= {cfg.warm_start_min_acc}), final "
        f"SFT loss {report.get('sft/loss_tail_mean', float('nan')):.3f}; no run was trained. Run again with another "
        "--warm-start-seed or more --warm-start-steps"
    )


def train_warm_start(cfg, model_dir, progress: bool = False) -> dict:
    """Build the tiny model, supervise it on the carry-dropping teacher, save it; the report (plain numbers)."""
    device = torch.device(cfg.device)
    build_tiny_model(model_dir, hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads, seed=cfg.warm_start_seed,
                     extra_tokens=cfg.extra_tokens, max_positions=64)
    model, tok = load_model_and_tokenizer(model_dir, device=device, local_files_only=True)
    task = ArithmeticTask(n_digits=cfg.n_digits, seed=cfg.warm_start_seed, little_endian=cfg.little_endian,
                          fixed_width=cfg.fixed_width)
    sft = sft_warm_start(model, tok, task, steps=cfg.warm_start_steps, lr=cfg.warm_start_lr,
                         batch_size=cfg.warm_start_batch, seed=cfg.warm_start_seed, eval_size=0,
                         marked_frac=cfg.marked_frac, carry_drop=cfg.carry_drop, label_smoothing=cfg.label_smoothing,
                         progress=progress)
    model.save_pretrained(str(model_dir))
    stats = warm_start_stats(model, tok, cfg)
    losses = sft.pop("sft/losses")
    if not isinstance(losses, list):  # sft_warm_start reports every step's loss as a list
        raise TypeError(f"sft_warm_start: 'sft/losses' is a {type(losses).__name__}, expected a list")
    tail = losses[-max(1, len(losses) // 20):]
    every = max(1, len(losses) // 20)
    curve = [sum(losses[i:i + every]) / len(losses[i:i + every]) for i in range(0, len(losses), every)]
    return {"config": warm_start_fields(cfg), "vocab_size": len(tok),
            "parameters": sum(p.numel() for p in model.parameters()),
            **{k: rd.json_number(v) for k, v in sft.items()}, "sft/loss_tail_mean": sum(tail) / len(tail),
            "sft/loss_curve": {"every": every, "mean": curve}, **stats}


def has_carry(prompt: str, task: ArithmeticTask) -> bool:
    """True if the addition ``"a+b="`` (written as ``task`` writes numbers) needs at least one carry."""
    a, b = (task.read(x) for x in prompt.rstrip("=").split("+"))
    return carry_sum(a, b, [True] * 16) != str(a + b)


@torch.no_grad()
def warm_start_stats(model, tok, cfg, n: int = 512) -> dict:
    """Accuracy (greedy, sampled; sums with and without a carry) and token statistics of sampled responses.

    ``tokens/near_det_frac``: share of sampled response tokens where the policy's top
    probability is >= 0.99; ``tokens/tail_mass``: mean probability outside the two most
    likely tokens; ``tokens/logp_p01``: 1st percentile of the sampled tokens' log-probs
    (how rare the rare samples are).
    """
    model.eval()
    task = ArithmeticTask(n_digits=cfg.n_digits, little_endian=cfg.little_endian, fixed_width=cfg.fixed_width)
    pairs = task.sample(n, torch.Generator().manual_seed(EVAL_SEED))
    prompts, answers = [p for p, _ in pairs], [a for _, a in pairs]
    score = get_reward(cfg.reward_mode)
    out = {}
    for key, greedy in (("acc_greedy", True), ("acc_sampled", False)):
        texts = complete(model, tok, prompts, greedy=greedy, max_new_tokens=cfg.max_new_tokens,
                         temperature=cfg.temperature, seed=EVAL_SEED)
        out[f"start/{key}"] = score_texts(texts, answers, score)
        for name, want in (("carry", True), ("no_carry", False)):
            idx = [i for i, p in enumerate(prompts) if has_carry(p, task) == want]
            out[f"start/{key}_{name}"] = score_texts([texts[i] for i in idx], [answers[i] for i in idx], score)
    device = next(model.parameters()).device
    enc = tok(prompts, padding=True, return_tensors="pt").to(device)
    resp, mask = generate(model, tok, enc["input_ids"], enc["attention_mask"], cfg.max_new_tokens,
                          temperature=cfg.temperature, seed=EVAL_SEED)  # (n, R) x2
    ids = torch.cat([enc["input_ids"], resp], 1)
    attn = torch.cat([enc["attention_mask"].bool(), mask], 1).long()
    from .models import position_ids_from_mask

    logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn), use_cache=False,
                   logits_to_keep=resp.shape[1] + 1).logits[:, :-1].float() / cfg.temperature  # (n, R, V)
    probs = torch.softmax(logits, -1)
    top2 = probs.topk(2, -1).values  # (n, R, 2)
    logp = torch.log_softmax(logits, -1).gather(-1, resp.unsqueeze(-1)).squeeze(-1)  # (n, R)
    m = mask
    out["tokens/near_det_frac"] = float((top2[..., 0] >= 0.99)[m].float().mean())
    out["tokens/tail_mass"] = float((1 - top2.sum(-1))[m].mean())
    out["tokens/logp_p01"] = float(torch.quantile(logp[m], 0.01))
    out["tokens/response_len"] = float(m.sum(-1).float().mean())
    return out
