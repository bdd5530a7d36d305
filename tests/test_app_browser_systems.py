"""Explorer page 4 (Systems) in a real browser (Playwright + Debian's chromium).

The server, browser and page fixtures and the helpers are those of test_app_browser.py. With
``M2PO_SAVE_SCREENSHOTS=1`` the page is also saved to ``docs/img/explorer_systems.png``.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("streamlit")
pytest.importorskip("simpy")
from test_app_browser import (  # noqa: E402, F401  (server, browser, page are fixtures)
    REPO,
    _assert_no_error,
    _wait_idle,
    browser,
    page,
    server,
    sync_api,
)

MEAN_AGE = '[data-testid="stMetric"]:has-text("mean sample age (versions)") [data-testid="stMetricValue"]'
IMAGES = "n => document.querySelectorAll('[data-testid=\"stImage\"]').length >= n"


@pytest.mark.slow
def test_page4_bound_slider_moves_the_ages(server, page, tmp_path):
    page.goto(f"{server}/Systems")
    page.wait_for_function(IMAGES, arg=2)
    _wait_idle(page)
    _assert_no_error(page)
    before = page.locator(MEAN_AGE).inner_text()
    thumb = page.get_by_role("slider", name="staleness bound eta (versions)")
    assert thumb.get_attribute("aria-valuetext") == "2"
    thumb.focus()
    thumb.press("ArrowRight")  # eta 2 -> 4
    sync_api.expect(page.locator(MEAN_AGE)).not_to_have_text(before, timeout=45_000)
    _wait_idle(page)
    assert thumb.get_attribute("aria-valuetext") == "4"
    assert float(page.locator(MEAN_AGE).inner_text()) > float(before), (before, page.locator(MEAN_AGE).inner_text())
    _assert_no_error(page)
    page.screenshot(path=str(tmp_path / "systems.png"), full_page=True)
    if os.environ.get("M2PO_SAVE_SCREENSHOTS") == "1":
        page.screenshot(path=str(REPO / "docs" / "img" / "explorer_systems.png"), full_page=True)
