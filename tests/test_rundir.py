"""m2po_lab.rundir: the one writer and reader of run directories (docs/run_format.md).

Hand-written files for every way a directory can be wrong; real processes for the lock
and for kills in the middle of an atomic write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from app_helpers import write_run

from m2po_lab import rundir as rd

NAMES = ["grpo_s0_seed0", "grpo_s8_seed0", "m2po_s0_seed0", "m2po_s8_seed0"]


def row(update: int, **extra) -> dict:
    return {**{k: 0.0 for k in rd.REQUIRED_KEYS}, "update": update, "staleness": 4, "reward": 0.1 * update, **extra}


def lines(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# ---------------------------------------------------------------- metrics.jsonl
def test_writer_then_reader_round_trip(tmp_path):
    p = tmp_path / "m.jsonl"
    w = rd.MetricsWriter(p)
    for u in range(3):
        w.write(row(u, x=float("inf"), nested={"v": [float("nan"), 1.0]}))
    w.close()
    rows = rd.read_metrics(p)
    assert [r["update"] for r in rows] == [0, 1, 2]
    assert rows[0]["x"] is None and rows[0]["nested"]["v"] == [None, 1.0]  # JSON has no inf / NaN
    with pytest.raises(ValueError, match="expected 3"):
        rd.MetricsWriter(p, start=3).write(row(5))


def test_torn_last_line_is_dropped_only_when_tolerant(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(lines(row(0), row(1)) + '{"update": 2, "rew')
    rows, torn = rd.scan_metrics(p)
    assert [r["update"] for r in rows] == [0, 1] and torn
    with pytest.raises(rd.RunDirError, match="last line .* is torn"):
        rd.read_metrics(p, tolerant=False)


@pytest.mark.parametrize("text, match", [
    (lines(row(0)) + "not json\n" + lines(row(2)), "line 2 of .* is not JSON"),
    (lines(row(0)) + "[1, 2]\n", "line 2 of .* is a JSON list"),
    (lines(row(0), row(1), row(1)), "line 3 of .* holds update 1 after update 1"),
    (lines(row(1), row(0)), "line 1 of .* holds update 1 after update -1"),
    (lines(row(0), row(4)), r"line 2 of .* holds update 4 after update 0: updates 1..3 are missing"),
    (lines(row(0)) + '{"reward": 1}\n', "line 2 of .* has update=None"),
])
def test_damaged_metrics_are_refused_naming_the_line(tmp_path, text, match):
    p = tmp_path / "m.jsonl"
    p.write_text(text)
    for tolerant in (True, False):
        with pytest.raises(rd.RunDirError, match=match):
            rd.read_metrics(p, tolerant=tolerant)


def test_resume_cuts_back_to_the_checkpoint_or_refuses_a_gap(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(lines(*(row(u) for u in range(6))) + '{"upd')  # 6 lines, then a torn one
    w = rd.MetricsWriter(p, start=4)  # checkpoint at update 4: lines 4, 5 and the torn one are re-run
    w.write(row(4))
    w.close()
    assert [r["update"] for r in rd.read_metrics(p)] == [0, 1, 2, 3, 4]
    for start in (6, 9):  # a metrics file shorter than its checkpoint: never a silent gap
        with pytest.raises(rd.RunDirError, match=f"holds updates 0..4 but the checkpoint is at update {start}"):
            rd.MetricsWriter(p, start=start)
    assert [r["update"] for r in rd.read_metrics(p)] == [0, 1, 2, 3, 4]  # the refused resume changed nothing
    with pytest.raises(rd.RunDirError, match="missing, but the checkpoint is at update 2"):
        rd.MetricsWriter(tmp_path / "gone.jsonl", start=2)


# ---------------------------------------------------------------- bounded reads
def test_special_files_and_huge_files_are_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(rd.RunDirError, match="not a regular file"):
        rd.read_metrics(fifo)  # would block forever if opened
    run = write_run(tmp_path / "r", [row(0)])
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to("/dev/zero")
    with pytest.raises(rd.RunDirError, match="not a regular file"):
        rd.load_run(run)
    big = tmp_path / "big.jsonl"
    big.write_text(lines(row(0)) * 10)
    with pytest.raises(rd.RunDirError, match="over the"):
        rd.files.read_bytes(big, "metrics file", limit=100)


# ---------------------------------------------------------------- config.json, summary.json
def test_config_format_and_kind_are_checked(tmp_path):
    run = write_run(tmp_path / "r", [row(0)])
    (run / "config.json").write_text("{not json")
    with pytest.raises(rd.RunDirError, match="config .* is not valid JSON .* truncated"):
        rd.load_run(run)
    write_run(run, [row(0)], config={"kind": "llm", "loss": "m2po", "staleness": 16, "seed": 3})
    with pytest.raises(rd.RunDirError, match="format None: it was written by another version"):
        rd.load_run(run)
    write_run(run, [row(0)], config={"format": rd.FORMAT, "kind": "robot", "config": {}})
    with pytest.raises(rd.RunDirError, match="kind='robot'"):
        rd.load_run(run)
    write_run(run, [row(0)], kind="toy", staleness="eight")  # type: ignore[arg-type]
    with pytest.raises(rd.RunDirError, match="method, staleness and seed"):
        rd.load_run(run)


@pytest.mark.parametrize("record, match", [
    ({"is/log_ratio_quantiles": {"q": [0.5], "v": ["x"]}}, "is/log_ratio_quantiles needs"),
    ({"is/log_ratio_hist": {"edges": [0, 1], "counts": [1, 2]}}, "is/log_ratio_hist needs"),
    ({"entropy/by_ratio": {"edges": [0, None], "entropy": [], "counts": [1]}}, "entropy/by_ratio needs"),
    ({"tokens/zeroed": [{"text": "a", "token": "b", "log_ratio": "big"}]}, "tokens/zeroed needs"),
    ({"tokens/zeroed": "oops"}, "tokens/zeroed needs"),
    ({"reward": "high"}, r"\['reward'\] must be numbers"),
])
def test_malformed_records_are_refused_naming_the_line(tmp_path, record, match):
    run = write_run(tmp_path / "r", [row(0), {**row(1), **record}], kind="llm")
    with pytest.raises(rd.RunDirError, match="line 2 of .*" + match):
        rd.load_run(run)


def test_keys_of_older_versions_are_read_under_todays_names(tmp_path):
    from m2po_lab.metrics import RENAMED, RETIRED, SCHEMA, upgrade_row

    tokens = [{"text": "3+4=", "token": "7", "log_ratio": 1.5}]
    old = row(1, m2=0.25, masked_tokens=tokens, amplified_tokens=[{**tokens[0], "adv": 1.0}],
              entropy_by_ratio={"edges": [0, None], "entropy": [0.5], "counts": [3]},
              **{"m2po/m2_all": 0.25, "m2po/mask_frac": 0.0})
    run = write_run(tmp_path / "old", [row(0, m2=0.5), old], kind="llm")
    text = (run / rd.METRICS).read_text()
    rows = rd.load_run(run).rows
    assert rows[0]["is/m2"] == 0.5 and rows[1]["is/m2"] == 0.25 and rows[1]["tokens/zeroed"] == tokens
    assert rows[1]["entropy/by_ratio"]["counts"] == [3] and rows[1]["tokens/amplified"][0]["adv"] == 1.0
    assert not set(rows[1]) & (set(RENAMED) | set(RETIRED))
    assert (run / rd.METRICS).read_text() == text  # read, never rewritten
    assert set(RENAMED.values()) | set(RETIRED.values()) <= set(SCHEMA) and not (set(RENAMED) | set(RETIRED)) & set(SCHEMA)
    both = {"update": 0, "m2": 9.0, "is/m2": 1.0}
    assert upgrade_row(both) == {"update": 0, "is/m2": 1.0}  # today's name wins
    new = row(2)
    assert upgrade_row(new) is new


def test_lacking_required_keys(tmp_path):
    run = write_run(tmp_path / "r", [row(0), {k: v for k, v in row(1).items() if k not in ("reward", "kl/k3")}])
    with pytest.raises(rd.RunDirError, match=r"line 2 of .* lacks the required keys \['reward', 'kl/k3'\]"):
        rd.load_run(run)
    empty = write_run(tmp_path / "e", [])
    with pytest.raises(rd.RunDirError, match="holds no complete line"):
        rd.load_run(empty)


def test_study_directory_checks(tmp_path, study_dir):
    study = rd.load_study(study_dir)
    assert study.status == "finished" and not study.missing and [r.name for r in study.runs] == NAMES
    assert all(r.status == "finished" for r in study.runs) and study.environment["packages"]["torch"]
    broken = tmp_path / "study"
    shutil.copytree(study_dir, broken)
    (broken / "runs" / NAMES[1] / "metrics.jsonl").unlink()
    with pytest.raises(rd.RunDirError, match="is finished but 1 run"):
        rd.load_study(broken)
    (broken / "summary.json").unlink()  # an unfinished study may lack runs: it says which
    study = rd.load_study(broken)
    assert study.status == "incomplete" and study.missing == (NAMES[1],)
    assert all(r.status == "incomplete" for r in study.runs)
    (broken / "summary.json").write_text(json.dumps({"runs": [{"method": "grpo", "seed": 0}]}))
    with pytest.raises(rd.RunDirError, match=r"runs\[0\] needs 'staleness'"):
        rd.load_study(broken)
    (broken / "summary.json").write_text("[1, 2]")
    with pytest.raises(rd.RunDirError, match="study summary .* holds a JSON list"):
        rd.load_study(broken)


# ---------------------------------------------------------------- checkpoint.pt
def test_damaged_checkpoint_says_what_to_do(tmp_path):
    assert rd.load_checkpoint(tmp_path) is None
    rd.save_checkpoint(tmp_path, {"update": 3, "x": torch.arange(4)})
    assert rd.load_checkpoint(tmp_path)["update"] == 3
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(rd.RunDirError, match="cannot be read .* Delete it to restart this run from update 0"):
        rd.load_checkpoint(tmp_path)


def _child(code: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_a_kill_mid_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    rd.save_checkpoint(tmp_path, {"update": 1})
    proc = _child(f"""
        from m2po_lab import rundir as rd
        rd.save_checkpoint({str(tmp_path)!r}, {{"update": 2, "pad": "x" * 100000}})
    """, env={rd.files.FAILPOINT_ENV: "checkpoint_write:1"})
    proc.wait(timeout=60)
    assert proc.returncode == -9  # killed half-way through writing the temporary file
    assert rd.load_checkpoint(tmp_path)["update"] == 1


# ---------------------------------------------------------------- one writer per directory
def test_a_second_writer_is_refused_and_a_dead_holder_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "out"
    holder = _child(f"""
        import sys, time
        from m2po_lab import rundir as rd
        with rd.DirLock({str(out)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)
    assert holder.stdout.readline().strip() == "locked"
    try:
        assert rd.is_locked(out)
        with pytest.raises(rd.RunDirError, match=f"being written by another process \\(pid {holder.pid}"):
            with rd.DirLock(out):
                pass
    finally:
        holder.kill()  # SIGKILL: no cleanup runs
        holder.wait(timeout=30)
    deadline = time.time() + 10
    while rd.is_locked(out) and time.time() < deadline:
        time.sleep(0.05)
    assert not rd.is_locked(out) and (out / ".lock").exists()  # the file stays, the lock does not
    with rd.DirLock(out):
        assert rd.is_locked(out)
    assert not rd.is_locked(out)


# ---------------------------------------------------------------- finding directories
def test_discover_lists_studies_and_llm_runs_newest_first(tmp_path, study_dir):
    shutil.copytree(study_dir, tmp_path / "runs" / "study")
    write_run(tmp_path / "runs" / "tiny", [row(0)], kind="llm")
    time.sleep(0.01)
    os.utime(tmp_path / "runs" / "tiny" / "metrics.jsonl")
    entries = rd.discover(tmp_path)
    assert [(os.path.relpath(e.path, tmp_path), e.kind, e.status) for e in entries] == [
        ("runs/tiny", "llm", "incomplete"), ("runs/study", "study", "finished")]
    assert entries[1].methods == ("grpo", "m2po") and entries[1].staleness == (0, 8)
    assert rd.discover(tmp_path / "nothing_here") == []


def test_under_root(tmp_path):
    (tmp_path / "a").mkdir()
    assert rd.under_root("a", tmp_path) == (tmp_path / "a").resolve()
    assert rd.under_root(tmp_path / "a", tmp_path) == (tmp_path / "a").resolve()
    for outside in ("/etc", "../", "a/../../x"):
        with pytest.raises(rd.RunDirError, match="outside the runs root"):
            rd.under_root(outside, tmp_path)
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(rd.RunDirError, match="outside the runs root"):
        rd.under_root("link", tmp_path)


def test_environment_is_recorded_and_compared():
    env = rd.environment()
    assert env["packages"]["torch"] == torch.__version__.split("+")[0] or env["packages"]["torch"] == torch.__version__
    assert env["torch_threads"] == torch.get_num_threads() and env["cpu"]
    assert rd.environment_changes(env, env) == []
    other = {**env, "torch_threads": env["torch_threads"] + 1, "packages": {**env["packages"], "torch": "9.9"}}
    changes = rd.environment_changes(env, other)
    assert any("torch " in c and "-> 9.9" in c for c in changes) and any("torch_threads" in c for c in changes)
    assert rd.environment_changes(None, env) == ["the run recorded no environment"]


def test_a_toy_run_opened_on_its_own_has_its_studys_status(tmp_path):
    """The run browser loads each run of a study by itself: a finished study's runs are finished, not 'incomplete'."""
    from m2po_lab.study import get_preset, run_study

    out = tmp_path / "study"
    run_study(get_preset("quick", methods=("grpo",), staleness=(0,), updates=4, eval_every=2, hist_every=2,
                         warm_start_steps=2, checkpoint_every=0), out, progress=False)
    run = out / rd.RUNS / "grpo_s0_seed0"
    assert rd.load_run(run).status == "finished"
    (out / rd.SUMMARY).unlink()  # as if it had stopped before the end
    assert rd.load_run(run).status == "incomplete"
    alone = tmp_path / "alone"
    shutil.copytree(run, alone)
    assert rd.load_run(alone).status == "incomplete"  # no study around it: nothing says it finished
