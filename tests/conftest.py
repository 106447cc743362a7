"""Shared test setup: CPU by default, `gpu` tests skipped without a GPU, paths to ../shared fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

if os.environ.get("RWKVJAX_TEST_GPU") != "1":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the whole run, the processes the tests start included (they
# inherit the environment): many tests compile the same tiny models' steps, in process and in `cli.py` runs.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "rwkvjax-tests-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

import jax  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RWKVCPP_DIR = SHARED_DATA / "rwkvcpp-tiny-rwkv7"
CLAUDE_PROJECTS = SHARED_DATA / "claude-projects"


def pytest_collection_modifyitems(config, items):
    has_gpu = any(d.platform == "gpu" for d in jax.devices())
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run with RWKVJAX_TEST_GPU=1 on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(f"test data folder {SHARED_DATA} is missing: clone the repo next to ../shared")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model():
    """The real trained rwkv.cpp tiny RWKV-7 (byte vocab, L12, C64)."""
    import rwkvjax
    path = RWKVCPP_DIR / "tiny-rwkv-7v0-834K-FP32.bin"
    if not path.is_file():
        raise FileNotFoundError(f"fixture {path} is missing: ../shared/data must sit next to the repo")
    return rwkvjax.load(path)
