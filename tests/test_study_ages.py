"""Variable-age batches in the toy study (m2po_lab.study.ages): stale-k as the special case, bit for bit."""

import json
import shutil

import pytest
import torch

from m2po_lab import rundir as rd
from m2po_lab.cli import main
from m2po_lab.study import StudyConfig, get_preset, read_metrics, run_study
from m2po_lab.study import runner as runner_mod
from m2po_lab.study.ages import AGE_SEED, AgeSampler
from m2po_lab.study.runner import AGE_MAX, AGE_MEAN, RunSpec

TINY = ["study", "--preset", "quick", "--methods", "grpo", "m2po", "--seeds", "0", "--updates", "20",
        "--eval-every", "5", "--hist-every", "10", "--checkpoint-every", "6", "--warm-start-steps", "20",
        "--n-prompts", "8", "--prompts-per-step", "8", "--no-progress", "--staleness", "0", "8"]
POINT_8 = ["--ages", *["0"] * 8, "1"]  # every group exactly 8 updates old
MIXED = ["--ages", "1", "0", "0", "0", "2", "0", "0", "0", "1"]  # ages 0, 4, 8 with P = 1/4, 1/2, 1/4
KW = dict(methods=("grpo", "m2po"), seeds=(0, 1), updates=20, eval_every=5, hist_every=10, warm_start_steps=20,
          n_prompts=8, prompts_per_step=8, staleness=(0, 8))


def _metrics(out) -> dict:
    return {p.parent.name: p.read_bytes() for p in sorted((out / "runs").glob("*/metrics.jsonl"))}


@pytest.fixture(scope="module")
def fixed_ref(tmp_path_factory):
    """The stale-k study (staleness 0 and 8), written once."""
    out = tmp_path_factory.mktemp("fixed") / "study"
    assert main([*TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def mixed_ref(tmp_path_factory):
    """The variable-age study (ages 0, 4, 8), written once, uninterrupted."""
    out = tmp_path_factory.mktemp("mixed") / "study"
    assert main([*TINY, *MIXED, "--out", str(out)]) == 0
    return out


def test_constant_ages_reproduce_stale_k_bit_for_bit(tmp_path, fixed_ref):
    """A point mass at k is today's stale-k run: every metrics.jsonl identical, byte for byte."""
    assert main([*TINY, *POINT_8, "--out", str(tmp_path / "point")]) == 0
    fixed, point = _metrics(fixed_ref), _metrics(tmp_path / "point")
    assert len(fixed) == 4 and fixed == point
    rows = read_metrics(fixed_ref / "runs" / "m2po_s8_seed0" / rd.METRICS)
    assert [r["staleness"] for r in rows[8:12]] == [8, 9, 10, 11]  # integers, as before
    assert all(r[AGE_MEAN] == r["staleness"] == r[AGE_MAX] for r in rows)


def test_variable_ages_are_logged_and_mixed(mixed_ref):
    rows = read_metrics(mixed_ref / "runs" / "m2po_s8_seed0" / rd.METRICS)
    on_policy = read_metrics(mixed_ref / "runs" / "m2po_s0_seed0" / rd.METRICS)
    assert [r["staleness"] for r in on_policy[:4]] == [0, 1, 2, 3]  # staleness 0 stays on-policy
    for r in rows:
        assert r["staleness"] == r[AGE_MEAN] <= r[AGE_MAX] <= 8 + 3  # at most the bound, plus the mini-batch index
    assert any(r[AGE_MEAN] != r[AGE_MAX] for r in rows[8:])  # some mini-batch mixes ages


def _sampler(ages, specs, U=4):
    return AgeSampler(ages, U, specs)


def test_age_draws_follow_the_weights_and_round_up_to_rollout_steps():
    specs = [RunSpec("m2po", 8, 0)]
    s = _sampler((1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0), specs)
    d = torch.cat([s.depths(32) for _ in range(500)], 1)[0]  # (16000,) depths in rollout steps
    freq = torch.bincount(d, minlength=3).double() / len(d)
    assert torch.allclose(freq, torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64), atol=0.02)
    odd = _sampler((0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0), specs)  # ages 1, 5, 8 updates
    assert set(odd.depths(64)[0].tolist()) <= {1, 2} and odd.max_depth == 2  # ceil(1/4) = 1, ceil(5/4) = 2


def test_runs_of_a_seed_share_their_ages_and_stale_k_runs_draw_nothing():
    specs = [RunSpec("grpo", 8, 0), RunSpec("m2po", 8, 0), RunSpec("m2po", 8, 1), RunSpec("m2po", 0, 0)]
    s = _sampler((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), specs)
    d = s.depths(16)
    assert torch.equal(d[0], d[1]) and not torch.equal(d[1], d[2])  # common random numbers per seed
    assert s.variable == [0, 1, 2] and d[3].tolist() == [0] * 16
    again = _sampler((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), specs)
    assert torch.equal(again.depths(16), d)  # same seed, same ages
    g = torch.Generator().manual_seed(AGE_SEED)
    assert s.gens[0].get_state().shape == g.get_state().shape


def test_each_group_comes_from_the_rollout_step_its_age_names(one_thread):
    """The batch a run trains at step s: group i was generated at rollout step s - depth_i (base policy: version 0)."""
    cfg = get_preset("quick", **{**KW, "ages": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)})
    study = runner_mod.BatchedStudy(cfg)
    twin = AgeSampler(cfg.ages, cfg.updates_per_step, study.specs)  # the same streams, drawn in step
    U, G = cfg.updates_per_step, cfg.group_size
    for step in range(6):
        study.update = step * U  # the version a batch generated now is stamped with
        batch = study._stale_batch(step)
        depth = twin.depths(cfg.prompts_per_step)  # (R, P)
        want = ((step - depth).clamp(min=0) * U).repeat_interleave(G, dim=1)  # before any history: base, version 0
        assert torch.equal(batch["version"], want)
        assert len(study.rollouts) <= study.ages.max_depth + 1  # memory bounded by the largest age
    assert study.ages.max_depth == 2


