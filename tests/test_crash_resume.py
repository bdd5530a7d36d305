"""Kill a study and an LLM run at random moments (kill -9), resume, and get the uninterrupted run.

Kills come from failpoints (``M2PO_LAB_FAILPOINT``, ``m2po_lab.rundir.files``): the process
SIGKILLs itself before the n-th metrics line, half-way through writing one (a torn line), or
half-way through writing a checkpoint -- moments a timer would rarely hit, drawn at random
with a fixed seed. One more kill comes from outside, on a timer. After every kill the same
command is run again; the final directory must equal the uninterrupted run line for line
(wall-clock fields aside).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from m2po_lab import rundir as rd
from m2po_lab.cli import main

STUDY = ["study", "--preset", "quick", "--methods", "grpo", "no_tr", "m2po", "--staleness", "0", "8",
         "--seeds", "0", "--updates", "20", "--eval-every", "5", "--hist-every", "10", "--warm-start-steps", "20",
         "--n-prompts", "8", "--prompts-per-step", "8", "--checkpoint-every", "6", "--no-progress"]
"""Checkpoints at updates 6, 12 and 18: inside rollout steps of 4 updates (mid-step resumes)."""
ROWS = 6 * 20  # metrics lines a study writes: 6 runs x 20 updates


def _strip(obj):
    """Drop wall-clock fields, recursively."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in ("wall_s", "time/update_s")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _snapshot(out: Path) -> dict:
    files = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}
    snap = {}
    for name, p in files.items():
        if name.endswith(rd.METRICS):
            snap[name] = [_strip(json.loads(line)) for line in p.read_text().splitlines()]
        elif name.endswith(rd.SUMMARY):
            snap[name] = _strip(json.loads(p.read_text()))
    return snap


def _killed(args: list[str], failpoint: str | None = None, after_s: float | None = None) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if failpoint:
        env[rd.files.FAILPOINT_ENV] = failpoint
    proc = subprocess.Popen([sys.executable, "-m", "m2po_lab.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if after_s is not None:
        time.sleep(after_s)
        proc.kill()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (-9, 0), err  # killed, or finished before the kill came
    return proc.returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "study"
    assert main([*STUDY, "--out", str(out)]) == 0
    return _snapshot(out)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_study_killed_at_random_moments_resumes_exactly(tmp_path, reference, seed):
    rng = random.Random(seed)
    out = tmp_path / "study"
    kinds = ["metrics_row", "metrics_row_torn", "checkpoint_write"]
    for _ in range(3):
        kind = rng.choice(kinds)
        n = rng.randint(1, 3) if kind == "checkpoint_write" else rng.randint(1, ROWS // 2)
        _killed([*STUDY, "--out", str(out)], f"{kind}:{n}")
        assert not rd.is_locked(out)  # the kernel dropped the dead writer's lock
    assert main([*STUDY, "--out", str(out)]) == 0
    assert _snapshot(out) == reference
    assert not (out / rd.CHECKPOINT).exists()


@pytest.mark.slow
def test_study_killed_from_outside_resumes_exactly(tmp_path, reference):
    out = tmp_path / "study"
    for after in (2.5, 4.0):  # import + warm start take ~2 s here: kills land in training
        if _killed([*STUDY, "--out", str(out)], after_s=after) == 0:
            break
    assert main([*STUDY, "--out", str(out)]) == 0
    assert _snapshot(out) == reference


def test_a_finished_study_is_left_alone_and_force_starts_over(tmp_path, capsys, reference):
    out = tmp_path / "study"
    assert main([*STUDY, "--out", str(out)]) == 0
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    capsys.readouterr()
    assert main([*STUDY, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "finished" in said and "nothing to do" in said
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # not one byte, not one mtime changed
    (out / "runs" / "stray.txt").write_text("x")
    assert main([*STUDY, "--out", str(out), "--force"]) == 0
    assert _snapshot(out) == reference


def test_a_second_writer_gets_a_clear_error(tmp_path, capsys):
    out = tmp_path / "study"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom m2po_lab import rundir as rd\n"
                               f"l = rd.DirLock({str(out)!r}).__enter__()\nprint('locked', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main([*STUDY, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"being written by another process (pid {holder.pid}" in err and err.count("\n") == 1
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_shortened_metrics_file_is_refused_not_resumed_with_a_gap(tmp_path, capsys):
    out = tmp_path / "study"
    _killed([*STUDY, "--out", str(out)], "metrics_row:100")  # after the checkpoint at update 12
    assert (out / rd.CHECKPOINT).exists()
    m = out / "runs" / "m2po_s8_seed0" / rd.METRICS
    m.write_text("".join(m.read_text().splitlines(keepends=True)[:7]))  # lost lines 7..
    assert main([*STUDY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds updates 0..6 but the checkpoint is at update 12" in err and "gap" in err


# ---------------------------------------------------------------- train-llm
@pytest.fixture(scope="module")
def llm_args(tmp_path_factory):
    pytest.importorskip("transformers")
    from m2po_lab.llm.models import build_tiny_model

    model = build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden=32, layers=2, heads=4, max_positions=64)
    return ["train-llm", "--model", str(model), "--task", "arith", "--n-digits", "1", "--prompts-per-step", "4",
            "--group-size", "4", "--updates-per-step", "2", "--micro-batch-size", "4", "--lr", "1e-3",
            "--max-new-tokens", "3", "--eval-every", "3", "--eval-prompts", "8", "--hist-every", "2",
            "--device", "cpu", "--threads", "1", "--no-progress", "--updates", "10", "--staleness", "2",
            "--checkpoint-every", "4"]


def _llm_snapshot(out: Path) -> dict:
    meta = json.loads((out / rd.CONFIG).read_text())
    return {"rows": [_strip(json.loads(line)) for line in (out / rd.METRICS).read_text().splitlines()],
            "start": meta["start"], "summary": _strip(meta["summary"])}


@pytest.mark.slow
def test_train_llm_killed_at_random_moments_resumes_exactly(tmp_path, llm_args):
    ref = tmp_path / "ref"
    assert main([*llm_args, "--out", str(ref)]) == 0
    rng = random.Random(0)
    out = tmp_path / "cut"
    first = True
    for kind, n in (("metrics_row", rng.randint(5, 8)), ("checkpoint_write", 1), ("metrics_row_torn", 2)):
        args = [*llm_args, "--out", str(out)] if first else ["train-llm", "--resume", str(out), "--no-progress"]
        if _killed(args, f"{kind}:{n}") == -9 and (out / rd.CONFIG).exists():
            first = False
    assert main(["train-llm", "--resume", str(out), "--no-progress"]) == 0
    assert _llm_snapshot(out) == _llm_snapshot(ref)
