"""A small random model saved to a file, for the tests that run `train` in and out of process."""

from __future__ import annotations

from pathlib import Path

import pytest

import rwkvjax
from rwkvjax.io.convert import save_official
from rwkvjax.model.init import init_params

SMALL = rwkvjax.Config(256, 64, 1, 128, 32, 32, 32, 32)


@pytest.fixture(scope="module")
def small_model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "small.safetensors"
    save_official(init_params(SMALL, 0, live_output=True), SMALL, path)
    return path
