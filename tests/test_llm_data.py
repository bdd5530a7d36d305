"""train-llm's real-model parts: --dataset through datasets.load_dataset, GSM8K / MATH answers, chat templates.

Everything is local: datasets are written to tmp files (JSONL, CSV, parquet, a directory of
splits, a save_to_disk directory), the model is a tiny Qwen2 whose tokenizer gets a chat
template. No network.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

from m2po_lab.cli import main  # noqa: E402
from m2po_lab.llm import policy as _policy  # noqa: E402, F401  (bound to the real encode_prompts before the spy)
from m2po_lab.llm import rollout as rollout_mod  # noqa: E402
from m2po_lab.llm.config import TrainConfig  # noqa: E402
from m2po_lab.llm.data import gsm8k_final_answer, load_dataset_task, math_final_answer  # noqa: E402
from m2po_lab.llm.models import build_tiny_model, load_model_and_tokenizer  # noqa: E402
from m2po_lab.llm.rollout import encode_prompts, format_prompt, uses_chat_template  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

GSM = [{"question": f"{a}+{b}=?", "answer": f"add them\n#### {a + b:,}"} for a, b in
       [(1, 2), (3, 4), (500, 700), (9, 9), (12, 30), (2, 2), (4, 5), (6, 1)]]
TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("solution, answer", [
    ("3 + 4 = 7\n#### 7", "7"),
    ("#### 1,007", "1007"),
    ("first #### 3 then\n#### -12\n", "-12"),
    ("#### 0.5 dollars", "0.5 dollars"),
])
def test_gsm8k_final_answer(solution, answer):
    assert gsm8k_final_answer(solution) == answer


@pytest.mark.parametrize("solution, answer", [
    ("so $x = \\boxed{5}$.", "5"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{1} is wrong, \\boxed{ 2\\sqrt{2} }", "2\\sqrt{2}"),
    ("\\fbox{\\{1, 2\\}}", "\\{1, 2\\}"),
])
def test_math_final_answer(solution, answer):
    assert math_final_answer(solution) == answer


@pytest.mark.parametrize("fn, text, needle", [
    (gsm8k_final_answer, "the answer is 7", "####"),
    (math_final_answer, "the answer is 7", "boxed"),
    (math_final_answer, "\\boxed{\\frac{1}{2}", "do not close"),
])
def test_final_answers_without_one_are_refused(fn, text, needle):
    with pytest.raises(ValueError, match=needle):
        fn(text)


def test_local_files_of_every_kind_load_as_the_same_task(tmp_path):
    rows = GSM
    jsonl = _jsonl(tmp_path / "gsm.jsonl", rows)
    ds = datasets.Dataset.from_list(rows)
    ds.to_csv(str(tmp_path / "gsm.csv"))
    ds.to_parquet(str(tmp_path / "gsm.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    split_dir = tmp_path / "splits"
    split_dir.mkdir()
    _jsonl(split_dir / "train.jsonl", rows[:6])
    _jsonl(split_dir / "test.jsonl", rows[6:])
    expected = tuple((r["question"] + "\n", str(eval(r["question"][:-2]))) for r in rows)  # noqa: S307
    assert expected[2] == ("500+700=?\n", "1200")  # "#### 1,200": the comma dropped
    for path in (jsonl, tmp_path / "gsm.csv", tmp_path / "gsm.parquet", tmp_path / "saved"):
        task = load_dataset_task(str(path), "gsm8k", prompt_template="{question}\n")
        assert task.items == expected, path
    assert load_dataset_task(str(split_dir), "gsm8k", prompt_template="{question}\n").items == expected[:6]
    assert load_dataset_task(str(split_dir), "gsm8k", split="test", prompt_template="{question}\n").items == \
        expected[6:]


def test_math_records_and_custom_fields(tmp_path):
    rows = [{"problem": "half of 1?", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "final": "1/2"},
            {"problem": "2+2?", "solution": "\\boxed{4}", "final": "4"}]
    path = _jsonl(tmp_path / "math.jsonl", rows)
    assert load_dataset_task(str(path), "math").items == (("half of 1?", "\\frac{1}{2}"), ("2+2?", "4"))
    # a column of bare answers is used as it is; any question column
    task = load_dataset_task(str(path), "math", answer_field="final", question_field="solution")
    assert task.items == (("It is $\\boxed{\\frac{1}{2}}$.", "1/2"), ("\\boxed{4}", "4"))


@pytest.mark.parametrize("kwargs, needle", [
    (dict(question_field="prompt"), "question_field: 'prompt' is not a column .*columns: question, answer"),
    (dict(answer_field="final"), "answer_field: 'final' is not a column"),
    (dict(split="test"), "split: a single file holds the split 'train'"),
])
def test_bad_fields_and_splits_are_named(tmp_path, kwargs, needle):
    path = _jsonl(tmp_path / "gsm.jsonl", GSM)
    with pytest.raises(ValueError, match=needle):
        load_dataset_task(str(path), "gsm8k", **kwargs)


def test_bad_datasets_get_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="dataset: .*does not exist"):
        load_dataset_task(str(tmp_path / "missing.jsonl"), "gsm8k")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="dataset: .* is not a .csv, .json, .jsonl, .parquet file"):
        load_dataset_task(str(tmp_path / "notes.txt"), "gsm8k")
    no_marker = _jsonl(tmp_path / "m.jsonl", [{"problem": "q", "solution": "\\boxed{1}"},
                                              {"problem": "q", "solution": "\\boxed{2"}])
    with pytest.raises(ValueError, match="answer_field: record 1 .* braces do not close"):
        load_dataset_task(str(no_marker), "math")
    split_dir = tmp_path / "splits"
    split_dir.mkdir()
    _jsonl(split_dir / "train.jsonl", GSM)
    with pytest.raises(ValueError) as err:
        load_dataset_task(str(split_dir), "gsm8k", split="validation")
    assert "validation" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(task="gsm8k", dataset="a.jsonl", data="b.jsonl"), "dataset: give --dataset or --data, not both"),
    (dict(task="arith", dataset="a.jsonl"), "dataset: task 'arith' draws its own sums"),
    (dict(task="gsm8k", data="a.jsonl", eval_split="test"), "eval_split"),
    (dict(task="gsm8k", dataset="a", eval_data="b.jsonl"), "eval_data: with --dataset give --eval-split"),
    (dict(task="gsm8k"), "needs --dataset NAME_OR_PATH or --data PATH"),
    (dict(task="gsm8k", dataset="a", split=""), "split must be a non-empty string"),
    (dict(report_to="mlflow"), "report_to='mlflow' is not accepted"),
])
def test_config_refuses_contradictory_data_options(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**kwargs)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A tiny Qwen2 whose character tokenizer carries a chat template (saved and loaded back)."""
    path = build_tiny_model(tmp_path_factory.mktemp("chat"), hidden=32, layers=2, heads=4, max_positions=128)
    _, tok = load_model_and_tokenizer(path)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(str(path))
    return path


