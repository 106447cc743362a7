"""Recurrent state pytree: token-shift vectors and the float32 WKV matrices."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rwkvjax.config import Config


class State(NamedTuple):
    """Per-layer recurrent state, stacked on L.

    att_shift [L,B,C]: previous token's LN1 output; ffn_shift [L,B,C]: previous token's LN2 output;
    wkv [L,B,H,N,N]: float32, official orientation [H, N_value, N_key].
    """

    att_shift: jax.Array
    ffn_shift: jax.Array
    wkv: jax.Array


def zero_state(config: Config, batch_size: int) -> State:
    L, C, H, N = config.n_layer, config.n_embd, config.n_head, config.head_size
    return State(
        att_shift=jnp.zeros((L, batch_size, C), jnp.float32),
        ffn_shift=jnp.zeros((L, batch_size, C), jnp.float32),
        wkv=jnp.zeros((L, batch_size, H, N, N), jnp.float32),
    )


def state_from_wkv(wkv_LHNN: jax.Array, batch_size: int, config: Config) -> State:
    """A state whose WKV part is a tuned S0 (the community's `time_state`, [L,H,N,N]) for every sequence."""
    zero = zero_state(config, batch_size)
    wkv = jnp.broadcast_to(wkv_LHNN.astype(jnp.float32)[:, None], zero.wkv.shape)
    return zero._replace(wkv=wkv)
