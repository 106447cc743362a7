"""`auto` and the implementation names: the enum is built from the CLI's jax-free table, and on a GPU `auto` runs the
Pallas kernel only where it imports and compiles, else `chunked` after one warning line (simulated here on CPU)."""

from __future__ import annotations

import logging
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.common.wkv_reference import rwkv_inputs
from rwkvjax.model import wkv
from rwkvjax.model.wkv import WkvImpl, resolve, wkv7
from rwkvjax.model.wkv_chunked import wkv7_chunked
from rwkvjax.options import WKV_IMPLS


def test_the_enum_has_exactly_the_option_names():
    assert [m.value for m in WkvImpl] == list(WKV_IMPLS)
    assert WkvImpl.LOOP_CHUNKED.value == "loop_chunked" and WkvImpl("auto") is WkvImpl.AUTO


@pytest.fixture
def fake_gpu(monkeypatch):
    """The backend reads as a GPU; AUTO's choice is probed afresh and forgotten after the test."""
    monkeypatch.setattr(wkv, "_backend", lambda: "gpu")
    wkv._auto_on_gpu.cache_clear()
    yield
    wkv._auto_on_gpu.cache_clear()


def _sum_wkv(impl):
    def f(*xs):
        y, sT = wkv7(*xs, impl=impl)
        return jnp.sum(y) + jnp.sum(sT)
    return f


@pytest.mark.parametrize("failure", ["import", "lowering"])
def test_auto_on_a_gpu_falls_back_to_chunked_with_one_warning(failure, fake_gpu, monkeypatch, caplog):
    if failure == "import":
        monkeypatch.setitem(sys.modules, "pallas_kernels.wkv7", None)  # `import` raises ImportError
    # "lowering": the real kernel, compiled (not interpreted) for what is really a CPU, fails to lower
    with caplog.at_level(logging.WARNING, logger="rwkvjax.model.wkv"):
        assert resolve("auto") is WkvImpl.CHUNKED
        for seed, T in ((0, 9), (1, 20)):  # two shapes, forward and gradient: still one warning
            xs = rwkv_inputs(seed, 1, T, 2, 8)
            y, sT = wkv7(*xs, impl="auto")
            y_c, sT_c = wkv7_chunked(*xs)
            np.testing.assert_array_equal(np.asarray(y), np.asarray(y_c))
            np.testing.assert_array_equal(np.asarray(sT), np.asarray(sT_c))
            g = jax.grad(_sum_wkv("auto"), argnums=tuple(range(7)))(*xs)
            g_c = jax.grad(_sum_wkv("chunked"), argnums=tuple(range(7)))(*xs)
            for a, b in zip(g, g_c):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    msg = warned[0].getMessage()
    assert "\n" not in msg and "pallas (" in msg and "using 'chunked'" in msg
    assert ("import of pallas_kernels.wkv7 halted" in msg) == (failure == "import")


def test_auto_on_a_gpu_runs_pallas_where_it_compiles(fake_gpu, monkeypatch, caplog):
    probed = []
    monkeypatch.setattr(wkv, "_compile_probe", probed.append)
    with caplog.at_level(logging.WARNING, logger="rwkvjax.model.wkv"):
        assert resolve("auto") is WkvImpl.PALLAS
        assert resolve(WkvImpl.AUTO) is WkvImpl.PALLAS
    assert probed == [WkvImpl.PALLAS]  # probed once per process
    assert not caplog.records


def test_auto_off_a_gpu_is_loop_chunked_without_a_probe(monkeypatch):
    monkeypatch.setattr(wkv, "_backend", lambda: "cpu")
    monkeypatch.setattr(wkv, "_compile_probe", lambda impl: pytest.fail("probed off a GPU"))
    assert resolve("auto") is WkvImpl.LOOP_CHUNKED