def test_a_tokenizer_with_a_template_formats_real_task_prompts(chat_model):
    _, tok = load_model_and_tokenizer(chat_model)
    assert tok.chat_template == TEMPLATE  # survives save_pretrained / from_pretrained
    assert format_prompt(tok, "1+2=?", "gsm8k") == "<user>1+2=?\n<assistant>"
    assert format_prompt(tok, "1+2=?", "gsm8k", chat_template=False) == "1+2=?"
    assert format_prompt(tok, "1+2=", "arith") == "1+2="  # the synthetic task never gets a template
    assert uses_chat_template(tok, "math") and not uses_chat_template(tok, "math", False)
    ids, mask = encode_prompts(tok, ["1+2=?"], "gsm8k", 128, 4)
    assert tok.decode(ids[0][mask[0].bool()]) == "<user>1+2=?\n<assistant>"  # no <bos> added to templated text
    ids, mask = encode_prompts(tok, ["1+2=?"], "gsm8k", 128, 4, chat_template=False)
    assert ids[0][mask[0].bool()][0] == tok.bos_token_id


def _train_args(model, out, data_dir, *extra):
    return ["train-llm", "--model", str(model), "--out", str(out), "--task", "gsm8k", "--dataset", str(data_dir),
            "--eval-split", "test", "--prompts-per-step", "2", "--group-size", "2", "--updates-per-step", "1",
            "--micro-batch-size", "4", "--max-new-tokens", "3", "--updates", "2", "--eval-every", "2",
            "--eval-prompts", "2", "--hist-every", "1", "--device", "cpu", "--no-progress", *extra]


