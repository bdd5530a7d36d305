"""The small-LLM RL trainer end to end on CPU: CLI runs, exact resume, invariants, errors.

A tiny Qwen2 (hidden 32) is built once in a tmp dir and passed as --model, so nothing
touches the model hub and no test pays for the SFT warm start.
"""

from __future__ import annotations

import contextlib
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from m2po_lab.cli import main  # noqa: E402
from m2po_lab.llm import trainer as trainer_mod  # noqa: E402
from m2po_lab.llm.cli import PRESET_NAMES  # noqa: E402
from m2po_lab.llm.config import PRESETS, TrainConfig, get_preset  # noqa: E402
from m2po_lab.llm.models import build_tiny_model, load_model_and_tokenizer, token_logprobs  # noqa: E402
from m2po_lab.llm.rollout import load_tasks, logp_and_entropy, rollout  # noqa: E402
from m2po_lab.llm.trainer import train_minibatch  # noqa: E402

NULL = contextlib.nullcontext


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run fastest on one thread


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden=32, layers=2, heads=4, max_positions=64)


def _args(model, out, *extra):
    return ["train-llm", "--model", str(model), "--out", str(out), "--task", "arith", "--n-digits", "1",
            "--prompts-per-step", "4", "--group-size", "4", "--updates-per-step", "2", "--micro-batch-size", "4",
            "--lr", "1e-3", "--max-new-tokens", "3", "--eval-every", "2", "--eval-prompts", "8",
            "--hist-every", "2", "--device", "cpu", "--no-progress", *[str(e) for e in extra]]


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _strip(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_three_updates_through_the_cli(tiny_dir, tmp_path):
    out = tmp_path / "run"
    assert main(_args(tiny_dir, out, "--updates", 3, "--staleness", 2, "--method", "m2po")) == 0
    rows = _rows(out)
    assert [r["update"] for r in rows] == [0, 1, 2]
    assert [r["staleness"] for r in rows] == [0, 1, 2]
    for key in ("update", "staleness", "reward", "loss", "entropy", "grad_norm", "clip/frac", "is/ratio_mean",
                "is/ratio_max", "is/log_ratio_abs_p99", "kl/k1", "kl/k3", "m2po/m2_before", "m2po/m2_after",
                "is/m2", "m2po/candidate_frac", "m2po/threshold", "queue/bytes_per_seq"):
        assert all(key in r for r in rows), key
    assert "eval/accuracy" in rows[1] and "eval/accuracy_sampled" in rows[2]
    from m2po_lab.metrics import SCHEMA

    assert not {k for r in rows for k in r} - set(SCHEMA)  # every key written has a merge rule and a doc line
    assert "is/log_ratio_hist" in rows[0] and "entropy/by_ratio" in rows[2]
    meta = json.loads((out / "config.json").read_text())
    assert meta["kind"] == "llm" and meta["config"]["method"] == "m2po" and "eval/accuracy" in meta["start"]
    start, _ = load_model_and_tokenizer(tiny_dir)
    # the run does not save its final weights; re-train in-process and compare parameters instead
    before = {n: p.detach().clone() for n, p in start.named_parameters()}
    cfg = get_preset(None, model=str(tiny_dir), n_digits=1, prompts_per_step=4, group_size=4, updates_per_step=2,
                     micro_batch_size=4, lr=1e-3, max_new_tokens=3, device="cpu")
    task, _ = load_tasks(cfg)
    model, tok = load_model_and_tokenizer(tiny_dir)
    batch = rollout(model, tok, task, cfg, torch.Generator().manual_seed(0), NULL)
    batch["adv"] = torch.linspace(-1, 1, batch["adv"].numel())  # make sure there is a signal
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_minibatch(model.train(), opt, batch, slice(0, 8), cfg, True, NULL)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_strict_reward_mode_logs_the_flexible_accuracy_too(tiny_dir, tmp_path):
    out = tmp_path / "strict"
    assert main(_args(tiny_dir, out, "--updates", 2, "--reward-mode", "strict", "--max-new-tokens", "8")) == 0
    rows = _rows(out)
    assert {"eval/accuracy", "eval/accuracy_flexible"} <= set(rows[1])
    assert rows[1]["eval/accuracy"] <= rows[1]["eval/accuracy_flexible"]  # strict answers also pass the flexible rule
    assert "eval/accuracy_flexible" in json.loads((out / "config.json").read_text())["start"]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_resume_after_interruption_equals_uninterrupted_run(tiny_dir, tmp_path, monkeypatch, optimizer):
    extra = ("--updates", 8, "--staleness", 2, "--method", "m2po", "--checkpoint-every", 4, "--optimizer", optimizer)
    full = tmp_path / "full"
    assert main(_args(tiny_dir, full, *extra)) == 0

    cut = tmp_path / "cut"
    real_rollout, calls = trainer_mod.rollout, {"n": 0}

    def crashing_rollout(*a, **kw):
        calls["n"] += 1  # steps 0,1 -> calls 1..3 (k=1 extra base batch), step 2 -> 4, step 3 -> 5
        if calls["n"] == 5:  # after the checkpoint at update 4 and the lines of updates 4, 5
            raise KeyboardInterrupt("simulated crash")
        return real_rollout(*a, **kw)

    monkeypatch.setattr(trainer_mod, "rollout", crashing_rollout)
    with pytest.raises(KeyboardInterrupt):
        main(_args(tiny_dir, cut, *extra))
    assert [r["update"] for r in _rows(cut)] == list(range(6)) and (cut / "checkpoint.pt").exists()
    monkeypatch.setattr(trainer_mod, "rollout", real_rollout)
    assert main(["train-llm", "--resume", str(cut), "--no-progress"]) == 0
    assert [r["update"] for r in _rows(cut)] == list(range(8))  # no duplicate, no gap
    assert _strip(_rows(cut)) == _strip(_rows(full))
    assert not (cut / "checkpoint.pt").exists()
    assert json.loads((full / "config.json").read_text())["config"]["optimizer"] == optimizer


def test_behaviour_logp_equals_recomputed_on_policy(tiny_dir):
    cfg = get_preset(None, model=str(tiny_dir), n_digits=2, prompts_per_step=4, group_size=4, micro_batch_size=5,
                     max_new_tokens=4, device="cpu")
    task, _ = load_tasks(cfg)
    model, tok = load_model_and_tokenizer(tiny_dir)
    batch = rollout(model, tok, task, cfg, torch.Generator().manual_seed(1), NULL)
    ids, attn, P = batch["input_ids"].long(), batch["attention_mask"].long(), batch["response_start"]
    with torch.no_grad():
        logp, _ = logp_and_entropy(model, ids, attn, P)  # the training forward, one batch
        ref = token_logprobs(model, ids, attn, P)
    mask = batch["mask"]
    assert (logp - batch["old_logp"])[mask].abs().max() < 1e-5
    assert (ref - batch["old_logp"])[mask].abs().max() < 1e-5


@pytest.mark.parametrize("loss", ["m2po", "m2po_released"])
def test_minibatch_scope_gradient_does_not_depend_on_micro_batching(tiny_dir, loss):
    def grads(micro: int):
        cfg = get_preset(None, model=str(tiny_dir), prompts_per_step=4, group_size=4, updates_per_step=1,
                         micro_batch_size=micro, max_new_tokens=4, lr=1e-9, method=loss, device="cpu")
        model, tok = load_model_and_tokenizer(tiny_dir)
        task, _ = load_tasks(cfg)
        batch = rollout(model, tok, task, cfg, torch.Generator().manual_seed(2), NULL)
        g = torch.Generator().manual_seed(3)  # a stale-looking batch: perturbed behaviour log-probs
        batch["old_logp"] = batch["old_logp"] + 0.5 * torch.randn(batch["old_logp"].shape, generator=g)
        batch["adv"] = torch.randn(batch["adv"].shape, generator=g)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        scalars, _ = train_minibatch(model.train(), opt, batch, slice(0, 16), cfg, True, NULL)
        return [p.grad.clone() for p in model.parameters()], scalars

    (g_one, s_one), (g_many, s_many) = grads(16), grads(3)
    assert float(s_one["clip/frac"]) > 0  # the mask is doing something
    for a, b in zip(g_one, g_many):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert float(s_one["clip/frac"]) == pytest.approx(float(s_many["clip/frac"]))


def test_presets_match_the_cli_and_validate():
    assert set(PRESET_NAMES) == set(PRESETS)
    assert TrainConfig().loss.tau == 0.04 and TrainConfig().group_size == 8 and TrainConfig().updates_per_step == 4


@pytest.mark.parametrize("extra, needle", [
    (("--staleness", "-4"), "staleness"),
    (("--method", "nope"), "method"),
    (("--staleness", "3"), "staleness"),
    (("--reward-mode", "lenient"), "reward_mode"),
    (("--warm-start-marked-frac", "1.5"), "warm_start_marked_frac"),
    (("--optimizer", "adam"), "optimizer"),
])
def test_bad_options_fail_naming_the_argument(tiny_dir, tmp_path, capsys, extra, needle):
    assert main(_args(tiny_dir, tmp_path / "x", "--updates", 1, *extra)) == 2
    assert needle in capsys.readouterr().err


def test_bad_inputs_fail_naming_the_argument(tiny_dir, tmp_path):
    base = dict(prompts_per_step=4, group_size=4, eval_prompts=2, device="cpu", max_new_tokens=4)
    with pytest.raises(ValueError, match="data"):
        trainer_mod.train(TrainConfig(task="gsm8k", data=str(tmp_path / "missing.jsonl"), model=str(tiny_dir),
                                      **base), tmp_path / "a", progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": oops}\n')
    with pytest.raises(ValueError, match="line 2"):
        trainer_mod.train(TrainConfig(task="gsm8k", data=str(bad), model=str(tiny_dir), **base),
                          tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="model"):
        trainer_mod.train(TrainConfig(model=str(tmp_path / "no_such_model"), **base), tmp_path / "c", progress=False)
    long = tmp_path / "long.jsonl"
    long.write_text("".join(json.dumps({"question": "7" * 80, "answer": "#### 7"}) + "\n" for _ in range(4)))
    with pytest.raises(ValueError, match="context"):
        trainer_mod.train(TrainConfig(task="gsm8k", data=str(long), model=str(tiny_dir), **base),
                          tmp_path / "d", progress=False)
    with pytest.raises(ValueError, match="data"):
        TrainConfig(task="gsm8k")


@pytest.mark.gpu
def test_bf16_update_on_cuda(tiny_dir, tmp_path):
    out = tmp_path / "gpu"
    assert main(_args(tiny_dir, out, "--updates", 2, "--device", "cuda", "--method", "m2po")) == 0
    assert all(r["grad_norm"] is not None for r in _rows(out))


def test_sgd_takes_plain_gradient_steps():
    """``optimizer="sgd"``: the step is -lr x gradient (no per-parameter normalisation); "adamw" is Adam's."""
    layer = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
    for name, expected in (("sgd", [1.0 - 0.1 * 2, -2.0 - 0.1 * 4, 0.5 - 0.1 * 6]), ("adamw", None)):
        w = layer.weight.detach().clone()
        opt = trainer_mod.make_optimizer(TrainConfig(optimizer=name, lr=0.1), layer)
        layer.weight.grad = torch.tensor([[2.0, 4.0, 6.0]])
        opt.step()
        if expected is not None:
            assert layer.weight[0].tolist() == pytest.approx(expected)
        else:  # Adam's first step moves every weight by lr, whatever its gradient's size
            assert (w - layer.weight.detach()).abs()[0].tolist() == pytest.approx([0.1, 0.1, 0.1], rel=1e-4)
        with torch.no_grad():
            layer.weight.copy_(w)
