"""Screenshot every explorer page in a real browser, with the runs below a runs root in place.

    python experiments/explorer_screenshots.py --runs-root runs --out /tmp/shots

Starts ``m2po-lab app`` (headless, no terminal) on a free port with ``--runs-root``, opens
each page in chromium (Playwright; ``--chromium`` or the first ``chromium`` on PATH), waits
until Streamlit is idle and every chart is drawn, hovers the first interactive chart to
show that its tooltip answers, and saves one full-page PNG per page. Prints one line per
page: the file, the number of interactive charts and static images, and any error shown.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PAGES = ("", "Importance_weights", "Staleness_study", "Run_browser", "Systems")
CHARTS = '[data-testid="stVegaLiteChart"]'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(runs_root: Path, port: int, log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("m2po-lab")
    out = open(log, "w")
    proc = subprocess.Popen([str(exe), "app", "--port", str(port), "--runs-root", str(runs_root)],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"m2po-lab app exited: {log.read_text()}")
            time.sleep(0.5)
    raise SystemExit("m2po-lab app did not come up in 60 s")


def _idle(page, quiet_checks: int = 4, limit_s: float = 180) -> None:
    """Until Streamlit's 'Running...' widget has been absent for ``quiet_checks`` checks 0.5 s apart."""
    quiet, start = 0, time.time()
    while quiet < quiet_checks and time.time() - start < limit_s:
        page.wait_for_timeout(500)
        quiet = quiet + 1 if page.locator('[data-testid="stStatusWidget"]').count() == 0 else 0


def hover_tooltip(page) -> str:
    """Hover a grid of points over the first interactive chart until Vega's tooltip shows; its text."""
    chart = page.locator(CHARTS).first
    box = chart.bounding_box()
    if box is None:
        return ""
    for fy in (0.45, 0.35, 0.55, 0.25, 0.65, 0.3, 0.4, 0.5, 0.2):
        for fx in (0.5, 0.48, 0.52, 0.45, 0.55, 0.4, 0.6, 0.3, 0.7, 0.25, 0.2, 0.15, 0.35):
            page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
            page.wait_for_timeout(120)
            tip = page.locator("#vg-tooltip-element.visible")
            if tip.count():
                return " | ".join(x.strip() for x in tip.first.inner_text().split("\n") if x.strip())
    return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-root", type=Path, default=Path("runs"), help="the folder the explorer lists runs from")
    ap.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    ap.add_argument("--chromium", default=shutil.which("chromium"), help="chromium executable (default: on PATH)")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--also", nargs="*", default=[], metavar="PAGE?dir=PATH",
                    help="more pages to shoot, e.g. Run_browser?dir=runs/tiny (a path below the runs root)")
    args = ap.parse_args()
    if not args.chromium:
        raise SystemExit("--chromium: no chromium on PATH; install it (Debian: apt-get install chromium) or name it")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    proc = _serve(args.runs_root.resolve(), port, args.out / "app.log")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": args.width, "height": 3000})
            page.set_default_timeout(120_000)
            for name in (*PAGES, *args.also):
                page.goto(f"http://127.0.0.1:{port}/{name}")
                page.locator('[data-testid="stMain"]').wait_for()
                _idle(page)
                page.wait_for_timeout(1500)  # Vega draws after the script finishes
                charts, images = page.locator(CHARTS).count(), page.locator('[data-testid="stImage"]').count()
                tip = hover_tooltip(page) if charts else ""
                errors = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
                shot = args.out / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name or "Home") + ".png")
                page.screenshot(path=str(shot), full_page=True)
                err = " | ".join(errors.all_inner_texts())[:200] if errors.count() else "none"
                print(f"{shot}: {charts} interactive charts, {images} images; tooltip: {tip or '-'}; errors: {err}")
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