@pytest.mark.parametrize("template", [True, False])
def test_train_llm_reads_a_dataset_and_templates_its_prompts(chat_model, tmp_path, monkeypatch, template):
    data = tmp_path / "gsm"
    data.mkdir()
    _jsonl(data / "train.jsonl", GSM[:6])
    _jsonl(data / "test.jsonl", GSM[6:])
    seen = []
    real = rollout_mod.encode_prompts

    def spy(tok, prompts, task, context, max_new_tokens, chat_template=True):  # what the rollouts encode
        seen.extend(format_prompt(tok, p, task, chat_template) for p in prompts)
        return real(tok, prompts, task, context, max_new_tokens, chat_template)

    monkeypatch.setattr(rollout_mod, "encode_prompts", spy)
    out = tmp_path / "run"
    extra = () if template else ("--no-chat-template",)
    assert main(_train_args(chat_model, out, data, *extra)) == 0
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["dataset"] == str(data) and cfg["eval_split"] == "test" and cfg["chat_template"] is template
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [0, 1] and "eval/accuracy" in rows[-1]
    assert seen and all(s.startswith("<user>") == template for s in seen)
    assert all(s.endswith("'####'.\n<assistant>" if template else "'####'.") for s in seen)
    questions = {g["question"] for g in GSM[:6]}
    assert [s for s in seen if not any(q in s for q in questions)] == []  # rollouts draw from the train split only


def test_a_bad_dataset_option_writes_nothing(chat_model, tmp_path, capsys):
    data = tmp_path / "gsm"
    data.mkdir()
    _jsonl(data / "train.jsonl", GSM)
    out = tmp_path / "run"
    assert main(_train_args(chat_model, out, data, "--question-field", "q")) == 2
    err = capsys.readouterr().err
    assert "question_field: 'q' is not a column" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("env", [{}, {"DATASET": "/data/gsm8k", "REWARD": "strict", "REPORT_TO": "none"}])
def test_the_gpu_recipe_options_parse_and_validate(env):
    """llm/scripts/common.sh's options (the docs' real-model recipe) are train-llm options and a valid config."""
    import os
    import subprocess
    from pathlib import Path

    from m2po_lab.cli import build_parser
    from m2po_lab.cliutil import dataclass_overrides
    from m2po_lab.llm.config import get_preset

    script = Path(__file__).resolve().parents[1] / "llm" / "scripts" / "common.sh"
    out = subprocess.run(["bash", "-c", f'source "{script}"; printf "%s\\0" "${{COMMON[@]}}"'],
                         env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout
    argv = out.split("\0")[:-1]
    args = build_parser().parse_args(["train-llm", *argv, "--out", "x"])
    cfg = get_preset(None, **dataclass_overrides(args, TrainConfig))
    assert cfg.task == "gsm8k" and cfg.eval_split == "test" and cfg.device == "cuda"
    if env:
        assert (cfg.dataset, cfg.dataset_config, cfg.reward_mode, cfg.report_to) == ("/data/gsm8k", None, "strict",
                                                                                      "none")
    else:
        assert (cfg.dataset, cfg.dataset_config, cfg.reward_mode, cfg.report_to) == ("openai/gsm8k", "main",
                                                                                      "math-verify", "tensorboard")


def test_train_llm_help_lists_every_option_in_a_section(capsys):
    """The --help sections name every TrainConfig field once (the nested loss config has its own section)."""
    import dataclasses

    from m2po_lab.cli import build_parser
    from m2po_lab.llm.cli import TRAIN_GROUPS

    grouped = [name for names in TRAIN_GROUPS.values() for name in names]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {f.name for f in dataclasses.fields(TrainConfig)} - {"loss"}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train-llm", "--help"])
    text = capsys.readouterr().out
    for title in TRAIN_GROUPS:
        assert title.split(" (")[0] + (" (" if "(" in title else "") in text
    data_section = text.split("data (a Hugging Face dataset")[1].split("\nreward")[0]
    for flag in ("--dataset ", "--dataset-config", "--split", "--eval-split", "--question-field", "--answer-field"):
        assert flag in data_section, flag
    assert "--report-to" in text.split("logging and checkpoints")[1]


def test_report_to_tensorboard_mirrors_the_metrics_file(chat_model, tmp_path):
    """train-llm --report-to tensorboard: every number of every metrics.jsonl line, same key, step = update."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    args = ["train-llm", "--model", str(chat_model), "--out", str(out), "--task", "arith", "--n-digits", "1",
            "--prompts-per-step", "2", "--group-size", "2", "--updates-per-step", "1", "--micro-batch-size", "4",
            "--max-new-tokens", "3", "--updates", "3", "--eval-every", "2", "--eval-prompts", "4",
            "--hist-every", "1", "--device", "cpu", "--no-progress", "--report-to", "tensorboard"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    expected = {(k, r["update"]): v for r in rows for k, v in r.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
    got = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    assert set(got) == set(expected) and ("eval/accuracy", 1) in got and ("clip/frac", 2) in got
    assert all(got[key] == pytest.approx(v, rel=1e-6, abs=1e-7) for key, v in expected.items())
