"""The usability window (m2po_lab.study.window): the search on synthetic finals, the finals against run_study."""

import pytest

from m2po_lab.cli import main
from m2po_lab.study import get_preset, run_study
from m2po_lab.study import window as win
from m2po_lab.study.runner import RunSpec, run_specs


def _fake_finals(curve):
    """A stand-in for train_finals: final reward = curve(method, staleness) + a seed offset; records the rounds."""
    rounds = []

    def train(cfg, specs, progress=False):
        rounds.append(sorted({(s.method, s.staleness) for s in specs}))
        return {s: curve(s.method, s.staleness) + 0.001 * s.seed for s in specs}

    return train, rounds


@pytest.mark.parametrize("edge", [0, 4, 100, 140, 252])
def test_bisection_finds_the_last_passing_staleness(monkeypatch, edge):
    """A step curve that passes up to ``edge``: the window is ``edge`` exactly, in at most 3 rounds of 4 points."""
    train, rounds = _fake_finals(lambda m, k: 1.0 if k <= edge else 0.5)
    monkeypatch.setattr(win, "train_finals", train)
    res = win.find_windows(win.WindowConfig(methods=("m2po",), seeds=(0, 1)))
    r = res["methods"]["m2po"]
    assert r["window"] == edge and r["first_failing"] == edge + 4 and not r["at_max"]
    assert res["rounds"] == len(rounds) <= 3
    assert res["runs"] == sum(len(x) for x in rounds) * 2  # 2 seeds per point
    assert rounds[0] == [("m2po", k) for k in (0, 64, 128, 192, 256)]


def test_methods_search_together_and_stop_apart(monkeypatch):
    train, rounds = _fake_finals(lambda m, k: 1.0 if (m == "m2po" or k <= 32) else 0.9)
    monkeypatch.setattr(win, "train_finals", train)
    res = win.find_windows(win.WindowConfig(methods=("m2po", "grpo"), seeds=(0,)))
    assert res["methods"]["m2po"]["at_max"] and res["methods"]["m2po"]["window"] == 256
    assert res["methods"]["grpo"]["window"] == 32
    assert all(m == "grpo" for r in rounds[1:] for m, _ in r)  # m2po is done after round 1
    text = win.format_table(res)
    assert ">= 256" in text and f"{res['runs']} study runs in {res['rounds']} rounds" in text


def test_tolerance_is_relative_to_the_methods_own_on_policy_final(monkeypatch):
    train, _ = _fake_finals(lambda m, k: 0.8 - 0.001 * k)  # 5% of 0.8 = 0.04: passes while k <= 40
    monkeypatch.setattr(win, "train_finals", train)
    res = win.find_windows(win.WindowConfig(methods=("grpo",), seeds=(0,), max_staleness=64))
    assert res["methods"]["grpo"]["window"] == 40


def test_a_non_monotone_curve_shows_in_the_tested_points(monkeypatch):
    train, _ = _fake_finals(lambda m, k: 0.5 if k == 64 else 1.0)  # one bad point below good ones
    monkeypatch.setattr(win, "train_finals", train)
    r = win.find_windows(win.WindowConfig(methods=("m2po",), seeds=(0,)))["methods"]["m2po"]
    assert r["first_failing"] == 64 and any(p["passes"] for p in r["points"] if p["staleness"] > 64)


def test_finals_match_the_study_summary(tmp_path, one_thread):
    """train_finals evaluates only where final_reward looks, and gets run_study's numbers exactly."""
    cfg = get_preset("quick", methods=("grpo", "m2po"), staleness=(0, 8), seeds=(0,), updates=20, eval_every=5,
                     warm_start_steps=20, n_prompts=8, prompts_per_step=8)
    summary = run_study(cfg, tmp_path / "s", progress=False)
    finals = win.train_finals(cfg, run_specs(cfg))
    want = {RunSpec(r["method"], r["staleness"], r["seed"]): r["final_reward"] for r in summary["runs"]}
    assert finals == want
    assert win.eval_updates(cfg) == [19] and win.eval_updates(get_preset("default")) == [949, 999]


@pytest.mark.parametrize("args, words", [
    (["--method", "ppo9"], "methods='ppo9'"),
    (["--max-staleness", "30"], "multiple of updates_per_step=4"),
    (["--tolerance", "1.5"], "tolerance must be a fraction"),
    (["--preset", "huge"], "preset='huge'"),
])
def test_cli_bad_input_is_one_line_and_exit_2(capsys, args, words):
    assert main(["window", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_cli_prints_the_table(capsys, one_thread):
    argv = ["window", "--method", "m2po", "--method", "grpo", "--preset", "quick", "--seeds", "0", "--updates", "8",
            "--max-staleness", "8", "--points-per-round", "2", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "m2po " in out and "grpo " in out and "study runs in" in out
