"""Shared fixtures: tiny exports made once per session; markers that skip with a reason."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow (large presets)")
    parser.addoption("--check-gpu", action="store_true", help="fail, rather than skip, GPU tests without a GPU")


def _gpu_reason() -> str | None:
    from attnkit.core.machine import gpu_unavailable_reason

    return gpu_unavailable_reason()


def pytest_collection_modifyitems(config, items):
    gpu_reason = None
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            why = item.get_closest_marker("slow").kwargs.get("reason", "large preset")
            item.add_marker(pytest.mark.skip(reason=f"slow ({why}); run with --runslow"))
        if "gpu" in item.keywords:
            gpu_reason = gpu_reason or _gpu_reason() or ""
            if gpu_reason and not config.getoption("--check-gpu"):
                item.add_marker(pytest.mark.skip(reason=gpu_reason))


def pytest_runtest_setup(item):
    """With --check-gpu, a GPU test on a machine without a GPU fails (a GPU job must not pass on CPU)."""
    if "gpu" in item.keywords and item.config.getoption("--check-gpu"):
        reason = _gpu_reason()
        if reason:
            pytest.fail(f"--check-gpu: {reason}", pytrace=False)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """encoder-tiny exported once to SavedModel + ONNX (with the export-time check)."""
    import attnkit

    out = tmp_path_factory.mktemp("exports") / "encoder-tiny"
    return attnkit.export("encoder-tiny", out)


@pytest.fixture(scope="session")
def mha_export(tmp_path_factory):
    import attnkit

    out = tmp_path_factory.mktemp("exports") / "mha"
    return attnkit.export("mha", out)


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))
