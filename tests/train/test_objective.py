"""`nll_per_token`, the one forward + head + cross-entropy (pretraining, scoring): chunking the head leaves every
position's NLL and the carried state as an unchunked pass gives them, with plain and with merged units; the
rematerialisation policy is one vocabulary of strings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rwkvjax
from rwkvjax.merges.hypernet import SlotTables, UnitPositions, forward_units, init_hypernet
from rwkvjax.merges.units import MERGED
from rwkvjax.model.init import init_params
from rwkvjax.model.rwkv7 import embed, forward_hidden, head_logits
from rwkvjax.train.objective import HEAD_CHUNK, hidden_under_policy, nll_per_token

SMALL = rwkvjax.Architecture(256, 64, 2, 128, 32, 32, 32, 32)


@pytest.fixture(scope="module")
def params():
    return init_params(SMALL, 0, live_output=True)


def test_plain_units_match_an_unchunked_pass(params):
    T = 2 * HEAD_CHUNK + 44  # several head chunks, the last one short
    rng = np.random.default_rng(0)
    x, y = (jnp.asarray(rng.integers(1, 256, (2, T)), jnp.int32) for _ in range(2))
    state0 = rwkvjax.zero_state(SMALL, 2)
    nll, state = jax.jit(nll_per_token, static_argnames=("config",))(params, x, y, state0, config=SMALL)
    hidden, ref_state = forward_hidden(params, embed(params, x), state0, config=SMALL)
    ref = optax.softmax_cross_entropy_with_integer_labels(head_logits(params, hidden), y)
    assert nll.shape == (2, T)
    np.testing.assert_allclose(np.asarray(nll), np.asarray(ref), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(ref_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_merged_units_match_the_hypernetwork_forward(params):
    T, V = HEAD_CHUNK + 20, SMALL.vocab_size
    hyper = init_hypernet(SMALL, jax.random.key(1))
    tables = SlotTables.of(np.array([[65, 66], [67, 68]]))
    rng = np.random.default_rng(1)
    units = rng.integers(100, 200, T).astype(np.int32)
    units[::7] = V  # slot 0 (65 66) as an input unit
    units[3::11] = V + 1
    x = jnp.asarray(np.concatenate([[0], units[:-1]])[None])
    y = jnp.asarray(rng.integers(100, 200, (1, T)), jnp.int32)  # base targets no slot starts with
    pos = UnitPositions.of(x)
    state0 = rwkvjax.zero_state(SMALL, 1)
    nll, _ = nll_per_token(params, x, y, state0, config=SMALL, units=MERGED, hyper=hyper, tables=tables, pos=pos)
    logits, _ = forward_units(params, hyper, x, state0, tables, pos, config=SMALL)
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    assert np.isfinite(np.asarray(ref)).all()
    np.testing.assert_allclose(np.asarray(nll), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_remat_is_one_vocabulary_of_strings(params):
    from rwkvjax.errors import ConfigError
    from rwkvjax.train.config import PretrainConfig
    x = embed(params, jnp.zeros((1, 4), jnp.int32))
    for bad in (True, False, "auto"):  # the bool bridge is gone; 'auto' is resolved before a forward
        with pytest.raises(ValueError, match="remat"):
            hidden_under_policy(params, x, rwkvjax.zero_state(SMALL, 1), config=SMALL, remat=bad)
    assert PretrainConfig(out="o").remat == "none"
    assert PretrainConfig(out="o", remat="full").remat == "full"
    for bad in (True, "auto", "dot"):
        with pytest.raises(ConfigError, match="--remat"):
            PretrainConfig(out="o", remat=bad)
