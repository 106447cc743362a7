"""Recurrent state pytree: token-shift vectors and the float32 WKV matrices."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rwkvjax.model.config import Architecture


class State(NamedTuple):
    """Per-layer recurrent state, stacked on L.

    att_shift [L,B,C]: previous token's LN1 output; ffn_shift [L,B,C]: previous token's LN2 output;
    wkv [L,B,H,N,N]: float32, official orientation [H, N_value, N_key].
    """

    att_shift: jax.Array
    ffn_shift: jax.Array
    wkv: jax.Array


def zero_state(config: Architecture, batch_size: int) -> State:
    L, C, H, N = config.n_layer, config.n_embd, config.n_head, config.head_size
    return State(
        att_shift=jnp.zeros((L, batch_size, C), jnp.float32),
        ffn_shift=jnp.zeros((L, batch_size, C), jnp.float32),
        wkv=jnp.zeros((L, batch_size, H, N, N), jnp.float32),
    )


def start_state(wkv_LHNN, batch_size: int, *, att_shift_LC=None, ffn_shift_LC=None) -> State:
    """A learned start state (S0 = the community's `time_state` [L,H,N,N], optional shift vectors [L,C])
    broadcast over a batch; the shift parts are zeros where none is given. The one S0 -> State map."""
    wkv_LHNN = jnp.asarray(wkv_LHNN, jnp.float32)
    L, H, N, _ = wkv_LHNN.shape
    bcast = lambda a, shape: jnp.broadcast_to(jnp.asarray(a, jnp.float32)[:, None], shape)
    shift = lambda a: jnp.zeros((L, batch_size, H * N), jnp.float32) if a is None else bcast(a, (L, batch_size, H * N))
    return State(att_shift=shift(att_shift_LC), ffn_shift=shift(ffn_shift_LC),
                 wkv=bcast(wkv_LHNN, (L, batch_size, H, N, N)))
