"""m2po_lab.explorer.launcher: the command that serves the explorer."""

from __future__ import annotations

from pathlib import Path

import pytest

from app_helpers import HOME

from m2po_lab.explorer import launcher as app_launcher


def test_launcher_command():
    cmd = app_launcher.streamlit_command(8765, "127.0.0.1", True, ["--server.runOnSave", "false"])
    assert cmd[1:4] == ["-m", "streamlit", "run"] and Path(cmd[4]) == HOME
    joined = " ".join(cmd)
    assert "--server.address 127.0.0.1" in joined and "--server.headless true" in joined
    assert "--server.port 8765" in joined and cmd[-2:] == ["--server.runOnSave", "false"]
    assert "--server.port" not in app_launcher.streamlit_command(None)
    with pytest.raises(ValueError, match="port"):
        app_launcher.streamlit_command(0)


def test_launcher_missing_app(monkeypatch, tmp_path):
    monkeypatch.setattr(app_launcher, "APP_HOME", tmp_path / "app" / "Home.py")
    with pytest.raises(FileNotFoundError, match="pip install -e"):
        app_launcher.launch(None)
