"""Tiny end-to-end runs of the real study entry point (the CLI)."""

import json

import pytest
import torch

from m2po_lab.cli import main
from m2po_lab.study import PRESETS, StudyConfig, get_preset, read_metrics, run_study
from m2po_lab.study import runner as runner_mod

TINY = [
    "study", "--preset", "quick", "--methods", "grpo", "no_tr", "m2po", "--staleness", "0", "8", "--seeds", "0", "1",
    "--updates", "20", "--eval-every", "5", "--hist-every", "10", "--checkpoint-every", "8",
    "--warm-start-steps", "20", "--n-prompts", "8", "--prompts-per-step", "8", "--no-progress",
]
SUMMARY_KEYS = {"method", "staleness", "seed", "final_reward", "peak_reward", "peak_update", "clip_frac_mean",
                "m2_mean", "collapsed", "wall_s"}
ROW_KEYS = {"update", "staleness", "reward", "loss", "entropy", "grad_norm", "is/m2", "clip/frac", "is/ratio_mean",
            "is/ratio_max", "is/log_ratio_abs_p99", "kl/k1", "kl/k3", "data/fixed_ok"}
EVAL_KEYS = ("eval/reward", "eval/fixed_ok", "eval/fork_acc", "eval/entropy_fixed", "eval/entropy_fork")


def _metrics(out):
    return {p.parent.name: p.read_text() for p in sorted((out / "runs").glob("*/metrics.jsonl"))}


