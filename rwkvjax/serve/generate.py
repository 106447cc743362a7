"""Sampling from the recurrent state: one prefill call, then one jitted O(1) step per token."""

from __future__ import annotations

import codecs
import functools
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp

from rwkvjax.errors import ConfigError
from rwkvjax.model.config import Config
from rwkvjax.model.params import Params
from rwkvjax.model.rwkv7 import forward
from rwkvjax.model.state import State, zero_state
from rwkvjax.serve.sampling import sample_logits


@functools.partial(jax.jit, static_argnames=("config", "temperature", "top_p"), donate_argnames=("state",))
def _step(params, token_B, state, key, *, config, temperature, top_p):
    logits, state = forward(params, token_B[:, None], state, config=config)
    return sample_logits(logits[:, -1], key, temperature, top_p), state


def generate_ids(params: Params, config: Config, prompt_ids: Sequence[int], *, max_tokens: int = 100,
                 temperature: float = 1.0, top_p: float = 0.85, seed: int = 0, state: State | None = None,
                 stop_ids: Sequence[int] = (0,)) -> Iterator[int]:
    """Yield sampled token ids. `state` (e.g. with a tuned S0) is the starting state; it is not modified."""
    if not prompt_ids:
        raise ConfigError("generate: the prompt encodes to no tokens; give a non-empty prompt")
    state = zero_state(config, 1) if state is None else jax.tree.map(jnp.array, state)
    key = jax.random.key(seed)
    logits, state = forward(params, jnp.asarray([list(prompt_ids)], jnp.int32), state, config=config)
    key, sub = jax.random.split(key)
    token = sample_logits(logits[:, -1], sub, temperature, top_p)
    for _ in range(max_tokens):
        t = int(token[0])
        if t in stop_ids:
            return
        yield t
        key, sub = jax.random.split(key)
        token, state = _step(params, token.astype(jnp.int32), state, sub, config=config,
                             temperature=float(temperature), top_p=float(top_p))


def stream_text(ids: Iterator[int], token_bytes) -> Iterator[str]:
    """Turn a token stream into text pieces as soon as they form complete UTF-8 characters."""
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for t in ids:
        piece = dec.decode(token_bytes([t]))
        if piece:
            yield piece
    tail = dec.decode(b"", final=True)
    if tail:
        yield tail
