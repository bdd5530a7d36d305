"""Reward against simulated wall-clock (m2po_lab.systems.coupling, .wallclock, m2po-lab wallclock)."""

import json
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("simpy")

from m2po_lab import rundir as rd  # noqa: E402
from m2po_lab.cli import main  # noqa: E402
from m2po_lab.systems import get_preset, simulate  # noqa: E402
from m2po_lab.systems.coupling import WallclockConfig, study_ages, study_config  # noqa: E402
from m2po_lab.rundir import eval_curve  # noqa: E402
from m2po_lab.systems.wallclock import updates_to_target  # noqa: E402

TINY = ["wallclock", "--system", "teaching", "--study", "quick", "--seeds", "0", "--updates", "12",
        "--eval-every", "4", "--no-progress"]


def test_study_ages_are_the_systems_group_ages_in_updates():
    res = simulate(get_preset("teaching", steps=20, warmup_steps=4))  # 4 updates per step, like the study
    w = np.array(study_ages(res, 4))
    m = res.measured()
    versions = res.group_consume[m] - res.group_version[m]
    assert w.sum() == m.sum()  # one count per trained group of the window
    assert np.array_equal(w[::4], np.bincount(versions)) and not w[np.arange(len(w)) % 4 > 0].any()
    one = simulate(replace(get_preset("teaching", steps=20, warmup_steps=4), updates_per_step=1))
    w1 = np.array(study_ages(one, 4))  # ages of 0, 1, 2 updates round up to whole rollout steps of 4
    ages1 = one.group_consume[one.measured()] - one.group_version[one.measured()]
    assert w1.sum() == len(ages1) and w1[0] == (ages1 == 0).sum() and w1[4] == ((ages1 > 0) & (ages1 <= 4)).sum()


def test_study_config_runs_on_policy_and_at_the_bound():
    cfg = study_config(WallclockConfig(study="quick", seeds=(0,)), (3.0, 0.0, 0.0, 0.0, 1.0))
    assert cfg.staleness == (0, 4) and cfg.age_bound() == 4 and cfg.eval_every == 25
    assert study_config(WallclockConfig(study="quick"), (5.0,)).staleness == (0,)  # a synchronous system


@pytest.mark.parametrize("ys, smooth, want", [
    ([0.1, 0.5, 0.9, 0.9, 0.9], 1, 2), ([0.1, 0.5, 0.9, 0.9, 0.9], 3, 4), ([0.1, 0.95, 0.1, 0.2, 0.3], 1, 1),
    ([0.1, 0.95, 0.1, 0.2, 0.3], 2, None), ([0.9, 0.9], 3, 0),
])
def test_updates_to_target_is_the_first_trailing_mean_that_reaches_it(ys, smooth, want):
    xs = [10 * i for i in range(len(ys))]
    got = updates_to_target(xs, ys, 0.85, smooth)
    assert got == (None if want is None else xs[want])


def test_config_errors_name_the_option():
    for kw, words in ((dict(methods=("m2po",)), "methods must include grpo"), (dict(target=1.5), "target"),
                      (dict(system="nope"), "system='nope'"), (dict(smooth=0), "smooth")):
        with pytest.raises(ValueError, match=words):
            WallclockConfig(**kw)


def test_cli_writes_the_table_the_figure_and_a_resumable_study(tmp_path, capsys, one_thread):
    out = tmp_path / "wc"
    assert main([*TINY, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "| grpo | sync | 0 |" in said and "| m2po | async | ages up to 8 |" in said
    assert {p.name for p in out.iterdir()} == {"system.json", "study", "wallclock.json", "wallclock.md",
                                               "reward_vs_hours.png"}
    assert (out / "reward_vs_hours.png").stat().st_size > 1000
    system, result = json.loads((out / "system.json").read_text()), json.loads((out / "wallclock.json").read_text())
    for mode in ("sync", "async"):  # one update takes 1 / (updates per simulated hour) of that mode
        assert result["hours_per_update"][mode] == pytest.approx(1 / system[mode]["throughput/updates_per_hour"])
    study = rd.load_study(out / "study")
    ttt = result["time_to_target"]
    for row in ttt["rows"]:
        run = next(r for r in study.runs if r.method == row["method"] and r.staleness == row["staleness"])
        u = updates_to_target(*eval_curve(run), ttt["target"], 3)
        assert row["updates"]["0"] == u
        if u is not None:
            assert row["hours"]["0"] == pytest.approx(u * result["hours_per_update"][row["mode"]])
    before = (out / "study" / rd.SUMMARY).read_bytes()
    assert main([*TINY, "--out", str(out), "--target", "0.9"]) == 0  # a new target: the study is not retrained
    assert (out / "study" / rd.SUMMARY).read_bytes() == before
    assert json.loads((out / "wallclock.json").read_text())["time_to_target"]["target_frac"] == 0.9


@pytest.mark.parametrize("args, words", [
    (["--system", "nope"], "system='nope'"), (["--methods", "m2po"], "must include grpo"),
    (["--study", "huge"], "preset='huge'"),
])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, words):
    out = tmp_path / "bad"
    assert main([*TINY, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and err.startswith("m2po-lab wallclock: error:")
    assert not out.exists()


def test_a_directory_holding_other_files_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main([*TINY, "--out", str(tmp_path)]) == 2
    assert "not only a wallclock study's files" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
