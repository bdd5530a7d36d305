"""``m2po-lab study-llm`` end to end on a 2-run, 8-update sweep: the format, exact resume, bad input, the explorer.

The sweep is the ``quick`` preset cut to 2 runs (grpo and no_tr at staleness 4, one seed):
a 32-wide Qwen2 warm-started for 20 steps, seconds per run. The reference study is trained
once per module by the CLI in 2 worker processes; the resume test trains the same sweep in
this process, interrupts it inside the second run and runs the command again.
"""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from m2po_lab import rundir as rd  # noqa: E402
from m2po_lab.llm.cli import STUDY_PRESET_NAMES, study_llm_main  # noqa: E402
from m2po_lab.llm.study_config import PRESETS, get_preset  # noqa: E402
from m2po_lab.llm.study_records import AMP_KEY, amplified_scalars  # noqa: E402
from m2po_lab.llm.tasks import carry_sum, drop_carries  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SWEEP = ["--preset", "quick", "--methods", "grpo", "no_tr", "--staleness", "4", "--no-progress"]
RUNS = ("grpo_s4_seed0", "no_tr_s4_seed0")


def _rows(path):
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in (path / rd.METRICS).read_text().splitlines()]


def _summary_runs(study):
    return [{k: v for k, v in r.items() if k != "wall_s"}
            for r in json.loads((study / rd.SUMMARY).read_text())["runs"]]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("llm_study") / "study"
    assert study_llm_main([*SWEEP, "--out", str(out), "--workers", "2"]) == 0  # two spawned worker processes
    return out


def test_the_sweep_writes_a_study_the_readers_load(study):
    loaded = rd.load_study(study)
    assert loaded.status == "finished" and [r.name for r in loaded.runs] == list(RUNS) and not loaded.missing
    assert {r.kind for r in loaded.runs} == {"llm"} and all(r.status == "finished" for r in loaded.runs)
    summary = json.loads((study / rd.SUMMARY).read_text())
    assert [p["phenomenon"][0] for p in summary["phenomena"]] == list("12345")
    assert [(r["method"], r["staleness"]) for r in summary["table1"]] == [("grpo", 4), ("no_tr", 4)]
    for entry in summary["runs"]:  # the toy's keys (what the phenomenon checks read) plus the LLM ones
        assert {"final_reward", "peak_reward", "collapsed", "clip_frac_steady", "ratio_max_median",
                "m2_steady", "amp_weight_share_steady", "final_accuracy"} <= set(entry)
    report = (study / rd.REPORT).read_text()
    assert "## Table 1" in report and "| no_tr s=4 |" in report
    assert {"reward_by_method.png", "ratio_stats.png", "accuracy_by_method.png"} <= {
        p.name for p in (study / "figures").iterdir()}
    # one warm start, trained once, the RL start of every run
    model = (study / "warm_start" / "model").resolve()
    assert all(r.config["config"]["model"] == str(model) and r.config["config"]["warm_start_steps"] == 0
               for r in loaded.runs)
    assert json.loads((study / "warm_start" / "report.json").read_text())["config"]["warm_start_steps"] == PRESETS["quick"].warm_start_steps
    starts = {json.dumps(r.config["start"], sort_keys=True) for r in loaded.runs}
    assert len(starts) == 1  # same weights, same seed: the same evaluation before RL
    rows = _rows(study / rd.RUNS / RUNS[1])
    assert all("amp/frac" in r and "amp/weight_share" in r for r in rows)
    recorded = [r["update"] for r in rows if AMP_KEY in r]  # every hist_every updates, where a token kept a gradient
    assert recorded and set(recorded) <= {0, 4, 7}


