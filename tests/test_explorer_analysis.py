"""m2po_lab.explorer.analysis: series, seed bands, steady fractions and tables of real run directories.

Toy data is a real tiny study written by ``run_study``; LLM-style runs are written by hand
(through ``m2po_lab.rundir``'s format); one real LLM run comes from the trainer on a tiny model.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from app_helpers import TINY_STUDY, write_run

from m2po_lab import rundir as rd
from m2po_lab.explorer import analysis as an
from m2po_lab.study import get_preset, read_metrics
from m2po_lab.study.figures import pooled_entropy_bins

NAMES = ["grpo_s0_seed0", "grpo_s8_seed0", "m2po_s0_seed0", "m2po_s8_seed0"]
TOKENS = [{"text": "12 + 30 = ", "token": "4", "log_ratio": 1.25}, {"text": "a | b", "token": "<x>", "log_ratio": -0.5}]


def row(update: int, **extra) -> dict:
    """A minimal valid metrics line."""
    base = {k: 0.0 for k in rd.REQUIRED_KEYS}
    return {**base, "update": update, "staleness": 4, "reward": 0.1 * update, **extra}


@pytest.fixture
def llm_dir(tmp_path):
    rows = [row(0), row(1, **{"tokens/zeroed": TOKENS}), row(2), row(3, **{"tokens/zeroed": TOKENS[:1], "eval/accuracy": 0.5})]
    return write_run(tmp_path / "llm_run", rows, kind="llm", method="m2po", staleness=16, seed=3)


# ---------------------------------------------------------------- a real study
def test_load_study(study_dir):
    study = rd.load_study(study_dir)
    assert [r.name for r in study.runs] == NAMES
    assert study.methods == ["grpo", "m2po"] and study.staleness == [0, 8]
    assert study.summary is not None and len(study.summary["runs"]) == 4
    for run in study.runs:
        assert run.kind == "toy" and run.seed == 0
        assert run.name == f"{run.method}_s{run.staleness}_seed0"
        assert [r["update"] for r in run.rows] == list(range(12))
        assert list(run.rows) == read_metrics(study_dir / "runs" / run.name / "metrics.jsonl")


def test_find_runs(study_dir, tmp_path):
    assert list(rd.find_runs(study_dir)) == NAMES
    assert list(rd.find_runs(study_dir / "runs")) == NAMES  # a folder of runs
    one = study_dir / "runs" / NAMES[0]
    assert rd.find_runs(one) == {NAMES[0]: one}
    with pytest.raises(rd.RunDirError, match="does not exist"):
        rd.find_runs(tmp_path / "nope")
    with pytest.raises(rd.RunDirError, match="holds no metrics.jsonl, and no run directory"):
        rd.find_runs(tmp_path)
    with pytest.raises(rd.RunDirError, match="not a directory"):
        rd.find_runs(one / "metrics.jsonl")
    with pytest.raises(rd.RunDirError, match="choose a run"):
        rd.find_runs("")
    with pytest.raises(rd.RunDirError, match="kind='toy', expected study"):
        rd.load_study(one)


def test_steady_fraction_and_final_reward_match_the_summary(study_dir):
    study = rd.load_study(study_dir)
    for s in study.summary["runs"]:
        sel = an.select(study.runs, s["method"], s["staleness"])
        assert len(sel) == 1
        assert math.isclose(an.steady_fraction(sel), s["clip_frac_steady"], rel_tol=1e-9, abs_tol=1e-12)
        x, y = an.series(sel[0], "eval/reward")
        assert list(x) == [3, 7, 11] and an.final_value(sel) == y[-1]  # no update count: the last evaluation
        updates = study.config["updates"]  # 12: the last 10% holds update 11 only
        assert an.final_value(sel, updates=updates) == s["final_reward"]  # the page's headline is the summary's
    assert rd.final_mean([(0, 1.0), (5, 2.0), (9, 4.0), (10, 6.0)], updates=10) == 5.0  # updates 9 and 10 >= 0.9 x 10
    assert rd.final_mean([(0, 1.0), (5, 2.0)], updates=10) == 2.0 and math.isnan(rd.final_mean([], 10))
    grpo = [an.steady_fraction(an.select(study.runs, "grpo", k)) for k in (0, 8)]
    assert grpo[1] > grpo[0]  # the page shows these: staleness changes the clip fraction


def test_seed_band_of_one_seed_is_the_series(study_dir):
    study = rd.load_study(study_dir)
    sel = an.select(study.runs, "grpo", 8)
    band = an.seed_band(sel, "clip/frac", window=3)
    x, y = an.series(sel[0], "clip/frac")
    assert band["n"] == 1 and list(band["update"]) == list(x)
    np.testing.assert_allclose(band["mean"], an.smooth(y, 3))
    np.testing.assert_allclose(band["min"], band["max"])
    assert an.seed_band(sel, "not/a/key") is None


def test_pooled_entropy_matches_the_report(study_dir):
    study = rd.load_study(study_dir)
    ref = pooled_entropy_bins(study, 8)
    ours = an.pooled_entropy_by_ratio(an.select(study.runs, staleness=8))
    assert ours["edges"] == ref["edges"] and list(ours["counts"]) == ref["counts"]
    seen = np.asarray(ref["counts"]) > 0
    np.testing.assert_allclose(ours["entropy"][seen], np.asarray(ref["entropy"])[seen], rtol=1e-12)
    assert np.isnan(ours["entropy"][~seen]).all()
    assert an.bin_labels([0.0, 0.01, None]) == ["0-0.01", "0.01-inf"]


def test_histograms_and_quantile_bands(study_dir):
    study = rd.load_study(study_dir)
    assert an.hist_updates(study.runs) == [0, 4, 8, 11]  # every hist_every and the last update
    run = study.runs[1]
    edges, counts = an.hist_at(run, 8)
    assert len(edges) == len(counts) + 1 and counts.sum() > 0
    assert an.hist_at(run, 0)[1].sum() == counts.sum()  # the same number of tokens each update
    with pytest.raises(KeyError):
        an.hist_at(run, 5)
    bands = an.quantile_bands(run)
    assert list(bands["update"]) == [0, 4, 8, 11] and bands["v"].shape == (4, len(bands["q"]))
    assert np.all(np.diff(bands["v"], axis=1) >= 0)  # quantiles are ordered
    np.testing.assert_array_equal(an.quantile(bands, 0.5), bands["v"][:, bands["q"].index(0.5)])
    with pytest.raises(KeyError, match="not logged"):
        an.quantile(bands, 0.33)


def test_numeric_keys_and_values_at(study_dir):
    study = rd.load_study(study_dir)
    keys = an.numeric_keys(study.runs)
    assert {"reward", "clip/frac", "eval/reward", "is/m2", "m2po/m2_before", "kl/k3"} <= set(keys)
    assert "update" not in keys and rd.HIST_KEY not in keys and rd.QUANTILE_KEY not in keys
    run = study.runs[0]
    at = an.values_at(run, ["reward", "eval/reward"], 5)
    assert at["reward"] == run.rows[5]["reward"]
    assert at["eval/reward"] == run.rows[3]["eval/reward"]  # the latest eval at or before update 5
    assert an.values_at(run, ["eval/reward"], 2) == {"eval/reward": None}
    assert an.update_range(study.runs) == (0, 11)


def test_summary_table_means_over_seeds():
    summary = {"runs": [
        {"method": "m2po", "staleness": 8, "seed": 0, "final_reward": 0.5, "peak_reward": 0.6, "clip_frac_mean": 0.0,
         "clip_frac_steady": 0.0, "m2_mean": 0.01, "collapsed": False},
        {"method": "m2po", "staleness": 8, "seed": 1, "final_reward": 0.7, "peak_reward": 0.8, "clip_frac_mean": 0.2,
         "clip_frac_steady": None, "m2_mean": 0.03, "collapsed": True},
        {"method": "grpo", "staleness": 0, "seed": 0, "final_reward": 0.9, "peak_reward": 0.9, "clip_frac_mean": 0.1,
         "clip_frac_steady": 0.1, "m2_mean": 0.0, "collapsed": False},
    ]}
    table = an.summary_table(summary)
    assert [(r["method"], r["staleness"], r["seeds"]) for r in table] == [("grpo", 0, 1), ("m2po", 8, 2)]
    m2po = table[1]
    assert m2po["final_reward"] == pytest.approx(0.6) and m2po["clip_frac_mean"] == pytest.approx(0.1)
    assert math.isnan(m2po["clip_frac_steady"]) and m2po["collapsed"] == 1


def test_smooth_is_a_trailing_mean():
    np.testing.assert_allclose(an.smooth([1, 2, 3, 4, 5], 2), [1, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(an.smooth([1, 2, 3, 4, 5], 3), [1, 1.5, 2, 3, 4])
    np.testing.assert_allclose(an.smooth([3.0, 1.0], 1), [3, 1])


# ---------------------------------------------------------------- a live study's folder
def test_study_cache_dir_and_progress(tmp_path, monkeypatch, study_dir):
    cfg = get_preset("quick", **TINY_STUDY).to_dict()
    a = an.study_cache_dir(cfg, tmp_path)
    assert a == an.study_cache_dir(dict(reversed(cfg.items())), tmp_path) and a.parent == tmp_path
    assert a != an.study_cache_dir({**cfg, "updates": 13}, tmp_path)
    monkeypatch.setenv("M2PO_LAB_CACHE", str(tmp_path / "env"))
    assert an.study_cache_dir(cfg).parent == tmp_path / "env"
    assert rd.study_progress(tmp_path, 12) == 0.0
    assert rd.study_progress(study_dir, 12) == 1.0 and rd.study_progress(study_dir, 24) == 0.5


def test_dir_signature_follows_the_files(tmp_path):
    run = write_run(tmp_path / "r", [row(0)])
    before = rd.dir_signature(run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row(1)) + "\n")
    assert rd.dir_signature(run) != before
    assert rd.dir_signature(tmp_path / "missing") == (str(tmp_path / "missing"), False)
    hash(rd.dir_signature(run))  # a cache key


# ---------------------------------------------------------------- LLM runs
def test_llm_style_run(llm_dir):
    run = rd.load_run(llm_dir)
    assert (run.kind, run.method, run.staleness, run.seed, run.status) == ("llm", "m2po", 16, 3, "incomplete")
    assert an.masked_tokens_at(run, 0) == (None, [])
    assert an.masked_tokens_at(run, 2) == (1, TOKENS)
    assert an.masked_tokens_at(run, 99) == (3, TOKENS[:1])
    assert an.masked_token_count(run) == 3
    assert "eval/accuracy" in an.numeric_keys([run]) and "tokens/zeroed" not in an.numeric_keys([run])


def test_real_llm_run_is_readable(tmp_path):
    pytest.importorskip("transformers")
    from m2po_lab.cli import main
    from m2po_lab.llm.models import build_tiny_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_tiny_model(tmp_path / "tiny", hidden=32, layers=2, heads=4, max_positions=64)
        out = tmp_path / "llm"
        args = ["train-llm", "--model", str(model), "--out", str(out), "--task", "arith", "--n-digits", "1",
                "--prompts-per-step", "4", "--group-size", "4", "--updates-per-step", "2", "--micro-batch-size", "4",
                "--max-new-tokens", "3", "--eval-every", "2", "--eval-prompts", "8", "--hist-every", "2",
                "--device", "cpu", "--no-progress", "--updates", "4", "--staleness", "2", "--method", "m2po"]
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    run = rd.load_run(out)
    assert (run.kind, run.method, run.staleness, run.status) == ("llm", "m2po", 2, "finished")
    assert len(run.rows) == 4 and "eval/accuracy" in an.numeric_keys([run])
    assert list(an.quantile_bands(run)["update"]) == [0, 2, 3]  # every hist_every and the last update


