"""Sampling from the recurrent state: prefill, then the compiled decode loop, up to a block of tokens per call;
or, with a session memory, one step (or one speculative verification) per call, the tokens chosen on the host
from the mixture (`serve.mixture`)."""

from __future__ import annotations

import threading
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.errors import ConfigError
from rwkvjax.model.config import Architecture
from rwkvjax.model.params import Params
from rwkvjax.model.rwkv7 import piece_lengths
from rwkvjax.model.state import State, zero_state
from rwkvjax.serve.decode import Carry, decode_n, forward_probs, prefill
from rwkvjax.serve.detok import Detokenizer
from rwkvjax.serve.mixture import RECOVER, Costs, MemoryDecoder, Timer
from rwkvjax.serve.sampling import Penalties, RowSampler, SamplingRows

BLOCK = 16  # tokens per compiled decode call at most: streaming stays responsive, the host is visited once per block
PREFILL_CHUNK = 256  # prompt tokens per prefill piece at most (`decode.prefill`)


def generate_ids(params: Params, config: Architecture, prompt_ids: Sequence[int], *, max_tokens: int = 100,
                 temperature: float = 1.0, top_p: float = 0.85, top_k: int = 0, presence_penalty: float = 0.0,
                 frequency_penalty: float = 0.0, seed: int = 0, state: State | None = None,
                 stop_ids: Sequence[int] = (0,), weights=None, memory=None, draft_tokens: int = 0,
                 stats: dict | None = None, recover: str = "refeed", costs: Costs | None = None) -> Iterator[int]:
    """Yield sampled token ids (sampling as `serve.sampling`). `state` (e.g. a tuned S0) is not modified.

    `weights`: [V] occurrence weight per token (`sampling.token_weights`); all 1 when None. `params` in the
    decoding layout (`params.unstack_layers`) decode fastest; the stacked layout works too.
    `memory`: a `SessionMemory` to sample from the mixture with; it absorbs the prompt and learns every token
    (pass a copy to keep the original). `draft_tokens`: K > 0 verifies up to K of its drafts per forward
    (speculative decoding; the text is what plain sampling gives). `stats` (a dict) receives the speculation's
    counts; `recover` is how the state catches up after a rejected draft (`mixture.RECOVER`); `costs` the
    measured call costs speculation decides with (a fresh `mixture.Costs` by default).
    """
    prompt_ids = list(prompt_ids)
    if not prompt_ids:
        raise ConfigError("generate: the prompt encodes to no tokens; give a non-empty prompt")
    state = zero_state(config, 1) if state is None else jax.tree.map(jnp.array, state)
    state = prefill(params, config, prompt_ids[:-1], state, chunk=PREFILL_CHUNK)
    V = config.vocab_size
    if memory is not None:
        w = np.ones((V,), np.float32) if weights is None else np.asarray(weights, np.float32)
        sampler = RowSampler({"temperature": temperature, "top_p": top_p, "top_k": top_k,
                              "presence": presence_penalty, "frequency": frequency_penalty}, w, seed)
        decoder = MemoryDecoder(memory, sampler, draft_tokens)
        yield from _mixture_ids(params, config, prompt_ids, state, decoder, max_tokens=max_tokens,
                                stop_ids=stop_ids, stats=stats, recover=recover, costs=costs or Costs())
        return
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


