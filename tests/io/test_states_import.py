"""`state import` checks a time_state file's names, layer indices and shapes (against the model) from the file's
header, before anything is allocated: a 100-byte file that claims layer 99999999 is refused at once in a short
message, and error messages list a bounded number of items."""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
from safetensors.numpy import save_file

import rwkvjax
from rwkvjax.errors import CheckpointError
from rwkvjax.io.formats import split_time_state
from rwkvjax.io.states import StateStore
from rwkvjax.io.time_state import read_time_state, time_state_shape
from tests.conftest import REPO


def _tiny_bomb(path) -> None:
    save_file({"blocks.99999999.att.time_state": np.zeros((1, 1, 1), np.float32)}, str(path))
    assert path.stat().st_size < 120


def test_a_huge_layer_index_is_refused_at_once_without_allocating(tmp_path):
    bomb = tmp_path / "bomb.safetensors"
    _tiny_bomb(bomb)
    for read in (read_time_state, time_state_shape, lambda p: read_time_state(p, expect_LHNN=(3, 1, 1, 1))):
        tracemalloc.start()
        t0 = time.perf_counter()
        with pytest.raises(CheckpointError, match="missing") as e:
            read(bomb)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert seconds < 1.0 and peak < 8 << 20, (seconds, peak)  # the old check built a 100M-entry set (GBs)
        assert len(str(e.value)) < 300 and "99999991 more" in str(e.value)


def test_split_time_state_lists_a_bounded_number_of_items(tmp_path):
    tensors = {f"blocks.{i}.att.time_state": np.zeros((1, 2, 2), np.float32) for i in range(0, 10_000, 100)}
    with pytest.raises(CheckpointError, match="missing") as e:
        split_time_state(dict(tensors), "f")
    assert len(str(e.value)) < 300
    shapes = {f"blocks.{i}.att.time_state": np.zeros((1, i + 1, i + 1), np.float32) for i in range(40)}
    with pytest.raises(CheckpointError, match="and 32 more"):
        split_time_state(shapes, "f")
    with pytest.raises(CheckpointError, match="the model needs"):
        split_time_state({"blocks.0.att.time_state": np.zeros((1, 2, 2), np.float32)}, "f", (1, 1, 4, 4))


def test_a_shape_that_does_not_fit_the_model_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "s.safetensors"
    save_file({f"blocks.{i}.att.time_state": np.ones((2, 8, 8), np.float32) for i in range(3)}, str(path))
    np.testing.assert_array_equal(read_time_state(path, expect_LHNN=(3, 2, 8, 8)), np.ones((3, 2, 8, 8)))
    from safetensors import safe_open
    opened = safe_open(str(path), framework="numpy")
    reads = []
    monkeypatch.setattr(type(opened), "get_tensor", lambda self, k: reads.append(k))
    with pytest.raises(CheckpointError, match=r"the model needs \(3, 4, 8, 8\)"):
        read_time_state(path, expect_LHNN=(3, 4, 8, 8))
    assert reads == []  # refused from the header: no tensor was read


def test_state_import_refuses_the_bomb_in_one_short_line(tmp_path):
    from rwkvjax.io.convert import save_official
    from rwkvjax.model.init import init_params
    config = rwkvjax.Architecture(256, 64, 2, 128, 32, 32, 32, 32)
    model = save_official(init_params(config, 0), config, tmp_path / "m.safetensors", "fp32")
    bomb = tmp_path / "bomb.safetensors"
    _tiny_bomb(bomb)
    d = tmp_path / "states"
    r = subprocess.run([sys.executable, str(REPO / "cli.py"), "state", "import", str(bomb), "--name", "x",
                        "--states", str(d), "--model", model], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "missing" in r.stderr and len(r.stderr) < 400  # the old import printed a 989 MB line
    assert StateStore(d).records() == []
