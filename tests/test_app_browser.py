"""The explorer in a real browser: serve it with the launcher's command, drive it with Playwright.

Needs Debian's ``chromium`` on PATH and the ``playwright`` Python package (CI installs both;
``playwright install`` is not used: the system Chromium is launched by path). Screenshots go
to pytest's tmp dir; with ``M2PO_SAVE_SCREENSHOTS=1`` page 1 is also saved to
``docs/img/explorer_page1.png``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from m2po_lab.explorer import launcher as app_launcher

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
MASK_METRIC = '[data-testid="stMetric"]:has-text("M2PO mask fraction") [data-testid="stMetricValue"]'
CHARTS = "n => document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length >= n"  # interactive charts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(proc: subprocess.Popen, url: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"streamlit did not serve {url} within {timeout} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The explorer served headless on 127.0.0.1 at a free port; always terminated."""
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    port = _free_port()
    extra = ["--server.fileWatcherType", "none"]
    cmd = app_launcher.streamlit_command(port, "127.0.0.1", headless=True, extra_args=extra)
    with open(log, "w") as out:
        env = {**os.environ, app_launcher.RUNS_ROOT_ENV: str(tmp_path_factory.getbasetemp())}  # the tests' dirs
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_serving(proc, url, log)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: only streamlit and its children
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = context.new_page()
    p.set_default_timeout(45_000)
    yield p
    context.close()


def _wait_idle(page) -> None:
    """Until Streamlit's 'Running...' indicator is gone (the script finished)."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached")


def _assert_no_error(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Traceback" not in page.inner_text("body")


def test_home_page(server, page, tmp_path):
    page.goto(server)
    page.get_by_text("stale rollouts", exact=False).first.wait_for()
    _wait_idle(page)
    _assert_no_error(page)
    assert page.locator('[data-testid="stPageLink"]').count() >= 1
    page.screenshot(path=str(tmp_path / "home.png"), full_page=True)


def test_page1_slider_changes_mask_fraction(server, page, tmp_path):
    page.goto(f"{server}/Importance_weights")
    page.wait_for_function(CHARTS, arg=3)  # histogram, scatter, weights: interactive (Vega-Lite)
    _wait_idle(page)
    _assert_no_error(page)
    before = page.locator(MASK_METRIC).inner_text()
    assert before.endswith("%")

    # tau: 0.04 -> 0.02 with the keyboard (one option to the left); a tighter budget masks more.
    thumb = page.get_by_role("slider", name="M2PO budget tau")  # an <input type=range>
    assert thumb.get_attribute("aria-valuetext") == "0.04"
    thumb.focus()
    thumb.press("ArrowLeft")
    sync_api.expect(page.locator(MASK_METRIC)).not_to_have_text(before, timeout=45_000)
    _wait_idle(page)
    after = page.locator(MASK_METRIC).inner_text()
    assert float(after.rstrip("%")) > float(before.rstrip("%")), (before, after)
    assert thumb.get_attribute("aria-valuetext") == "0.02"
    _assert_no_error(page)

    page.set_viewport_size({"width": 1400, "height": 2450})  # the page scrolls inside its own container
    page.wait_for_function(CHARTS, arg=3)  # histogram, scatter, weights: interactive (Vega-Lite)
    _wait_idle(page)
    # the charts answer the cursor: hovering the histogram shows a bar's quadrant, count and log r range
    sys.path.insert(0, str(REPO / "experiments"))
    from explorer_screenshots import hover_tooltip

    tip = hover_tooltip(page)
    assert "quadrant" in tip and "tokens" in tip and "log r from" in tip, tip
    page.screenshot(path=str(tmp_path / "page1.png"), full_page=True)
    if os.environ.get("M2PO_SAVE_SCREENSHOTS") == "1":
        out = REPO / "docs" / "img" / "explorer_page1.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)


def test_m2po_lab_app_comes_up_with_no_terminal_and_no_prompt(browser, tmp_path):
    """The user's command, as a newcomer runs it: `m2po-lab app` with stdin closed, no terminal, a fresh
    HOME (no ~/.streamlit: Streamlit would ask for an e-mail address if it were not headless); it prints
    the URL, says nothing about usage statistics, and a real browser gets the Home page."""

    home = tmp_path / "home"
    home.mkdir()
    port = _free_port()
    log = tmp_path / "app.log"
    exe = Path(sys.executable).with_name("m2po-lab")
    env = {**os.environ, "HOME": str(home), app_launcher.RUNS_ROOT_ENV: str(tmp_path)}
    with open(log, "w") as out:
        proc = subprocess.Popen([str(exe), "app", "--port", str(port)], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_serving(proc, url, log)
        p = browser.new_page()
        try:
            p.set_default_timeout(45_000)
            p.goto(url)
            p.get_by_text("stale rollouts", exact=False).first.wait_for()
            _wait_idle(p)
            _assert_no_error(p)
        finally:
            p.close()
        text = log.read_text()
        assert proc.poll() is None, text  # still serving: no prompt made it exit
        assert url in text and "email" not in text.lower() and "usage statistics" not in text.lower(), text
        assert not (home / ".streamlit" / "credentials.toml").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
