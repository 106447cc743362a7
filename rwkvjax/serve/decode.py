"""Prefill and the decode step, compiled: the one step the server's batched decode and `generate` share.

`decode_step` feeds each row's last token, samples the next on device and updates the row's penalties;
`decode_n` runs it n times inside one `lax.scan` (no host round trip per token). A prompt is prefilled up to
its last token, which the first decode step feeds.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.model.config import Config
from rwkvjax.model.rwkv7 import embed, forward_hidden, head_logits
from rwkvjax.model.state import State
from rwkvjax.serve.sampling import Penalties, SamplingRows, observe, sample, split_keys

# Forward-only: the per-token scan is the fastest exact WKV form on CPU (benchmarks/RESULTS.md, WKV kernels).
_FWD_WKV = "scan"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Carry:
    """What decoding carries per row: the token to feed next, the recurrent state, penalties, PRNG keys."""

    token: jax.Array   # [B] int32
    state: State
    pen: Penalties
    keys: jax.Array    # [B] PRNG keys


def _step(params, carry: Carry, rows: SamplingRows, weight_V, config: Config) -> Carry:
    hidden, state = forward_hidden(params, embed(params, carry.token[:, None]), carry.state, config=config,
                                   wkv_impl=_FWD_WKV)
    logits = head_logits(params, hidden)[:, -1]
    now, later = split_keys(carry.keys)
    token = sample(logits, now, rows, carry.pen)
    return Carry(token, state, observe(carry.pen, token, weight_V, rows.decay), later)


decode_step = jax.jit(_step, static_argnames=("config",), donate_argnums=(1,))


@functools.partial(jax.jit, static_argnames=("config", "n"), donate_argnums=(1,))
def decode_n(params, carry: Carry, rows: SamplingRows, weight_V, *, config: Config, n: int):
    """n steps in one call -> (carry, tokens [n, B])."""
    def body(c, _):
        c = _step(params, c, rows, weight_V, config)
        return c, c.token
    return jax.lax.scan(body, carry, None, length=n)


@functools.partial(jax.jit, static_argnames=("config",))
def _prefill_piece(params, tokens_BT, state: State, *, config: Config) -> State:
    _, state = forward_hidden(params, embed(params, tokens_BT), state, config=config, wkv_impl=_FWD_WKV)
    return state


def prefill(params, config: Config, tokens, state: State, *, chunk: int = 256) -> State:
    """Feed tokens [T] (one row) and return the state after them. Pieces are powers of two of at most
    `chunk` tokens, so only a few shapes are ever compiled. The last prompt token is not prefilled: the
    first decode step feeds it and samples the first new token from its logits."""
    from rwkvjax.eval.scoring import piece_lengths
    tokens = np.asarray(tokens, np.int32)
    pos = 0
    for n in piece_lengths(len(tokens), chunk):
        state = _prefill_piece(params, jnp.asarray(tokens[None, pos:pos + n]), state, config=config)
        pos += n
    return state
