"""Tiny-model basics: tokenizer, build/load offline, log-probs, sampling, tasks, SFT.

Everything is built locally in tmp dirs; nothing touches the model hub.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import AutoTokenizer  # noqa: E402

from m2po_lab.llm.models import (  # noqa: E402
    build_tiny_model,
    generate,
    load_model_and_tokenizer,
    response_mask_from_ids,
    token_logprobs,
)
from m2po_lab.llm.sft import build_sft_batch, sft_loss, sft_warm_start  # noqa: E402
from m2po_lab.llm.tasks import (  # noqa: E402
    GSM8K_KEYS,
    MATH_KEYS,
    ArithmeticTask,
    answers_match,
    extract_answer,
    get_reward,
    load_jsonl_task,
    mark_answers,
    reward,
    strict_reward,
)
from m2po_lab.llm.tokenizer import build_char_tokenizer, save_char_tokenizer  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run fastest on one thread


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden=64, layers=2, heads=4)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model_and_tokenizer(tiny_dir, local_files_only=True)


# ---------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("text", ["12+34=46", "What is 3 * 4?\nA: \\boxed{12}", "#### 1,000.", ""])
def test_tokenizer_round_trip(text):
    tok = build_char_tokenizer()
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == len(text) + 1  # one token per char
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_left_padding_and_unknown(tmp_path):
    tok = build_char_tokenizer()
    enc = tok(["1+1=", "12+34="], padding=True, return_tensors="pt")
    assert tok.padding_side == "left"
    assert enc["input_ids"][0, :2].tolist() == [tok.pad_token_id] * 2
    assert enc["attention_mask"][0].tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert tok("é", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    reloaded = AutoTokenizer.from_pretrained(str(save_char_tokenizer(tmp_path)))
    assert reloaded.padding_side == "left" and len(reloaded) == len(tok)
    assert reloaded("7*8=56")["input_ids"] == tok("7*8=56")["input_ids"]


# ---------------------------------------------------------------- models


def test_build_and_load_offline(tiny_dir, tiny):
    model, tok = tiny
    assert (tiny_dir / "config.json").is_file() and (tiny_dir / "tokenizer.json").is_file()
    assert model.config.model_type == "qwen2"
    assert model.config.vocab_size == len(tok)
    assert model.config.eos_token_id == tok.eos_token_id
    assert not model.training


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_loaded_tokenizer_keeps_every_character(tmp_path, arch):
    """transformers 5 rebuilds a Qwen2 directory's tokenizer byte-level through AutoTokenizer, dropping spaces."""
    path = build_tiny_model(tmp_path, arch=arch, hidden=32, layers=1, heads=2)
    _, tok = load_model_and_tokenizer(path, local_files_only=True)
    text = ["Q: 3 * 4?\nA: #### 12", "12+3="]
    built = build_char_tokenizer()
    assert tok(text, padding=True)["input_ids"] == built(text, padding=True)["input_ids"]
    assert tok.decode(tok(text[0])["input_ids"], skip_special_tokens=True) == text[0]
    assert tok.padding_side == "left" and tok.pad_token_id == built.pad_token_id


def test_build_llama(tmp_path):
    path = build_tiny_model(tmp_path, arch="llama", hidden=32, layers=1, heads=2)
    model, tok = load_model_and_tokenizer(path, local_files_only=True)
    assert model.config.model_type == "llama"
    with pytest.raises(ValueError, match="arch"):
        build_tiny_model(tmp_path / "x", arch="gpt5")


def test_build_is_seeded(tmp_path):
    a = load_model_and_tokenizer(build_tiny_model(tmp_path / "a", hidden=32, layers=1, seed=3))[0]
    b = load_model_and_tokenizer(build_tiny_model(tmp_path / "b", hidden=32, layers=1, seed=3))[0]
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_missing_model_path(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_model_and_tokenizer(missing)


def test_token_logprobs_matches_manual(tiny):
    model, tok = tiny
    prompts = ["12+34=", "5+6="]
    responses = [[tok.convert_tokens_to_ids(c) for c in "46"], [tok.convert_tokens_to_ids(c) for c in "11"]]
    enc = tok(prompts, padding=True, return_tensors="pt")
    P = enc["input_ids"].shape[1]
    resp = torch.tensor(responses)  # (B, R)
    input_ids = torch.cat([enc["input_ids"], resp], 1)  # (B, P + R)
    attn = torch.cat([enc["attention_mask"], torch.ones_like(resp)], 1)
    with torch.no_grad():
        logp = token_logprobs(model, input_ids, attn, P, temperature=0.7)  # (B, R)
        for b, (prompt, r) in enumerate(zip(prompts, responses)):
            ids = torch.tensor([tok(prompt)["input_ids"] + r])  # unpadded (1, T)
            logits = model(input_ids=ids).logits[0]  # (T, V)
            p_len = ids.shape[1] - len(r)
            manual = [
                torch.log_softmax(logits[p_len + t - 1] / 0.7, -1)[r[t]] for t in range(len(r))
            ]
            assert torch.allclose(logp[b], torch.stack(manual), atol=1e-5)
    assert logp.shape == (2, 2) and bool((logp < 0).all())


def test_response_mask_from_ids():
    ids = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]])
    mask = response_mask_from_ids(ids, eos_token_id=2)
    assert mask.tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [True, False, False, False],
    ]


