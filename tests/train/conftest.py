"""A small random model saved to a file, for the tests that run `train` in and out of process."""

from __future__ import annotations

from pathlib import Path

import pytest

import rwkvjax
from rwkvjax.io.convert import save_official
from rwkvjax.model.init import init_params

SMALL = rwkvjax.Architecture(256, 64, 1, 128, 32, 32, 32, 32)


@pytest.fixture(scope="module")
def small_model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "small.safetensors"
    save_official(init_params(SMALL, 0, live_output=True), SMALL, path)
    return path


@pytest.fixture(scope="module")
def model_file(small_model_file) -> Path:
    """The small model's file, under the name the tests that train it use."""
    return small_model_file


@pytest.fixture(scope="module")
def model(model_file):
    """The small model, loaded once per test module."""
    return rwkvjax.load(model_file)
