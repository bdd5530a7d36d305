"""Explorer pages 2 and 3 in a real browser (Playwright + Debian's chromium), on a real tiny study.

The server, browser and page fixtures and the helpers are those of test_app_browser.py. The
directory to open is passed as the ``dir`` query parameter. Screenshots go to pytest's tmp dir.
"""

from __future__ import annotations

import math
import re
import shutil
import urllib.parse

import pytest

pytest.importorskip("streamlit")
from test_app_browser import (  # noqa: E402, F401  (server, browser, page are fixtures)
    _assert_no_error,
    _wait_idle,
    browser,
    page,
    server,
    sync_api,
)

from app_helpers import write_run  # noqa: E402

from m2po_lab import rundir as rd  # noqa: E402

GRPO_CLIP = '[data-testid="stMetric"]:has-text("grpo clip/frac") [data-testid="stMetricValue"]'
CHARTS = "n => document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length >= n"  # interactive charts




def _llm_run(path) -> None:
    """An LLM-style run: 12 updates, quantiles widening with time, masked tokens every other update."""
    rows = []
    for u in range(12):
        s = 0.02 * (1 + u)
        row = {**{k: 0.0 for k in rd.REQUIRED_KEYS}, "update": u, "staleness": 8, "reward": 0.3 + 0.03 * u,
               "clip/frac": 0.002 * u, "is/m2": s * s}
        row["is/log_ratio_quantiles"] = {"q": [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99],
                                         "v": [-2.3 * s, -1.6 * s, -0.7 * s, 0.0, 0.7 * s, 1.6 * s, 2.3 * s]}
        if u % 2:
            row["tokens/zeroed"] = [{"text": f"Q: {u} + {t} = ? A: the answer is", "token": f" {u + t}",
                                     "log_ratio": round(math.copysign(3 * s / (t + 1), 1 - 2 * (t % 2)), 3)}
                                    for t in range(4)]
        if u % 4 == 3:
            row["eval/accuracy"] = 0.2 + 0.05 * u
        rows.append(row)
    write_run(path, rows, kind="llm", method="m2po", staleness=8)


def _url(server: str, page: str, path) -> str:
    return f"{server}/{page}?dir={urllib.parse.quote(str(path))}"


def _move(page, slider_name: str, key: str, watched: str) -> tuple[str, str]:
    """Press ``key`` on a slider; wait until ``watched`` shows new text: (before, after)."""
    before = page.locator(watched).first.inner_text()
    thumb = page.get_by_role("slider", name=slider_name)
    thumb.focus()
    thumb.press(key)
    sync_api.expect(page.locator(watched).first).not_to_have_text(before, timeout=45_000)
    _wait_idle(page)
    return before, page.locator(watched).first.inner_text()


def test_page2_staleness_slider(server, page, study_dir, tmp_path):
    page.goto(_url(server, "Staleness_study", study_dir))
    page.wait_for_function(CHARTS, arg=4)
    _wait_idle(page)
    _assert_no_error(page)
    thumb = page.get_by_role("slider", name="staleness shown")
    assert thumb.get_attribute("aria-valuetext") == "8"
    before, after = _move(page, "staleness shown", "ArrowLeft", GRPO_CLIP)  # staleness 8 -> 0
    assert thumb.get_attribute("aria-valuetext") == "0"
    assert float(after.rstrip("%")) < float(before.rstrip("%")), (before, after)
    _assert_no_error(page)
    page.set_viewport_size({"width": 1400, "height": 2600})
    page.wait_for_function(CHARTS, arg=4)
    _wait_idle(page)
    page.screenshot(path=str(tmp_path / "page2.png"), full_page=True)


def test_page3_cursor_slider(server, page, study_dir, tmp_path):
    folder = tmp_path / "runs"
    shutil.copytree(study_dir / "runs" / "grpo_s8_seed0", folder / "grpo_s8_seed0")
    shutil.copytree(study_dir / "runs" / "m2po_s8_seed0", folder / "m2po_s8_seed0")
    _llm_run(folder / "llm_m2po_s8")
    page.goto(_url(server, "Run_browser", folder))
    page.wait_for_function(CHARTS, arg=6)  # five metrics and the quantile bands, interactive
    _wait_idle(page)
    _assert_no_error(page)
    sync_api.expect(page.locator("mark")).to_have_count(4)  # the LLM run's masked tokens at update 11
    before, after = _move(page, "update (cursor)", "ArrowLeft", '[data-testid="stTable"]')  # update 11 -> 10
    sync_api.expect(page.get_by_text("Values at update 10")).to_be_visible()
    assert after != before
    # the latest masked tokens at or before update 10: those of update 9, " 9 + t" for t = 0..3
    sync_api.expect(page.locator("mark").first).to_have_text(re.compile(r"^\s*9$"), timeout=45_000)
    _assert_no_error(page)
    page.set_viewport_size({"width": 1400, "height": 2600})
    page.wait_for_function(CHARTS, arg=5)
    _wait_idle(page)
    page.screenshot(path=str(tmp_path / "page3.png"), full_page=True)
