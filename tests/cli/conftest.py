"""Fixtures of the CLI tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Two stdlib packages as a pretraining corpus (`html` is the held-out package of `pretrain_argv`)."""
    root = tmp_path_factory.mktemp("corpus") / "corpus"
    stdlib = Path(json.__file__).parents[1]
    for pkg in ("json", "html"):
        shutil.copytree(stdlib / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return root
