"""The LLM trainer's setup and evaluation: the device, the policy (loaded, or the tiny model built and
warm-started), the prompt-length check and held-out accuracy under the run's reward."""

from __future__ import annotations

import contextlib

from pathlib import Path

import torch

from m2po_lab import rundir as rd

from .config import TrainConfig
from .models import build_tiny_model, load_model_and_tokenizer
from .rollout import encode_prompts, format_prompt, model_context, uses_chat_template
from .run_dir import RunDir
from .sft import complete, score_texts, sft_warm_start
from .tasks import get_reward, reward


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available")
    return torch.device(name)


def load_policy(cfg: TrainConfig, run: RunDir | None, task, device, progress: bool = False):
    """The policy and tokenizer: ``cfg.model`` (run None: before OUT is touched), or the tiny model in OUT/model.

    The tiny model is built and warm-started once (then saved as the RL start);
    returns (model, tokenizer, warm-start report -- {} unless the warm start ran now).
    """
    sft = {}
    if cfg.model is not None:
        model, tok = _load(cfg.model, device, "model")
    else:
        if run is None:
            raise ValueError("load_policy: without cfg.model the tiny model lives in the run directory: pass run")
        path = run.out / "model"
        if run.meta.get("start") is None:  # fresh (or interrupted before RL began): build + warm start
            build_tiny_model(path, seed=cfg.seed)
        elif not (path / "config.json").exists():
            raise rd.RunDirError(f"resume: {str(path)!r} is missing: the run's policy (its RL start) is gone; "
                                 "start the run again in a new directory")
        model, tok = _load(path, device, "resume", local_files_only=True)
        if run.meta.get("start") is None and cfg.warm_start_steps:
            sft = sft_warm_start(model, tok, task, steps=cfg.warm_start_steps, lr=cfg.warm_start_lr, seed=cfg.seed,
                                 eval_size=0, marked_frac=cfg.warm_start_marked_frac, progress=progress)
            sft = {k: v for k, v in sft.items() if k != "sft/losses"}
            model.save_pretrained(str(path))  # the RL start on disk
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, tok, sft


def _load(path, device, what: str, local_files_only: bool = False):
    """``load_model_and_tokenizer`` with a one-line ValueError naming ``what`` for a missing or damaged model."""
    p = Path(str(path)).expanduser()
    if p.is_dir() and not (p / "config.json").exists():
        raise ValueError(f"{what}: {str(path)!r} has no config.json: not a Hugging Face model directory "
                         "(save one with model.save_pretrained)")
    try:
        return load_model_and_tokenizer(path, device=device, local_files_only=local_files_only)
    except Exception as err:  # noqa: BLE001 - a local model's files are user data: any failure is a damaged file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if p.is_dir():
            raise ValueError(f"{what}: the model in {str(path)!r} cannot be loaded ({type(err).__name__}: "
                             f"{first}); a weights file may be truncated or damaged") from err
        if isinstance(err, (OSError, ValueError)):
            raise ValueError(f"{what}: {first}") from err
        raise


def check_prompts(tok, model, cfg: TrainConfig, task, eval_set) -> None:
    """ValueError naming ``data`` if any prompt + max_new_tokens exceeds the model context."""
    items = list(getattr(task, "items", ())) or task.sample(256, torch.Generator().manual_seed(0))
    prompts = [p for p, _ in items + list(eval_set)]
    for i in range(0, len(prompts), 1024):
        encode_prompts(tok, prompts[i : i + 1024], cfg.task, model_context(model), cfg.max_new_tokens,
                       cfg.chat_template)


def evaluate(model, tok, cfg: TrainConfig, eval_set, autocast) -> dict[str, float]:
    """Held-out accuracy under the run's reward: greedy (``eval/accuracy``) and temperature-1 sampled.

    With ``reward_mode="strict"`` also ``eval/accuracy_flexible``: the greedy answers scored
    by the flexible rule, i.e. the arithmetic without the format requirement.
    """
    prompts = [format_prompt(tok, p, cfg.task, cfg.chat_template) for p, _ in eval_set]
    answers, special = [a for _, a in eval_set], not uses_chat_template(tok, cfg.task, cfg.chat_template)
    score, out = get_reward(cfg.reward_mode), {}
    with autocast():
        for key, greedy in (("eval/accuracy", True), ("eval/accuracy_sampled", False)):
            texts = complete(model, tok, prompts, greedy=greedy, max_new_tokens=cfg.max_new_tokens,
                             temperature=cfg.temperature, seed=cfg.seed + 2, add_special_tokens=special)
            out[key] = score_texts(texts, answers, score)
            if greedy and cfg.reward_mode == "strict":
                out["eval/accuracy_flexible"] = score_texts(texts, answers, reward)
    out["eval/reward"] = out["eval/accuracy_sampled"]
    return out


@contextlib.contextmanager
def quiet_transformers():
    """No "Loading weights" / "Writing model shards" bars from transformers while the trainer or a study
    draws its own progress (and none at all with ``--no-progress`` or without a terminal)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is needed by the trainer anyway
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
