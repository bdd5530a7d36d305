"""m2po_lab.llm.trackers (train-llm --report-to): TensorBoard read back, wandb and trackio through fakes."""

import math
import sys
import types

import pytest
from m2po_lab.llm import trackers as tr


def _row(step: int) -> dict:
    """A metrics.jsonl-like row: numbers (some nested keys, some only on some steps) and values to skip."""
    row = {"update": step, "loss": 0.5 - 0.01 * step, "clip/frac": step / 10, "time/update_s": 1.25,
           "is/log_ratio_quantiles": {"q": [0.5], "v": [0.0]}, "tokens/amplified": [{"token": "4"}],
           "reward_mode": "flexible", "finished": True, "kl/k3": None}
    if step % 3 == 0:
        row["eval/accuracy"] = step / 9
    if step == 4:
        row["grad_norm"] = float("nan")
    return row


NUMERIC = {"update", "loss", "clip/frac", "time/update_s", "eval/accuracy", "grad_norm"}
SKIPPED = {"is/log_ratio_quantiles", "tokens/amplified", "reward_mode", "finished", "kl/k3"}


def _same(a, b) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6)


def _read_tensorboard(out) -> dict:
    """{tag: [(step, value), ...]} of OUT/tensorboard as TensorBoard shows it (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_keeps_numbers_only():
    row = _row(3)
    got = tr.scalars(row)
    assert set(got) == NUMERIC - {"grad_norm"}
    assert all(got[k] == row[k] for k in got)
    assert math.isnan(tr.scalars(_row(4))["grad_norm"])


def test_tensorboard_reads_back_every_number(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    rows = {s: _row(s) for s in range(10)}
    with tr.open_tracker("tensorboard", out, {"lr": 1e-4}, "run") as t:
        for s, row in rows.items():
            t.log(row, s)
    got = _read_tensorboard(out)
    assert set(got) == NUMERIC and not set(got) & SKIPPED
    for key in NUMERIC:
        want = [(s, row[key]) for s, row in rows.items() if key in row]
        assert [s for s, _ in got[key]] == [s for s, _ in want], key
        assert all(_same(g, w) for (_, g), (_, w) in zip(got[key], want)), key
    assert [s for s, _ in got["eval/accuracy"]] == [0, 3, 6, 9]


@pytest.mark.parametrize("start", [5, 0])
def test_tensorboard_resume_shows_each_step_once(tmp_path, start):
    """An interrupted run logged 0..9 (A); the resume re-runs start..9 (B): TensorBoard shows B there."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    t = tr.open_tracker("tensorboard", out, {}, "run")
    for s in range(10):
        t.log({"loss": 1.0, "clip/frac": 0.1}, s)
    t.close()
    t = tr.open_tracker("tensorboard", out, {}, "run", start_update=start)
    for s in range(start, 10):
        t.log({"loss": 2.0, "clip/frac": 0.2}, s)
    t.close()
    got = _read_tensorboard(out)
    assert set(got) == {"loss", "clip/frac"}
    assert got["loss"] == [(s, 1.0 if s < start else 2.0) for s in range(10)]
    assert [s for s, _ in got["clip/frac"]] == list(range(10))


def test_check_report_to_names():
    for name in ("none", "tensorboard"):
        tr.check_report_to(name)
    with pytest.raises(ValueError) as e:
        tr.check_report_to("mlflow")
    msg = str(e.value)
    assert "report_to" in msg and "mlflow" in msg and "\n" not in msg
    assert all(name in msg for name in tr.TRACKERS)
    with pytest.raises(ValueError):
        tr.open_tracker("all", "unused", {}, "run")


@pytest.mark.parametrize("name", ["wandb", "trackio", "tensorboard"])
def test_check_report_to_missing_library(monkeypatch, tmp_path, name):
    monkeypatch.setitem(sys.modules, tr._MODULES[name], None)  # `import x` now raises ImportError
    with pytest.raises(ValueError) as e:
        tr.check_report_to(name)
    assert str(e.value) == f"report_to={name!r} needs the {name} package: pip install 'm2po-lab[{tr.EXTRAS[name]}]'"
    with pytest.raises(ValueError, match=r"pip install"):
        tr.open_tracker(name, tmp_path / "run", {}, "run")
    assert not (tmp_path / "run").exists()


def test_none_does_nothing(tmp_path):
    out = tmp_path / "run"
    t = tr.open_tracker("none", out, {"lr": 1.0}, "run")
    assert type(t) is tr.Tracker
    t.log(_row(0), 0)
    t.close()
    t.close()
    assert not out.exists()
    out.mkdir()
    tr.open_tracker("none", out, {}, "run", start_update=3).log(_row(3), 3)
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- fakes of wandb and trackio


class _Calls:
    def __init__(self):
        self.inits, self.logs, self.finishes = [], [], 0


def _fake_wandb(monkeypatch) -> _Calls:
    calls = _Calls()

    class Run:
        def log(self, data, step=None):
            calls.logs.append((dict(data), step))

        def finish(self):
            calls.finishes += 1

    def init(**kwargs):
        calls.inits.append(kwargs)
        return Run()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    return calls


