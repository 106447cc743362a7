"""Sampling a next token from logits on device (temperature, nucleus)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_logits(logits_BV, key, temperature: float, top_p: float):
    """Nucleus sampling; temperature 0 means greedy (argmax)."""
    if temperature <= 0:
        return jnp.argmax(logits_BV, axis=-1)
    probs = jax.nn.softmax(logits_BV.astype(jnp.float32) / temperature, axis=-1)
    sorted_p = jnp.sort(probs, axis=-1)[..., ::-1]
    cum = jnp.cumsum(sorted_p, axis=-1)
    # smallest prob still inside the nucleus (the top token always stays)
    cutoff_idx = jnp.sum(cum - sorted_p < top_p, axis=-1, keepdims=True) - 1
    cutoff = jnp.take_along_axis(sorted_p, cutoff_idx, axis=-1)
    logits = jnp.where(probs >= cutoff, jnp.log(probs), -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1)
