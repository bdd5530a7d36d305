"""Shared by the explorer and run-directory tests: the tiny study config and AppTest helpers."""

from pathlib import Path

HOME = Path(__file__).resolve().parents[1] / "app" / "Home.py"
TINY_STUDY = dict(methods=("grpo", "m2po"), staleness=(0, 8), seeds=(0,), updates=12, warm_start_steps=300,
                  n_prompts=8, prompts_per_step=8, eval_every=4, hist_every=4)


def open_page(apptest, page: str, timeout: int = 90):
    """Start the app at Home.py, then switch to ``page`` (pages import app/_common via Home's path)."""
    at = apptest.from_file(str(HOME), default_timeout=timeout).run()
    assert not at.exception
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def metric(at, label: str) -> str:
    """The value of the one st.metric labelled ``label``."""
    values = [m.value for m in at.metric if m.label == label]
    assert len(values) == 1, [m.label for m in at.metric]
    return values[0]


def write_run(path, rows, kind: str = "toy", method: str = "m2po", staleness: int = 4, seed: int = 0,
              raw_tail: str = "", config: dict | None = None):
    """A hand-written run directory in the current format (docs/run_format.md): config.json + metrics.jsonl."""
    import json

    from m2po_lab.rundir import FORMAT

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + raw_tail)
    if config is None:
        if kind == "llm":
            config = {"format": FORMAT, "kind": "llm", "config": {"method": method, "staleness": staleness,
                                                                  "seed": seed}, "start": None}
        else:
            config = {"format": FORMAT, "kind": kind, "method": method, "staleness": staleness, "seed": seed,
                      "config": {}}
    (path / "config.json").write_text(json.dumps(config))
    return path