def test_cli_study_writes_every_artifact(tmp_path):
    out = tmp_path / "study"
    assert main([*TINY, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"config", "runs"}
    assert StudyConfig.from_dict(summary["config"]).updates == 20
    assert len(summary["runs"]) == 3 * 2 * 2
    for run in summary["runs"]:
        assert SUMMARY_KEYS <= set(run)
        assert isinstance(run["collapsed"], bool)
    for name, text in _metrics(out).items():
        rows = [json.loads(line) for line in text.splitlines()]
        assert [r["update"] for r in rows] == list(range(20)), name
        for r in rows:
            assert ROW_KEYS <= set(r), name
            assert 0 <= r["data/fixed_ok"] <= 1, name
        if name.startswith("m2po"):
            assert {"m2po/m2_before", "m2po/candidates", "m2po/threshold"} <= set(rows[0])
        evals = [r for r in rows if "eval/reward" in r]
        assert [r["update"] for r in evals] == [4, 9, 14, 19]
        for r in evals:
            assert set(EVAL_KEYS) <= set(r), name
            assert 0 <= r["eval/fork_acc"] <= 1 and r["eval/entropy_fixed"] >= 0 and r["eval/entropy_fork"] >= 0
            assert r["eval/reward"] <= r["eval/fixed_ok"] + 1e-9  # graded reward = fixed_ok x fork fraction
        hists = [r for r in rows if "is/log_ratio_hist" in r]
        assert [r["update"] for r in hists] == [0, 10, 19]
        h = hists[-1]
        assert len(h["is/log_ratio_hist"]["counts"]) == len(h["is/log_ratio_hist"]["edges"]) - 1
        assert len(h["entropy/by_ratio"]["entropy"]) == len(h["entropy/by_ratio"]["counts"])
        s8 = [r["staleness"] for r in rows] if "_s8_" in name else None
        if s8:  # 4 updates per step, depth 2 steps: staleness 0..7 while on base batches, then 8..11
            assert s8[:8] == list(range(8)) and s8[8:12] == [8, 9, 10, 11]
    for fig in ("reward_by_method", "grpo_staleness_sweep", "clip_fraction", "competence", "entropy_vs_ratio",
                "log_ratio_histograms"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "Phenomena" in report and "| grpo |" in report
    assert not (out / "checkpoint.pt").exists()  # removed once the study finished


def test_same_seed_same_metrics(tmp_path):
    main([*TINY, "--out", str(tmp_path / "a")])
    main([*TINY, "--out", str(tmp_path / "b")])
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")


def test_interrupted_study_resumes_without_duplicates(tmp_path, monkeypatch):
    main([*TINY, "--out", str(tmp_path / "full")])
    original = runner_mod.BatchedStudy._update
    calls = {"n": 0}

    def crashing(self, mb):
        calls["n"] += 1
        if calls["n"] > 13:  # after the checkpoint at update 8, mid-way to the next
            raise KeyboardInterrupt
        return original(self, mb)

    monkeypatch.setattr(runner_mod.BatchedStudy, "_update", crashing)
    with pytest.raises(KeyboardInterrupt):
        main([*TINY, "--out", str(tmp_path / "resumed")])
    partial = read_metrics(tmp_path / "resumed" / "runs" / "m2po_s8_seed0" / "metrics.jsonl")
    assert [r["update"] for r in partial] == list(range(13))  # lines past the checkpoint exist...
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    monkeypatch.setattr(runner_mod.BatchedStudy, "_update", original)
    assert main([*TINY, "--out", str(tmp_path / "resumed")]) == 0  # ...and are replaced on resume
    assert _metrics(tmp_path / "resumed") == _metrics(tmp_path / "full")


@pytest.mark.parametrize(
    "args, match",
    [
        (["--methods", "grpo", "ppo9"], "methods='ppo9'"),
        (["--preset", "huge"], "preset='huge'"),
        (["--staleness", "-4"], "staleness"),
        (["--staleness", "6"], "multiple of updates_per_step"),
        (["--seeds"], None),
        (["--updates", "0"], "updates"),
    ],
)
def test_bad_configuration_is_a_clear_error_and_writes_nothing(tmp_path, capsys, args, match):
    out = tmp_path / "bad"
    if match is None:  # argparse: --seeds needs at least one value
        with pytest.raises(SystemExit):
            main(["study", "--out", str(out), *args])
    else:
        assert main(["study", "--out", str(out), *args]) == 2
        assert match in capsys.readouterr().err
    assert not out.exists()


def test_empty_seeds_in_python_api():
    with pytest.raises(ValueError, match="seeds"):
        get_preset("quick", seeds=())


def test_out_dir_with_another_study_is_refused(tmp_path):
    main([*TINY, "--out", str(tmp_path / "s")])
    with pytest.raises(ValueError, match="different config"):
        run_study(get_preset("quick", updates=21), tmp_path / "s", progress=False)


def test_batched_runs_do_not_interact():
    """A run's trajectory does not depend on the other runs trained beside it."""
    torch.manual_seed(0)
    small = get_preset("quick", methods=("m2po",), staleness=(8,), seeds=(1,), updates=12, warm_start_steps=10,
                       n_prompts=8, prompts_per_step=8)
    big = get_preset("quick", methods=("grpo", "m2po"), staleness=(0, 8), seeds=(0, 1), updates=12,
                     warm_start_steps=10, n_prompts=8, prompts_per_step=8)
    a, b = runner_mod.BatchedStudy(small), runner_mod.BatchedStudy(big)
    ra = [out["reward"][0].item() for out, _ in a.steps()]
    idx = [i for i, s in enumerate(b.specs) if s == a.specs[0]][0]
    rb = [out["reward"][idx].item() for out, _ in b.steps()]
    assert ra == rb


def test_phenomena_are_not_judged_when_nothing_was_learned():
    from m2po_lab.study.report import check_phenomena

    runs = [dict(method=m, staleness=s, seed=0, final_reward=0.0, peak_reward=0.0, clip_frac_mean=0.0,
                 clip_frac_steady=0.0, collapsed=False) for m in ("grpo", "no_tr", "m2po") for s in (0, 8)]
    checks = check_phenomena(runs, None)
    assert [c["held"] for c in checks] == [None] * 5
    assert "earned no reward" in checks[0]["detail"]


def test_evaluate_detail_matches_a_by_hand_count(one_thread):
    """fixed_ok, fork_acc and the entropies recomputed from the same samples, teacher-forced."""
    from toy_envs import policies as pol

    cfg = get_preset("quick", methods=("grpo",), staleness=(0,), seeds=(0, 1), warm_start_steps=200, n_prompts=8,
                     prompts_per_step=8)
    study = runner_mod.BatchedStudy(cfg)
    with torch.no_grad():  # move the two runs apart so a run mix-up would show
        study.params["b2"][1] += torch.linspace(-1, 1, cfg.vocab_size)
    detail = study.evaluate_detail()
    task, R = study.task, 2
    prompts = torch.arange(cfg.n_prompts).repeat(cfg.eval_samples).expand(R, -1)
    responses, _ = pol.sample(study.params, prompts, pol.run_generators([runner_mod.EVAL_SEED] * R))
    ent = pol.entropy(study.params, prompts, responses).detach()
    for r in range(R):
        resp, p = responses[r], prompts[r]
        fixed_ok = [all(int(resp[i, t]) == int(task.fixed_target[p[i], t]) for t in range(resp.shape[1])
                        if not task.is_fork[t]) for i in range(len(p))]
        forks = [int(resp[i, f]) == int(task.fork_base[p[i], j]) for i in range(len(p))
                 for j, f in enumerate(task.fork_positions.tolist())]
        assert detail["fixed_ok"][r].item() == pytest.approx(sum(fixed_ok) / len(fixed_ok))
        assert detail["fork_acc"][r].item() == pytest.approx(sum(forks) / len(forks))
        assert detail["entropy_fixed"][r].item() == pytest.approx(ent[r][:, ~task.is_fork].mean().item(), rel=1e-5)
        assert detail["entropy_fork"][r].item() == pytest.approx(ent[r][:, task.is_fork].mean().item(), rel=1e-5)
    assert torch.equal(detail["reward"], study.evaluate())
    assert detail["fixed_ok"][0] != detail["fixed_ok"][1]  # the two runs differ, so a run mix-up would fail
    assert 0 < detail["fixed_ok"].min() and detail["reward"].max() > 0  # a warm start that did something


def test_a_runs_evaluation_does_not_depend_on_the_other_runs(one_thread):
    """The same policy evaluates to the same numbers alone and as one run of a bigger study."""
    kw = dict(warm_start_steps=20, n_prompts=8, prompts_per_step=8)
    big = runner_mod.BatchedStudy(get_preset("quick", methods=("grpo", "m2po"), staleness=(0, 8), seeds=(0, 1), **kw))
    small = runner_mod.BatchedStudy(get_preset("quick", methods=("grpo",), staleness=(0,), seeds=(1,), **kw))
    i = next(j for j, spec in enumerate(big.specs) if spec.method == "m2po" and spec.staleness == 8 and spec.seed == 1)
    with torch.no_grad():
        for k in small.params:
            small.params[k].copy_(big.params[k][i : i + 1])
    got, want = small.evaluate_detail(), big.evaluate_detail()
    for k in want:
        assert torch.equal(got[k][0], want[k][i]), k


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_trains(name, one_thread):
    """Each preset's methods and task build and take a few updates (shortened, not its real length)."""
    cfg = get_preset(name, updates=4, warm_start_steps=5, seeds=(0,), eval_every=2, hist_every=2,
                     staleness=(0, 4))
    study = runner_mod.BatchedStudy(cfg)
    for out, per_run in study.steps():
        assert torch.isfinite(out["grad_norm"]).all()
    assert study.update == 4 and len(study.specs) == len(cfg.methods) * 2
