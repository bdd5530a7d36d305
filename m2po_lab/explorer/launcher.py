"""Start the Streamlit explorer (``app/Home.py``) in a subprocess: the body of ``m2po-lab app``.

The app folder sits next to the package source (``<repo>/app``), so the explorer needs the
repository checkout (an editable install, ``pip install -e '.[app]'``); a wheel install has
no ``app/`` and :func:`find_app` says so.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

APP_HOME = Path(__file__).resolve().parents[2] / "app" / "Home.py"
"""Where the explorer's entry script is expected: ``<repo>/app/Home.py``."""


def find_app(home: Path | None = None) -> Path:
    """``home`` (default :data:`APP_HOME`) if it exists; ``FileNotFoundError`` saying how to get it."""
    home = APP_HOME if home is None else Path(home)
    if not home.is_file():
        raise FileNotFoundError(
            f"the explorer's entry script {home} does not exist. The app ships with the repository, "
            "not the wheel: clone the repository and install it editable, pip install -e '.[app]', "
            "then run m2po-lab app from that checkout."
        )
    return home


def streamlit_command(
    port: int | None = None, address: str = "127.0.0.1", headless: bool = True, extra_args=()
) -> list[str]:
    """The argv that serves the explorer: ``python -m streamlit run <repo>/app/Home.py ...``.

    ``port`` None lets Streamlit pick (8501, or the next free one). Usage statistics are off.
    """
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536):
        raise ValueError(f"port must be None or an integer in 1..65535, got {port!r}")
    cmd = [sys.executable, "-m", "streamlit", "run", str(find_app())]
    cmd += ["--server.address", address, "--server.headless", "true" if headless else "false"]
    cmd += ["--browser.gatherUsageStats", "false"]
    if port is not None:
        cmd += ["--server.port", str(port)]
    return cmd + [str(a) for a in extra_args]


RUNS_ROOT_ENV = "M2PO_LAB_RUNS_ROOT"
"""The explorer reads run directories only below this folder (``app/_common.py`` reads it)."""


def launch(port: int | None, address: str = "127.0.0.1", headless: bool = True, extra_args=(),
           runs_root=None) -> int:
    """Serve the explorer until it exits or Ctrl-C; returns Streamlit's exit code (130 on Ctrl-C).

    ``runs_root`` (default: the current directory) bounds what the pages read. Raises
    ``FileNotFoundError`` when ``app/Home.py`` or ``runs_root`` is missing and
    ``ModuleNotFoundError`` when Streamlit is not installed (``pip install -e '.[app]'``).
    """
    if importlib.util.find_spec("streamlit") is None:
        raise ModuleNotFoundError("the explorer needs Streamlit: pip install -e '.[app]'")
    root = Path(runs_root or os.getcwd()).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"runs_root={str(runs_root)!r} is not a directory")
    env = {**os.environ, RUNS_ROOT_ENV: str(root)}
    proc = subprocess.Popen(streamlit_command(port, address, headless, extra_args), env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the terminal's Ctrl-C reached Streamlit too; let it shut down
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 130