def test_bad_ages_are_one_line_errors_and_write_nothing(tmp_path, capsys):
    for args, words in ((["--ages", "1", "-1"], "finite weights >= 0"),
                        (["--ages", "1", "0"], "end with a weight > 0"),
                        (["--ages", "1", "0", "0", "0", "1"], "staleness must be (4,) or (0, 4)")):
        out = tmp_path / "bad"
        assert main([*TINY, *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
        assert not out.exists()


def test_interrupted_variable_age_study_resumes_exactly(tmp_path, monkeypatch, mixed_ref):
    """Crash between checkpoints (mid rollout step), resume: the age streams and the kept rollouts come back."""
    original, calls = runner_mod.BatchedStudy._update, {"n": 0}

    def crashing(self, mb):
        calls["n"] += 1
        if calls["n"] > 15:  # after the checkpoint at update 12, mid-way through a rollout step
            raise KeyboardInterrupt
        return original(self, mb)

    monkeypatch.setattr(runner_mod.BatchedStudy, "_update", crashing)
    with pytest.raises(KeyboardInterrupt):
        main([*TINY, *MIXED, "--out", str(tmp_path / "cut")])
    assert (tmp_path / "cut" / rd.CHECKPOINT).exists()
    monkeypatch.setattr(runner_mod.BatchedStudy, "_update", original)
    assert main([*TINY, *MIXED, "--out", str(tmp_path / "cut")]) == 0
    assert _metrics(tmp_path / "cut") == _metrics(mixed_ref)


def test_a_checkpoint_from_before_variable_ages_resumes(one_thread):
    """No age streams, one version per run: loaded, and training continues as if never interrupted."""
    cfg = get_preset("quick", **KW)
    a, b = runner_mod.BatchedStudy(cfg), runner_mod.BatchedStudy(cfg)
    it = a.steps()
    for _ in range(6):  # mid rollout step
        next(it)
    state = a.state_dict()
    del state["age_gens"]
    for batch in [*state["rollouts"].values(), state["batch"]]:
        batch["version"] = batch["version"][:, 0].clone()  # (R,): the old format
    b.load_state_dict(state)
    rest_a = [out["reward"] for out, _ in it]
    rest_b = [out["reward"] for out, _ in b.steps()]
    assert torch.equal(torch.stack(rest_a), torch.stack(rest_b))


def test_a_study_written_before_the_ages_field_is_still_recognised(tmp_path, fixed_ref):
    shutil.copytree(fixed_ref, tmp_path / "s")
    doc = json.loads((tmp_path / "s" / rd.CONFIG).read_text())
    cfg = StudyConfig.from_dict(doc["config"])
    del doc["config"]["ages"]  # as written by an older version
    (tmp_path / "s" / rd.CONFIG).write_text(json.dumps(doc))
    assert run_study(cfg, tmp_path / "s", progress=False)["already_finished"]
