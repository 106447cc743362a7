"""rwkv-ops (the `bench` extra) computes the recurrence rwkvjax does, given its decay form; skipped without it.

rwkv-ops takes the decay in log-log form (decay = exp(-exp(w)), so w = log(-log_w)), a = -kk, b = kk*iclr and a
[value, key] state, as benchmarks/peers.py feeds it. The core accuracy tests (test_wkv.py) do not depend on this.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import pytest

from benchmarks.common.wkv_reference import reference_f64, rel_err, rwkv_inputs
from rwkvjax.model.wkv import wkv7


@pytest.fixture(scope="module")
def rwkv_ops():
    if "keras" not in sys.modules:  # keras reads its backend once, at import
        os.environ.setdefault("KERAS_BACKEND", "jax")
    mod = pytest.importorskip("rwkv_ops")
    import keras

    if keras.config.backend() != "jax":
        pytest.skip(f"keras was imported with the {keras.config.backend()!r} backend, not jax")
    return mod


def test_rwkv_ops_matches_the_float64_reference_and_rwkvjax(rwkv_ops):
    xs = rwkv_inputs(21, 2, 37, 3, 64)
    r, log_w, k, v, a, b, s0 = xs
    y_ref, sT_ref, _ = reference_f64(xs, jnp.zeros(r.shape), jnp.zeros(s0.shape))
    peer = jax.jit(lambda *xs: rwkv_ops.generalized_delta_rule(xs[0], jnp.log(-xs[1]), *xs[2:6], initial_state=xs[6]))
    y_peer, sT_peer = peer(*xs)
    y_ours, sT_ours = wkv7(*xs)
    for got, ref in ((y_peer, y_ref), (sT_peer, sT_ref), (y_ours, y_ref), (sT_ours, sT_ref)):
        assert rel_err(got, ref) <= 1e-5
    y_swapped, _ = peer(r, log_w, k, v, a, b, jnp.swapaxes(s0, -1, -2))
    assert rel_err(y_swapped, y_ref) > 1e-2  # the comparison sees the state's orientation
