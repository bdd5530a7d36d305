"""The tutorial notebooks run top to bottom, in their QUICK setting (``M2PO_NB_QUICK=1``).

Each notebook executes in a fresh Jupyter kernel through nbclient. The kernel is this
interpreter (``sys.executable``, with ipykernel from the ``[dev]`` extra), declared in a
throw-away kernelspec found first through ``JUPYTER_PATH``: no ``ipykernel install`` is
needed, and a user's own ``python3`` kernelspec pointing at another Python cannot be picked
up by mistake. QUICK mode is meant to take well under a minute per notebook; the cell
timeout below only stops a hung kernel (tests never assert a wall-clock time).
"""

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "m2po-lab-test"
CELL_TIMEOUT_S = 300


def test_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    assert names == [
        "01_why_stale_data_hurts.ipynb",
        "02_m2_vs_kl_and_masking.ipynb",
        "03_prosperity_before_collapse.ipynb",
        "04_tiny_llm_with_stale_data.ipynb",
        "05_scaling_out.ipynb",
        "06_what_staleness_buys.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_one_quick_parameter_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    reading = [i for i, src in enumerate(code) if 'os.environ.get("M2PO_NB_QUICK")' in src]
    assert reading == [0], "the first code cell, and only it, reads M2PO_NB_QUICK"


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "m2po-lab tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("M2PO_NB_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the kernel imports the package from this checkout even where it is not pip-installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_quick(path, kernel_env):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL, resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError with the traceback on the first failing cell
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )
    assert "QUICK=True" in text, "the notebook must report that it ran in its QUICK setting"