def test_generate_seeded_and_matches_logprobs(tiny):
    model, tok = tiny
    enc = tok(["12+34=", "1+2="], padding=True, return_tensors="pt")
    state = torch.get_rng_state()
    r1, m1 = generate(model, tok, enc["input_ids"], enc["attention_mask"], 6, seed=7)
    r2, m2 = generate(model, tok, enc["input_ids"], enc["attention_mask"], 6, seed=7)
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched
    assert torch.equal(r1, r2) and torch.equal(m1, m2)
    assert r1.shape == m1.shape and r1.shape[0] == 2 and r1.shape[1] <= 6
    g = torch.Generator().manual_seed(0)
    r3, _ = generate(model, tok, enc["input_ids"], enc["attention_mask"], 6, generator=g)
    r4, _ = generate(model, tok, enc["input_ids"], enc["attention_mask"], 6, generator=g)
    assert not torch.equal(r3, r4)  # one generator -> a stream of different draws
    greedy, _ = generate(model, tok, enc["input_ids"], enc["attention_mask"], 6, greedy=True)
    assert greedy.shape[0] == 2


# ---------------------------------------------------------------- tasks


@pytest.mark.parametrize(
    "text, expected",
    [
        ("#### 42", "42"),
        ("6 * 7 = 42 so\n#### 1,000", "1000"),
        ("#### $1,000.", "1000"),
        ("#### 42 apples", "42"),
        ("The answer is \\boxed{7}.", "7"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("first \\boxed{3} then \\boxed{ 4 }", "4"),
        ("\\boxed{x^{2}+1}", "x^{2}+1"),
        ("\\boxed{\\sqrt{2}}", "\\sqrt{2}"),
        ("The answer is 42.", "42"),
        ("value 42.0", "42"),
        ("cost $1,234.50", "1234.5"),
        ("-3 and then +5", "5"),
        ("it is -3", "-3"),
        ("5-3", "3"),
        ("1, 2, 3", "3"),
        ("46", "46"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "pred, gold, same",
    [
        ("1,000", "1000", True),
        ("42.0", "42", True),
        ("+5", "5", True),
        ("$5", "5", True),
        ("5.", "5", True),
        ("0.5", "\\frac{1}{2}", True),
        ("\\dfrac{1}{2}", "1/2", True),
        ("0.50", "0.5", True),
        ("-2", "2", False),
        ("\\sqrt{2}", "\\sqrt{2}", True),
        ("43", "42", False),
    ],
)
def test_answers_match(pred, gold, same):
    assert answers_match(pred, gold) is same


def test_reward():
    assert reward("46", "46") == 1.0
    assert reward("47", "46") == 0.0
    assert reward("so \\boxed{1,000}", "1000") == 1.0
    assert reward("#### 12", "Natalia sold 48/2 = 24 ... #### 12") == 1.0  # raw GSM8K gold
    assert reward("nothing", "46") == 0.0


def test_strict_reward_needs_the_marker():
    assert strict_reward("#### 46", "46") == 1.0
    assert strict_reward("####46", "46") == 1.0
    assert strict_reward("so 46", "46") == 0.0  # right number, no marker
    assert strict_reward("#### 45", "46") == 0.0
    assert strict_reward("#### 4 then 46", "46") == 0.0  # the marked number counts, not the last one
    assert strict_reward("#### 4 #### 46.", "46") == 1.0  # the last marked number
    assert strict_reward("####x46", "46") == 0.0  # the number must follow the marker
    assert strict_reward("#### 12", "Natalia sold 48/2 = 24 ... #### 12") == 1.0
    assert get_reward("strict") is strict_reward and get_reward("flexible") is reward
    with pytest.raises(ValueError, match=r"reward_mode must be one of \['flexible', 'strict', 'exact', 'digits', 'math-verify'\]"):
        get_reward("lenient")


def test_mark_answers_fraction_and_seed():
    pairs = [("1+2=", "3")] * 4000
    marked = mark_answers(pairs, 0.3, torch.Generator().manual_seed(0))
    frac = sum(a == "#### 3" for _, a in marked) / len(pairs)
    assert abs(frac - 0.3) < 0.03 and all(a in ("3", "#### 3") for _, a in marked)
    assert marked == mark_answers(pairs, 0.3, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert mark_answers(pairs[:5], 0.0, gen) == pairs[:5] and torch.equal(gen.get_state(), state)  # no draw
    assert all(a == "#### 3" for _, a in mark_answers(pairs[:5], 1.0, gen))
    with pytest.raises(ValueError, match="frac"):
        mark_answers(pairs, 1.5, gen)


def test_arithmetic_task():
    task = ArithmeticTask(n_digits=2, ops=("+", "-", "*"), seed=1)
    pairs = task.sample(50)
    assert pairs == task.sample(50)  # seeded by task.seed
    for prompt, answer in pairs:
        assert prompt.endswith("=") and int(answer) == eval(prompt[:-1])
        assert len(answer) <= task.max_answer_chars
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert task.sample(5, g1) == task.sample(5, g2)
    assert task.sample(5, g1) != task.sample(5, g1)  # the stream advances
    assert ArithmeticTask.reward("46", "46") == 1.0
    with pytest.raises(ValueError):
        ArithmeticTask(ops=("/",))


def test_jsonl_task_gsm8k_and_math(tmp_path):
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(
        json.dumps({"question": "2+2?", "answer": "2+2=4\n#### 4"}) + "\n\n"
        + json.dumps({"question": "Big?", "answer": "#### 1,000"}) + "\n"
    )
    task = load_jsonl_task(gsm, **GSM8K_KEYS)
    assert task.items == (("2+2?\n", "4"), ("Big?\n", "1000"))
    assert len(task.sample(7)) == 7
    math_file = tmp_path / "math.jsonl"
    math_file.write_text(json.dumps({"problem": "Half?", "solution": "It is $\\boxed{\\frac{1}{2}}$."}))
    mtask = load_jsonl_task(math_file, prompt_template="Q: {question}\nA:", **MATH_KEYS)
    assert mtask.items == (("Q: Half?\nA:", "\\frac{1}{2}"),)
    assert mtask.reward("\\boxed{0.5}", mtask.items[0][1]) == 1.0


def test_jsonl_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "1"}\n{"question": "b", "answer": \n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 2"):
        load_jsonl_task(bad)
    nokey = tmp_path / "nokey.jsonl"
    nokey.write_text('{"question": "a"}\n')
    with pytest.raises(ValueError, match=r"line 1: missing key 'answer'"):
        load_jsonl_task(nokey)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_jsonl_task(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no records"):
        load_jsonl_task(empty)


# ---------------------------------------------------------------- SFT


def test_sft_batch_masks_prompt():
    tok = build_char_tokenizer()
    batch = build_sft_batch(tok, [("1+2=", "3"), ("12+34=", "46")])
    labels, ids = batch["labels"], batch["input_ids"]
    eos = tok.eos_token_id
    assert labels[0].tolist().count(-100) == ids.shape[1] - 2  # "3", <eos>
    assert labels[1, -3:].tolist() == [*tok("46", add_special_tokens=False)["input_ids"], eos]
    assert bool((labels[batch["attention_mask"] == 0] == -100).all())


def test_sft_lowers_loss_and_is_seeded(tiny_dir):
    task = ArithmeticTask(n_digits=2)
    runs = []
    for _ in range(2):
        model, tok = load_model_and_tokenizer(tiny_dir, local_files_only=True)
        runs.append(sft_warm_start(model, tok, task, steps=15, batch_size=32, seed=0, eval_size=0))
    m = runs[0]
    assert m["sft/loss_last"] < m["sft/loss_first"] - 1.0
    assert runs[0]["sft/losses"] == runs[1]["sft/losses"]  # same seed, same trajectory
    batch = build_sft_batch(tok, task.sample(8))
    assert torch.isfinite(sft_loss(model, batch))


def test_sft_progress_bar_shows_steps_and_changes_nothing(tiny_dir, capsys):
    task = ArithmeticTask(n_digits=2)
    runs = []
    for progress in (False, True):
        model, tok = load_model_and_tokenizer(tiny_dir, local_files_only=True)
        runs.append(sft_warm_start(model, tok, task, steps=6, batch_size=8, seed=0, eval_size=0, progress=progress))
        err = capsys.readouterr().err
        assert ("warm start (SFT)" in err and "6/6" in err) == progress, err
    assert runs[0]["sft/losses"] == runs[1]["sft/losses"]  # the bar's loss readout does not touch training


def test_sft_reaches_nonzero_accuracy(tiny_dir):
    """1-digit addition: ~2 s on 2 CPU cores, greedy accuracy ~0.6 (measured)."""
    model, tok = load_model_and_tokenizer(tiny_dir, local_files_only=True)
    m = sft_warm_start(model, tok, ArithmeticTask(n_digits=1), steps=100, batch_size=64, seed=0, eval_size=64)
    assert m["sft/acc_greedy"] > 0.1
    assert 0.0 <= m["sft/acc_sampled"] <= 1.0


def test_sft_teaches_the_marked_format(tiny_dir):
    """A teacher that always writes `#### N`: the strict reward then scores the SFT model like the flexible one."""
    model, tok = load_model_and_tokenizer(tiny_dir, local_files_only=True)
    m = sft_warm_start(model, tok, ArithmeticTask(n_digits=1), steps=100, batch_size=64, seed=0, eval_size=64,
                       marked_frac=1.0, reward_fn=strict_reward)
    assert m["sft/acc_greedy"] > 0.1

