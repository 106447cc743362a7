"""Sampling from the recurrent state: prefill, then the compiled decode loop, up to a block of tokens per call."""

from __future__ import annotations

import codecs
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.errors import ConfigError
from rwkvjax.model.config import Config
from rwkvjax.model.params import Params
from rwkvjax.model.state import State, zero_state
from rwkvjax.serve.decode import Carry, decode_n, prefill
from rwkvjax.serve.sampling import Penalties, SamplingRows

BLOCK = 16  # tokens per compiled decode call at most: streaming stays responsive, the host is visited once per block


def generate_ids(params: Params, config: Config, prompt_ids: Sequence[int], *, max_tokens: int = 100,
                 temperature: float = 1.0, top_p: float = 0.85, top_k: int = 0, presence_penalty: float = 0.0,
                 frequency_penalty: float = 0.0, seed: int = 0, state: State | None = None,
                 stop_ids: Sequence[int] = (0,), weights=None) -> Iterator[int]:
    """Yield sampled token ids (sampling as `serve.sampling`). `state` (e.g. a tuned S0) is not modified.

    `weights`: [V] occurrence weight per token (`sampling.token_weights`); all 1 when None. `params` in the
    decoding layout (`params.unstack_layers`) decode fastest; the stacked layout works too.
    """
    prompt_ids = list(prompt_ids)
    if not prompt_ids:
        raise ConfigError("generate: the prompt encodes to no tokens; give a non-empty prompt")
    state = zero_state(config, 1) if state is None else jax.tree.map(jnp.array, state)
    state = prefill(params, config, prompt_ids[:-1], state)
    V = config.vocab_size
    rows = SamplingRows.of([{"temperature": temperature, "top_p": top_p, "top_k": top_k,
                             "presence": presence_penalty, "frequency": frequency_penalty}])
    w = jnp.ones((V,), jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    stop_S = jnp.asarray(list(stop_ids) or [-1], jnp.int32)
    carry = Carry(jnp.asarray([prompt_ids[-1]], jnp.int32), state, Penalties.zeros(1, V),
                  jax.random.key(seed)[None])
    done = 0
    while done < max_tokens:
        carry, toks, steps = decode_n(params, carry, rows, w, stop_S, jnp.int32(min(BLOCK, max_tokens - done)),
                                      config=config, n=BLOCK)
        for t in np.asarray(toks[:int(steps), 0]).tolist():
            if t in stop_ids:
                return
            done += 1
            yield t


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
