"""The language model's side of the mixture: its opinion at every node of the binary tree over token ids.

For a symbol s of `nbits` bits, node k on its path splits the ids that share s's first k bits by bit k; the
model's opinion there is st_k = logsumexp(logits of the 1-half) - logsumexp(logits of the 0-half), the stretch
of the probability it gives bit k = 1 given the higher bits. Computed on device from the logits (one pass per
bit level over the vocabulary), so the host receives nbits numbers per position instead of V.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.memory.memory import SessionMemory
from rwkvjax.model.config import Architecture
from rwkvjax.model.rwkv7 import embed, forward_hidden, head_logits, piece_lengths
from rwkvjax.model.state import State
from rwkvjax.model.units import LN2
from rwkvjax.model.wkv import WkvImpl



def path_stretch(logits_TV, syms_T, nbits: int):
    """(st [..., T, nbits] float32, nll [..., T] nats) of each symbol's path under the logits [..., T, V]."""
    logp = jax.nn.log_softmax(logits_TV.astype(jnp.float32), axis=-1)
    V = logp.shape[-1]
    top = 1 << nbits
    if top > V:  # ids >= V have probability 0
        logp = jnp.concatenate([logp, jnp.full(logp.shape[:-1] + (top - V,), -jnp.inf, logp.dtype)], axis=-1)
    lead = logp.shape[:-1]
    syms = jnp.broadcast_to(syms_T, lead).astype(jnp.int32)
    cols = []
    for k in range(nbits):
        halves = jax.nn.logsumexp(logp.reshape(lead + (2 << k, top >> (k + 1))), axis=-1)  # [..., 2^(k+1)]
        pre = syms >> (nbits - k)
        one = jnp.take_along_axis(halves, (2 * pre + 1)[..., None], axis=-1)[..., 0]
        zero = jnp.take_along_axis(halves, (2 * pre)[..., None], axis=-1)[..., 0]
        cols.append(jnp.nan_to_num(one - zero, nan=0.0, posinf=20.0, neginf=-20.0))
    nll = -jnp.take_along_axis(logp, syms[..., None], axis=-1)[..., 0]
    return jnp.stack(cols, axis=-1), nll


@functools.partial(jax.jit, static_argnames=("config", "nbits"))
def _paths(params, state: State, inputs_1T, targets_1T, *, config: Architecture, nbits: int):
    B = state.wkv.shape[1]
    inputs = jnp.broadcast_to(inputs_1T, (B,) + inputs_1T.shape[1:])
    hidden, state = forward_hidden(params, embed(params, inputs), state, config=config, wkv_impl=WkvImpl.AUTO)
    st, nll = path_stretch(head_logits(params, hidden), targets_1T, nbits)
    return st, nll, state


def stream_paths(params, config: Architecture, units, state: State, *, nbits: int, prev_unit: int = 0,
                 max_len: int = 512) -> tuple[np.ndarray, np.ndarray, State]:
    """For every batch row of `state`: (st [B, n, nbits] float32, NLL [B, n] nats, final state) of `units`
    read teacher-forced with the state carried (the first unit given `prev_unit`)."""
    units = np.asarray(units, np.int32)
    inputs = np.concatenate([[prev_unit], units[:-1]]).astype(np.int32)
    sts, nlls, pos = [], [], 0
    for n in piece_lengths(len(units), max_len):
        st, nll, state = _paths(params, state, jnp.asarray(inputs[None, pos:pos + n]),
                                jnp.asarray(units[None, pos:pos + n]), config=config, nbits=nbits)
        sts.append(np.array(st))  # host copies, not views that keep each device buffer alive
        nlls.append(np.array(nll))
        pos += n
    B = state.wkv.shape[1]
    if not sts:
        return np.zeros((B, 0, nbits), np.float32), np.zeros((B, 0), np.float32), state
    return np.concatenate(sts, axis=1), np.concatenate(nlls, axis=1), state


def mixture_bits(params, config: Architecture, units, state: State, memory: SessionMemory, *, learn: bool = True,
                 max_len: int = 512) -> tuple[np.ndarray, np.ndarray, State]:
    """(mixture bits [n], the model's own bits [n], final state) of `units` read from `state` (batch 1), every
    unit scored by the mixture before the memory learns it (prequential)."""
    st, nll, state = stream_paths(params, config, units, state, nbits=memory.settings.nbits, max_len=max_len)
    bits_lm = nll[0].astype(np.float64) / LN2
    return memory.score(st[0], bits_lm, units, learn=learn), bits_lm, state
