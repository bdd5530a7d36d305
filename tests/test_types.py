"""The LLM path type-checks under its installed name, ``m2po_lab.llm`` (mypy, configured in pyproject.toml)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_source_tree_resolves_m2po_lab_llm():
    link = ROOT / "m2po_lab" / "llm"
    assert link.is_symlink() and link.resolve() == (ROOT / "llm").resolve(), (
        "m2po_lab/llm must be the checked-in symlink to ../llm (on Windows: git config core.symlinks true)")


@pytest.mark.slow
def test_mypy_finds_no_error_in_m2po_lab_llm(tmp_path):
    pytest.importorskip("mypy")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "MYPY_FORCE_COLOR": "0"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success: no issues found" in proc.stdout and "m2po_lab.llm" not in proc.stderr
