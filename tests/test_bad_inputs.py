"""Every user mistake gets one clear line naming the argument, exit code 2, and nothing written.

The matrix of bad inputs to ``m2po-lab study`` and ``m2po-lab train-llm``: options out of
range (NaN included), duplicate values, unusable output directories, damaged run
directories. A case passes when the command prints exactly one line on stderr that names
what is wrong, exits 2, shows no traceback, and leaves ``--out`` as it was.
"""

from __future__ import annotations

import json
import shutil

import pytest

from m2po_lab import rundir as rd
from m2po_lab.cli import main

TINY = ["study", "--preset", "quick", "--methods", "grpo", "m2po", "--staleness", "0", "4", "--seeds", "0",
        "--updates", "8", "--eval-every", "4", "--hist-every", "4", "--warm-start-steps", "5", "--n-prompts", "8",
        "--prompts-per-step", "8", "--checkpoint-every", "4", "--no-progress"]


def _fails_cleanly(capsys, args, needle, out=None):
    before = sorted(p.name for p in out.iterdir()) if out is not None and out.is_dir() else None
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"m2po-lab {args[0]}: error:"), err
    assert needle in lines[0] and "Traceback" not in err, err
    if out is not None:
        after = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
        assert after == before, (before, after)  # nothing written


STUDY_OPTIONS = [
    (["--eps-low", "-0.2"], "eps_low"), (["--eps-low", "1.5"], "eps_low"), (["--eps-high", "0"], "eps_high"),
    (["--tau", "0"], "tau"), (["--tau", "nan"], "tau"), (["--lr", "inf"], "lr"), (["--lr", "-1"], "lr"),
    (["--hidden", "0"], "hidden"), (["--vocab-size", "1"], "vocab_size"), (["--length", "0"], "length"),
    (["--n-prompts", "0"], "n_prompts"), (["--n-forks", "100"], "n_forks"), (["--n-forks", "0"], "n_forks"),
    (["--threads", "0"], "threads"), (["--warm-start-lr", "nan"], "warm_start_lr"),
    (["--warm-start-steps", "-1"], "warm_start_steps"), (["--max-grad-norm", "nan"], "max_grad_norm"),
    (["--max-grad-norm", "-1"], "max_grad_norm"), (["--fork-prior", "5"], "fork_prior"),
    (["--fork-prior", "-1"], "fork_prior"), (["--seeds", "0", "0"], "seeds lists [0] more than once"),
    (["--methods", "grpo", "grpo"], "methods lists ['grpo']"), (["--staleness", "4", "4"], "staleness lists [4]"),
    (["--methods", "ppo9"], "methods='ppo9'"), (["--preset", "huge"], "preset='huge'"),
    (["--staleness", "-4"], "staleness"), (["--staleness", "6"], "multiple of updates_per_step"),
    (["--updates", "0"], "updates"), (["--reward", "nope"], "reward='nope'"), (["--agg-mode", "x"], "mode='x'"),
    (["--group-size", "1"], "group_size"), (["--prompts-per-step", "6"], "prompts_per_step"),
    (["--eval-every", "0"], "eval_every"), (["--checkpoint-every", "-1"], "checkpoint_every"),
    (["--dual-clip-c", "0.5"], "dual_clip_c"), (["--region", "some"], "region='some'"),
]


@pytest.mark.parametrize("extra, needle", STUDY_OPTIONS, ids=[" ".join(e) for e, _ in STUDY_OPTIONS])
def test_study_bad_option(tmp_path, capsys, extra, needle):
    out = tmp_path / "out"
    _fails_cleanly(capsys, [*TINY, *extra, "--out", str(out)], needle)
    assert not out.exists()


