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