def test_an_interrupted_sweep_resumes_to_the_uninterrupted_result(study, tmp_path, monkeypatch):
    out = tmp_path / "cut"
    real_write, written = rd.MetricsWriter.write, {"n": 0}

    def interrupted_write(self, row):
        written["n"] += 1
        if written["n"] == 14:  # run 2, update 5: after its checkpoint at update 4
            raise KeyboardInterrupt("simulated interruption")
        real_write(self, row)

    monkeypatch.setattr(rd.MetricsWriter, "write", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        study_llm_main([*SWEEP, "--out", str(out), "--workers", "1"])
    assert not (out / rd.SUMMARY).exists() and rd.load_study(out).status == "incomplete"
    assert (out / rd.RUNS / RUNS[1] / rd.CHECKPOINT).exists() and len(_rows(out / rd.RUNS / RUNS[1])) == 5
    monkeypatch.setattr(rd.MetricsWriter, "write", real_write)
    assert study_llm_main([*SWEEP, "--out", str(out), "--workers", "1"]) == 0
    for name in RUNS:  # in this process, resumed = in two worker processes, uninterrupted
        assert _rows(out / rd.RUNS / name) == _rows(study / rd.RUNS / name), name
    assert _summary_runs(out) == _summary_runs(study)
    assert not list(out.glob(f"{rd.RUNS}/*/{rd.CHECKPOINT}"))


def test_a_finished_study_is_left_as_it_is(study, capsys):
    before = (study / rd.SUMMARY).stat().st_mtime_ns
    assert study_llm_main([*SWEEP, "--out", str(study), "--workers", "1"]) == 0
    assert "nothing to do" in capsys.readouterr().out and (study / rd.SUMMARY).stat().st_mtime_ns == before


@pytest.mark.parametrize("extra, needle", [
    (("--workers", "0"), "workers"),
    (("--staleness", "3"), "staleness"),
    (("--methods", "nope"), "methods"),
    (("--carry-drop", "1.5"), "carry_drop"),
    (("--preset", "huge"), "preset"),
    (("--hidden", "30", "--heads", "4"), "hidden"),
])
def test_bad_options_fail_in_one_line_naming_the_option(tmp_path, capsys, extra, needle):
    out = tmp_path / "never"
    assert study_llm_main([*SWEEP, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and err.startswith("m2po-lab study-llm: error:")
    assert not out.exists()


def test_a_warm_start_stuck_on_the_plateau_is_refused_and_nothing_trained(tmp_path, capsys):
    out = tmp_path / "study"
    # the quick warm start (a few steps) is far from writing every sum without a carry right
    assert study_llm_main([*SWEEP, "--out", str(out), "--warm-start-min-acc", "1.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did not leave the SFT loss plateau" in err and "--warm-start-seed" in err
    assert not out.exists() or not [p.name for p in out.iterdir() if p.name != rd.LOCK]  # --out as it was


def test_the_m2po_lab_command_has_study_llm(tmp_path, capsys):
    from m2po_lab.cli import main

    out = tmp_path / "never"
    assert main(["study-llm", *SWEEP, "--out", str(out), "--lr", "nan"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("m2po-lab study-llm: error:") and "lr" in err and not out.exists()


def test_python_m_m2po_lab_llm_cli_runs_the_same_parser(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "never"
    proc = subprocess.run([sys.executable, "-m", "m2po_lab.llm.cli", "study-llm", "--lr", "nan", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("m2po-lab study-llm: error: lr"), proc.stderr
    assert not out.exists()


def test_an_unusable_out_is_refused_and_left_alone(study, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    for out, needle in ((a_file, "is a file"), (other, "not a study directory"), (study, "different config")):
        args = [*SWEEP, "--out", str(out)] + (["--updates", "6"] if out == study else [])
        assert study_llm_main(args) == 2
        assert needle in capsys.readouterr().err
    assert a_file.read_text() == "x" and sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_presets_match_the_cli():
    assert set(STUDY_PRESET_NAMES) == set(PRESETS)
    cfg = get_preset("tiny-table1")
    assert cfg.loss.tau == 0.04 and cfg.group_size == 8 and cfg.updates_per_step == 4 and max(cfg.staleness) == 256
    assert {"grpo", "gspo", "m2po", "no_tr"} <= set(cfg.methods) and len(cfg.seeds) == 3


def test_the_carry_dropping_teacher():
    assert carry_sum(95, 17, [False, False]) == "112" == str(95 + 17)
    assert carry_sum(95, 17, [True, False]) == "102" and carry_sum(95, 17, [True, True]) == "2"
    pairs = [(f"{a}+{b}=", str(a + b)) for a in range(0, 100, 7) for b in range(0, 100, 11)]
    assert drop_carries(pairs, 0.0, torch.Generator()) == pairs
    gen = torch.Generator().manual_seed(0)
    assert all(int(ans) <= a + b for (p, _), (_, ans) in zip(pairs, drop_carries(pairs, 1.0, gen))
               for a, b in [map(int, p[:-1].split("+"))])
    with pytest.raises(ValueError, match="not an addition"):
        drop_carries([("7*8=", "56")], 0.5, torch.Generator())


def test_amplified_scalars_by_hand():
    mask = torch.tensor([[True, True, False], [True, True, True]])
    zeroed = torch.tensor([[False, False, False], [False, True, False]])
    log_ratio = torch.tensor([[math.log(4.0), 0.0, 0.0], [math.log(3.0), math.log(8.0), 0.0]])
    adv = torch.tensor([1.0, -2.0])
    out = amplified_scalars(mask, zeroed, log_ratio, adv)
    # kept: (0,0) r=4 A=1 [amplified], (0,1) r=1 A=1, (1,0) r=3 A=-2, (1,2) r=1 A=-2; (1,1) zeroed
    assert float(out["amp/frac"]) == pytest.approx(1 / 5)
    assert float(out["amp/weight_share"]) == pytest.approx(4 / (4 + 1 + 6 + 2))


@pytest.mark.slow
def test_the_explorer_reads_the_llm_study(apptest, study, monkeypatch):
    from app_helpers import open_page

    monkeypatch.setenv("M2PO_LAB_RUNS_ROOT", str(study.parent.parent))
    at = open_page(apptest, "pages/2_Staleness_study.py")
    at.radio(key="study_source").set_value("Open a study directory").run()
    at.text_input(key="study_dir").input(str(study)).run()
    assert not at.exception and not at.error and at.dataframe
    at = open_page(apptest, "pages/3_Run_browser.py")
    at.text_input(key="run_dir").input(str(study)).run()
    assert not at.exception and not at.error
    at.selectbox(key="llm_run").set_value(RUNS[1]).run()
    at.slider(key="cursor").set_value(5).run()
    html = [m.value for m in at.markdown if "kept its gradient" in m.value]
    assert len(html) == 1 and "<mark style='background:#90caf9'>" in html[0]
    logged = [r["update"] for r in _rows(study / rd.RUNS / RUNS[1]) if r.get(AMP_KEY) and r["update"] <= 5]
    assert logged, "the trainer logs tokens/amplified at update 0 (hist_every)"
    assert any(f"update **{max(logged)}**" in m.value for m in at.markdown)  # the latest record at or before it