def _mixture_ids(params, config: Architecture, prompt_ids: list[int], state: State, decoder: MemoryDecoder, *,
                 max_tokens: int, stop_ids: Sequence[int], stats: dict | None, recover: str,
                 costs: Costs) -> Iterator[int]:
    """The memory's decoding loop for one row. `feed`: the tokens not yet in `state` (the last one chosen, and
    after a rejected draft the accepted tokens before it)."""
    if recover not in RECOVER:
        raise ConfigError(f"recover {recover!r}: one of {RECOVER}")
    decoder.memory.absorb(prompt_ids)
    K = decoder.draft_tokens
    timer = Timer()
    stops = set(stop_ids)
    compiled = _compiled(params, config)
    compiled.update(piece_lengths(len(prompt_ids) - 1, PREFILL_CHUNK))  # the prompt's prefill compiled these
    if K > 0 and ("verify", K + 1) not in compiled:  # compile it now rather than in the middle of the reply
        jax.block_until_ready(forward_probs(params, jnp.zeros((1, K + 1), jnp.int32), state, config=config))
        compiled.add(("verify", K + 1))
    timer.shapes.add(("verify", K + 1))
    if K > 0:
        _compile_pieces(params, config, state, K, compiled)
    feed, done = [prompt_ids[-1]], 0
    try:
        while done < max_tokens:
            drafts = decoder.drafts()
            d = decoder.speculate(len(feed), drafts, costs)
            if d:
                chunk = decoder.chunk(feed, drafts[:d])
                with timer("verify", costs, ("verify", len(chunk))):
                    probs, after = forward_probs(params, np.asarray([chunk], np.int32), state, config=config)
                    probs = np.asarray(probs)
                out = decoder.verify(probs[len(feed) - 1:], drafts[:d],
                                     lambda t, n: t in stops or done + n >= max_tokens)
                if len(out) == d + 1 and len(feed) + d == len(chunk):  # all drafts passed, no padding: its state
                    state, feed = after, [out[-1]]
                else:                                # the state before the chunk; the accepted tokens wait in feed
                    feed = feed + out
                    if recover == "rerun":
                        state, feed = _refeed(params, config, feed, state, costs, timer, compiled), feed[-1:]
            else:
                if len(feed) > 1:
                    state, feed = _refeed(params, config, feed, state, costs, timer, compiled), feed[-1:]
                with timer("step", costs, ("step",)):
                    probs, state = forward_probs(params, np.asarray([feed], np.int32), state, config=config)
                    probs = np.asarray(probs)[0]
                out = [decoder.choose(probs, drafts[0] if drafts else None)]
                feed = out[:]
            for t in out:
                if t in stops:
                    return
                done += 1
                yield t
                if done >= max_tokens:
                    return
    finally:
        if stats is not None:
            stats.update(drafted=decoder.drafted, accepted=decoder.accepted, verifications=decoder.verifications,
                         costs=dict(costs.seconds))


# Shapes compiled in this process, per model structure (what `jax.jit` keys its cache on): prefill piece lengths,
# and ("verify", T) for a verification of T tokens.
_COMPILED: dict[tuple, set] = {}


def _compiled(params, config: Architecture) -> set:
    leaves, tree = jax.tree.flatten(params)
    return _COMPILED.setdefault((config, tree, tuple((a.shape, str(a.dtype)) for a in leaves)), set())


def _compile_pieces(params, config: Architecture, state: State, K: int, compiled: set) -> None:
    """Compile the prefill pieces a refeed of up to K tokens needs, in a background thread: the reply starts
    at once, and refeeds use the pieces as they become ready (a compile takes seconds on a small CPU)."""
    missing = [n for n in (1 << i for i in range(K.bit_length())) if n <= K and n not in compiled]
    if not missing:
        return

    def work():
        for n in missing:
            jax.block_until_ready(prefill(params, config, np.zeros(n, np.int32), state, chunk=PREFILL_CHUNK))
            compiled.add(n)

    threading.Thread(target=work, name="compile-refeed", daemon=True).start()


def _refeed(params, config: Architecture, feed: list[int], state: State, costs: Costs, timer: Timer,
            compiled: set) -> State:
    """The state after all of `feed` but its last token (that one is fed by the next step): prefilled in
    compiled pieces, else one token per step (a compile would stall the reply for seconds)."""
    tokens = feed[:-1]
    with timer("refeed", costs, ("refeed", len(tokens))):
        if set(piece_lengths(len(tokens), PREFILL_CHUNK)) <= compiled:
            state = jax.block_until_ready(prefill(params, config, tokens, state, chunk=PREFILL_CHUNK))
        else:
            for t in tokens:
                state = forward_probs(params, np.asarray([[t]], np.int32), state, config=config)[1]
            jax.block_until_ready(state)
    return state


def stream_text(ids: Iterator[int], token_bytes) -> Iterator[str]:
    """Turn a token stream into text pieces as soon as they form complete UTF-8 characters."""
    detok = Detokenizer(token_bytes)
    for t in ids:
        piece = detok.push(t)
        if piece:
            yield piece
    tail = detok.finish()
    if tail:
        yield tail