def _fake_trackio(monkeypatch) -> _Calls:
    calls = _Calls()

    def init(project, name=None, config=None, resume="never"):
        calls.inits.append({"project": project, "name": name, "config": config, "resume": resume})

    def log(metrics, step=None):
        calls.logs.append((dict(metrics), step))

    def finish():
        calls.finishes += 1

    monkeypatch.setitem(sys.modules, "trackio", types.SimpleNamespace(init=init, log=log, finish=finish))
    return calls


def _sent(calls: _Calls) -> list:
    return [step for _, step in calls.logs]


def _check_values(calls: _Calls) -> None:
    for values, step in calls.logs:
        want = tr.scalars(_row(step))
        assert set(values) == set(want) and not set(values) & SKIPPED
        assert all(_same(values[k], want[k]) for k in want)


def test_wandb_adapter(monkeypatch, tmp_path):
    calls = _fake_wandb(monkeypatch)
    monkeypatch.setenv("WANDB_PROJECT", "proj")
    out = tmp_path / "run"
    tr.check_report_to("wandb")
    t = tr.open_tracker("wandb", out, {"lr": 1e-4}, "my-run")
    run_id = (out / "wandb_id").read_text().strip()
    assert calls.inits == [{"project": "proj", "name": "my-run", "dir": str(out), "config": {"lr": 1e-4},
                            "id": run_id, "resume": "allow"}]
    for s in range(10):
        t.log(_row(s), s)
    assert calls.finishes == 0
    t.close()
    t.close()
    assert calls.finishes == 1
    assert _sent(calls) == list(range(10))
    _check_values(calls)
    assert math.isnan(calls.logs[4][0]["grad_norm"])

    # resume from update 5 after the interrupted session sent 0..9: same run id, steps 5..9 not sent again
    monkeypatch.delenv("WANDB_PROJECT")
    calls.logs.clear()
    t = tr.open_tracker("wandb", out, {"lr": 1e-4}, "my-run", start_update=5)
    assert calls.inits[-1]["id"] == run_id and calls.inits[-1]["resume"] == "allow"
    assert calls.inits[-1]["project"] == "m2po-lab"
    for s in range(5, 13):
        t.log(_row(s), s)
    t.close()
    assert _sent(calls) == [10, 11, 12] and calls.finishes == 2
    _check_values(calls)
    assert (out / "wandb_id").read_text().strip() == run_id


def test_wandb_resume_after_a_crash(monkeypatch, tmp_path):
    """A session killed after sending step 7 (no close): the resume from 5 sends 8.. only."""
    calls = _fake_wandb(monkeypatch)
    out = tmp_path / "run"
    t = tr.open_tracker("wandb", out, {}, "r")
    for s in range(8):
        t.log(_row(s), s)
    del t
    t = tr.open_tracker("wandb", out, {}, "r", start_update=5)
    for s in range(5, 10):
        t.log(_row(s), s)
    t.close()
    assert _sent(calls) == list(range(10))
    assert calls.inits[0]["id"] == calls.inits[1]["id"]


def test_wandb_ids_differ_per_run_dir(monkeypatch, tmp_path):
    calls = _fake_wandb(monkeypatch)
    for d in ("a", "b"):
        tr.open_tracker("wandb", tmp_path / d, {}, "same-name").close()
    assert calls.inits[0]["id"] != calls.inits[1]["id"]


def test_trackio_adapter(monkeypatch, tmp_path):
    calls = _fake_trackio(monkeypatch)
    monkeypatch.setenv("TRACKIO_PROJECT", "tp")
    out = tmp_path / "run"
    tr.check_report_to("trackio")
    t = tr.open_tracker("trackio", out, {"lr": 1e-4}, "my-run")
    assert calls.inits == [{"project": "tp", "name": "my-run", "config": {"lr": 1e-4}, "resume": "never"}]
    for s in range(10):
        t.log(_row(s), s)
    t.close()
    t.close()
    assert calls.finishes == 1 and _sent(calls) == list(range(10))
    _check_values(calls)

    # resume: the stored run name, resume="allow", steps already sent are skipped
    calls.logs.clear()
    t = tr.open_tracker("trackio", out, {"lr": 1e-4}, "another-name", start_update=5)
    assert calls.inits[-1] == {"project": "tp", "name": "my-run", "config": {"lr": 1e-4}, "resume": "allow"}
    for s in range(5, 12):
        t.log(_row(s), s)
    t.close()
    assert _sent(calls) == [10, 11] and calls.finishes == 2
    _check_values(calls)


def test_same_step_twice_in_one_session_is_sent(monkeypatch, tmp_path):
    """Skipping is for steps of an earlier session only."""
    calls = _fake_trackio(monkeypatch)
    t = tr.open_tracker("trackio", tmp_path / "run", {}, "r")
    t.log({"eval/accuracy": 0.5}, 0)
    t.log({"loss": 1.0}, 0)
    t.close()
    assert calls.logs == [({"eval/accuracy": 0.5}, 0), ({"loss": 1.0}, 0)]
