import os
import random

import numpy as np
import pytest
import torch

try:  # the property tests' example search: the same examples on every run unless asked otherwise
    from hypothesis import settings

    settings.register_profile("deterministic", derandomize=True)
    settings.register_profile("explore", derandomize=False)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))
except ImportError:  # the verl CI venv installs pytest only
    pass


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seeded_global_rngs():
    """Every test starts from the same global RNG state (torch, numpy, random), so a draw that takes no
    generator (``torch.rand(...)``, ``StudentT.sample``) is reproducible whichever tests ran before it."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; with 2 threads on a busy
    2-core machine the SFT tests ran ~4x slower (OpenMP oversubscription)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def apptest():
    """streamlit's AppTest class (skips where streamlit is not installed)."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    return AppTest


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A real tiny study (grpo and m2po at staleness 0 and 8, 12 updates), written once per module."""
    from app_helpers import TINY_STUDY

    from m2po_lab.study import get_preset, run_study

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("study") / "tiny"
    run_study(get_preset("quick", **TINY_STUDY), out, progress=False)  # ~3 s; sets one thread
    torch.set_num_threads(threads)
    return out
