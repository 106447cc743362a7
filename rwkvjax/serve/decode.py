"""Prefill and the decode step, compiled: the one step the server's batched decode and `generate` share.

`_step` feeds each row's last token, samples the next on device and updates the row's penalties.
`decode_step` is that step alone (the server's engine: rows join and leave between steps); `decode_n` runs it
in a `lax.while_loop` of up to `n` steps, stopping early once every row has sampled a stop token (`generate`:
no host round trip per token). A prompt is prefilled up to its last token, which the first decode step feeds.

Rows that sample from the session memory's mixture choose their tokens on the host (`serve.mixture`):
`decode_step_probs` is the same step that also hands every row's next-token probabilities to the host, and
`forward_probs` feeds several tokens of one row at once (speculative verification) with the probabilities
after each of them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.model.config import Architecture
from rwkvjax.model.rwkv7 import embed, forward_hidden, head_logits, piece_lengths
from rwkvjax.model.state import State
from rwkvjax.model.wkv import WkvImpl
from rwkvjax.serve.sampling import Penalties, SamplingRows, observe, sample, split_keys

# The dispatcher's default: with nothing differentiated it runs the fastest forward
# (benchmarks/RESULTS.md, WKV kernels).


_BATCH_AXIS = "batch_axis"


def _rows(axis: int):
    """A required dataclass field whose arrays hold one row per batch entry along `axis`."""
    return dataclasses.field(metadata={_BATCH_AXIS: axis})


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Carry:
    """What decoding carries per row: the token id to feed next, the recurrent state, penalties, PRNG keys."""

    # Each field declares the batch axis of every array under it (a State's arrays are [L, B, ...], the rest
    # [B, ...]): the one statement of the row layout; whatever gathers, scatters or concatenates rows goes
    # through `map_rows`.
    next_id: jax.Array = _rows(0)   # [B] int32: the token fed at the next step
    state: State = _rows(1)
    pen: Penalties = _rows(0)
    keys: jax.Array = _rows(0)    # [B] PRNG keys

    @classmethod
    def batch_axes(cls) -> dict[str, int]:
        return {f.name: f.metadata[_BATCH_AXIS] for f in dataclasses.fields(cls)}

    def map_rows(self, fn: Callable[..., jax.Array], *others: Carry) -> Carry:
        """The carry of `fn(array, *the arrays of others at the same place, axis=its batch axis)` over every
        array (`others`: carries of the same structure, e.g. a row to put in)."""
        return Carry(**{name: jax.tree.map(functools.partial(_with_axis, fn, axis), getattr(self, name),
                                           *(getattr(o, name) for o in others))
                        for name, axis in self.batch_axes().items()})


def _with_axis(fn, axis: int, *arrays):
    return fn(*arrays, axis=axis)


def _step_logits(params, carry: Carry, rows: SamplingRows, weight_V, config: Architecture) -> tuple[Carry, jax.Array]:
    hidden, state = forward_hidden(params, embed(params, carry.next_id[:, None]), carry.state, config=config,
                                   wkv_impl=WkvImpl.AUTO)
    logits = head_logits(params, hidden)[:, -1]
    now, later = split_keys(carry.keys)
    token = sample(logits, now, rows, carry.pen)
    return Carry(token, state, observe(carry.pen, token, weight_V, rows.decay), later), logits


def _step(params, carry: Carry, rows: SamplingRows, weight_V, config: Architecture) -> Carry:
    return _step_logits(params, carry, rows, weight_V, config)[0]


decode_step = jax.jit(_step, static_argnames=("config",), donate_argnums=(1,))


@functools.partial(jax.jit, static_argnames=("config",), donate_argnums=(1,))
def decode_step_probs(params, carry: Carry, rows: SamplingRows, weight_V, feed_B, host_B, *, config: Architecture):
    """`decode_step`, and every row's softmax of the logits it sampled from ([B, V] float32): rows without a
    memory keep the token sampled here; rows with one choose theirs on the host from the mixture. Rows where
    `host_B` [B] bool is set feed `feed_B` [B] int32 (the host's last choice) instead of the carried token:
    the choice travels with the step's arguments rather than in a transfer of its own."""
    carry = dataclasses.replace(carry, next_id=jnp.where(host_B, feed_B, carry.next_id))
    carry, logits = _step_logits(params, carry, rows, weight_V, config)
    return carry, jax.nn.softmax(logits, axis=-1)


@functools.partial(jax.jit, static_argnames=("config",))
def forward_probs(params, tokens_1T, state: State, *, config: Architecture):
    """Feed tokens [1, T] of one row: (softmax of the logits after each of them [T, V] float32, the state after
    all of them). T = 1 is the decode step's forward; longer T is one chunked forward (speculative verification)."""
    hidden, state = forward_hidden(params, embed(params, tokens_1T), state, config=config, wkv_impl=WkvImpl.AUTO)
    return jax.nn.softmax(head_logits(params, hidden)[0], axis=-1), state


@functools.partial(jax.jit, static_argnames=("config", "n"), donate_argnums=(1,))
def decode_n(params, carry: Carry, rows: SamplingRows, weight_V, stop_S, limit, *, config: Architecture, n: int):
    """Up to `limit` (<= n, traced: any value without recompiling) steps in one call, ending early once every row
    has sampled a token of `stop_S` [S] int32 -> (carry, tokens [n, B] int32 with -1 after the last step, steps)."""
    B = carry.next_id.shape[0]

    def cond(s):
        i, _, _, done_B = s
        return (i < jnp.minimum(limit, n)) & ~jnp.all(done_B)

    def body(s):
        i, c, toks_NB, done_B = s
        c = _step(params, c, rows, weight_V, config)
        done_B = done_B | jnp.any(c.next_id[:, None] == stop_S[None, :], axis=-1)
        return i + 1, c, jax.lax.dynamic_update_index_in_dim(toks_NB, c.next_id, i, 0), done_B

    start = (jnp.int32(0), carry, jnp.full((n, B), -1, jnp.int32), jnp.zeros((B,), bool))
    steps, carry, toks_NB, _ = jax.lax.while_loop(cond, body, start)
    return carry, toks_NB, steps


@functools.partial(jax.jit, static_argnames=("config",))
def _prefill_piece(params, tokens_BT, state: State, *, config: Architecture) -> State:
    _, state = forward_hidden(params, embed(params, tokens_BT), state, config=config, wkv_impl=WkvImpl.AUTO)
    return state


def prefill(params, config: Architecture, tokens, state: State, *, chunk: int = 256) -> State:
    """Feed tokens [T] (one row) and return the state after them. Pieces are powers of two of at most
    `chunk` tokens, so only a few shapes are ever compiled. The last prompt token is not prefilled: the
    first decode step feeds it and samples the first new token from its logits."""
    tokens = np.asarray(tokens, np.int32)
    pos = 0
    for n in piece_lengths(len(tokens), chunk):
        state = _prefill_piece(params, jnp.asarray(tokens[None, pos:pos + n]), state, config=config)
        pos += n
    return state