def test_study_unusable_out(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    _fails_cleanly(capsys, [*TINY, "--out", str(f)], "is a file, not a directory")
    _fails_cleanly(capsys, [*TINY, "--out", str(f / "sub")], "cannot write out=")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    _fails_cleanly(capsys, [*TINY, "--out", str(other)], "is not a study directory", out=other)
    assert (other / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def killed_study(tmp_path_factory):
    """A study stopped after its checkpoint at update 4 (as a kill would leave it)."""
    import os
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("killed") / "study"
    env = {**os.environ, rd.files.FAILPOINT_ENV: "metrics_row:25"}  # 4 runs x 6 lines: past the checkpoint
    proc = subprocess.run([sys.executable, "-m", "m2po_lab.cli", *TINY, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9 and (out / rd.CHECKPOINT).exists(), proc.stderr
    return out


@pytest.mark.parametrize("damage, needle", [
    ("truncate_checkpoint", "checkpoint.pt' cannot be read"),
    ("truncate_config", "is not valid JSON"),
    ("other_config", "holds a study with a different config"),
    ("old_format", "written by another version of m2po-lab"),
])
def test_study_damaged_directory(tmp_path, capsys, killed_study, damage, needle):
    out = tmp_path / "study"
    shutil.copytree(killed_study, out)
    if damage == "truncate_checkpoint":
        data = (out / rd.CHECKPOINT).read_bytes()
        (out / rd.CHECKPOINT).write_bytes(data[:100])
    elif damage == "truncate_config":
        (out / rd.CONFIG).write_text((out / rd.CONFIG).read_text()[:50])
    elif damage == "other_config":
        doc = json.loads((out / rd.CONFIG).read_text())
        doc["config"]["updates"] = 9
        (out / rd.CONFIG).write_text(json.dumps(doc))
    else:
        doc = json.loads((out / rd.CONFIG).read_text())
        doc["format"] = 1
        (out / rd.CONFIG).write_text(json.dumps(doc))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != rd.LOCK}
    _fails_cleanly(capsys, [*TINY, "--out", str(out)], needle)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != rd.LOCK} == before


def test_vocabularies_above_256_keep_their_tokens(one_thread):
    """Token ids are stored in a dtype wide enough for the vocabulary: on-policy log-ratios are exactly 0."""
    from m2po_lab.study import get_preset
    from m2po_lab.study.runner import BatchedStudy, token_dtype

    assert (token_dtype(256), token_dtype(257), token_dtype(40000)) == (
        __import__("torch").uint8, __import__("torch").int16, __import__("torch").int32)
    cfg = get_preset("quick", methods=("m2po",), staleness=(0,), updates=4, vocab_size=300, warm_start_steps=5)
    for out, per_run in BatchedStudy(cfg).steps():
        assert float(per_run[0]["is/m2"]) == 0.0 and float(per_run[0]["clip/frac"]) == 0.0


# ---------------------------------------------------------------- train-llm
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    pytest.importorskip("transformers")
    from m2po_lab.llm.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden=32, layers=2, heads=4, max_positions=64)


def _llm(model, out, *extra):
    return ["train-llm", "--model", str(model), "--out", str(out), "--n-digits", "1", "--prompts-per-step", "4",
            "--group-size", "4", "--updates-per-step", "2", "--micro-batch-size", "4", "--max-new-tokens", "3",
            "--eval-every", "2", "--eval-prompts", "4", "--hist-every", "2", "--updates", "2", "--no-progress",
            "--device", "cpu", *map(str, extra)]


LLM_OPTIONS = [
    (["--device", "tpu"], "device='tpu'"), (["--eps-low", "1.5"], "eps_low"), (["--weight-decay", "nan"], "weight_decay"),
    (["--max-grad-norm", "nan"], "max_grad_norm"), (["--max-grad-norm", "-1"], "max_grad_norm"),
    (["--tau", "-1"], "tau"), (["--method", "nope"], "method='nope'"), (["--warm-start-steps", "10"], "warm_start_steps"),
    (["--temperature", "0"], "temperature"), (["--lr", "nan"], "lr"), (["--threads", "0"], "threads"),
]


@pytest.mark.parametrize("extra, needle", LLM_OPTIONS, ids=[" ".join(e) for e, _ in LLM_OPTIONS])
def test_train_llm_bad_option(tmp_path, capsys, tiny_model, extra, needle):
    out = tmp_path / "out"
    _fails_cleanly(capsys, _llm(tiny_model, out, *extra), needle)
    assert not out.exists()


def test_train_llm_bad_models_and_directories(tmp_path, capsys, tiny_model):
    empty = tmp_path / "empty_model"
    empty.mkdir()
    _fails_cleanly(capsys, _llm(empty, tmp_path / "a"), "has no config.json: not a Hugging Face model directory")
    broken = tmp_path / "broken_model"
    shutil.copytree(tiny_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    _fails_cleanly(capsys, _llm(broken, tmp_path / "b"), "cannot be loaded")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    _fails_cleanly(capsys, ["train-llm", "--resume", str(tmp_path / "nothing"), "--no-progress"], "holds no run")
    done = tmp_path / "done"
    assert main(_llm(tiny_model, done)) == 0
    capsys.readouterr()
    _fails_cleanly(capsys, ["train-llm", "--resume", str(done), "--no-progress"], "has finished", out=done)
    _fails_cleanly(capsys, _llm(tiny_model, done), "is not empty", out=done)
    _fails_cleanly(capsys, ["train-llm", "--no-progress"], "give --out DIR")


def test_train_llm_resume_without_its_model(tmp_path, capsys):
    """The tiny model's RL start lives in OUT/model; deleted, the run cannot resume (and says so)."""
    pytest.importorskip("transformers")
    out = tmp_path / "run"
    args = ["train-llm", "--out", str(out), "--n-digits", "1", "--prompts-per-step", "4", "--group-size", "4",
            "--updates-per-step", "2", "--micro-batch-size", "4", "--max-new-tokens", "3", "--eval-every", "2",
            "--eval-prompts", "4", "--hist-every", "2", "--updates", "2", "--warm-start-steps", "2",
            "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    meta = json.loads((out / rd.CONFIG).read_text())
    del meta["summary"]  # as if stopped before the end
    (out / rd.CONFIG).write_text(json.dumps(meta))
    shutil.rmtree(out / "model")
    capsys.readouterr()
    _fails_cleanly(capsys, ["train-llm", "--resume", str(out), "--no-progress"], "model' is missing")
