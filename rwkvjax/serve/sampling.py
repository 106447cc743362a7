"""Next-token sampling on device, batched, one row per request, as the official `rwkv` package samples
(rwkv 0.8.32, `rwkv/utils.py`: PIPELINE.sample_logits and PIPELINE.generate):

1. penalties: every token generated so far loses `presence + occurrence * frequency` from its logit;
   occurrence counts decay by `decay` per step and a new token adds 1 (0 for whitespace and digit tokens);
2. softmax; keep the tokens whose probability reaches the one at which the sorted cumulative mass first
   reaches `top_p`; then the `top_k` most likely (0: all);
3. temperature applied to the kept probabilities (`p ** (1 / T)`), renormalised, sampled;
temperature 0 is greedy (the most likely token after the penalties).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SamplingRows:
    """Per-row sampling settings, each [B]."""

    temperature: jax.Array
    top_p: jax.Array
    top_k: jax.Array      # int32, 0 = off
    presence: jax.Array
    frequency: jax.Array
    decay: jax.Array

    @staticmethod
    def of(rows: list[dict]) -> "SamplingRows":
        f = lambda k, d: jnp.asarray([r.get(k, d) for r in rows], jnp.float32)
        return SamplingRows(f("temperature", 1.0), f("top_p", 1.0),
                            jnp.asarray([int(r.get("top_k", 0)) for r in rows], jnp.int32),
                            f("presence", 0.0), f("frequency", 0.0), f("decay", 0.996))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Penalties:
    """Per-row generation history: decayed occurrence counts and which tokens were generated at all, [B,V]."""

    occurrence: jax.Array
    seen: jax.Array

    @staticmethod
    def zeros(batch: int, vocab: int) -> "Penalties":
        return Penalties(jnp.zeros((batch, vocab), jnp.float32), jnp.zeros((batch, vocab), bool))


def token_weights(decode_bytes, vocab: int) -> np.ndarray:
    """[V] weight a generated token adds to its occurrence: 0 for the single characters ' \\t0-9', else 1."""
    w = np.ones(vocab, np.float32)
    for t in range(vocab):
        try:
            s = decode_bytes([t])
        except (ValueError, KeyError, IndexError):
            continue
        if len(s) == 1 and s in b" \t0123456789":
            w[t] = 0.0
    return w


def _one(logits_V, key, temperature, top_p, top_k, presence, frequency, occ_V, seen_V):
    logits = logits_V.astype(jnp.float32) - jnp.where(seen_V, presence + occ_V * frequency, 0.0)
    greedy = jnp.argmax(logits)
    probs = jax.nn.softmax(logits)
    sorted_p = jnp.sort(probs)[::-1]
    cum = jnp.cumsum(sorted_p)
    cutoff = sorted_p[jnp.argmax(cum >= top_p)]
    probs = jnp.where(probs < cutoff, 0.0, probs)
    V = probs.shape[0]
    kth = sorted_p[jnp.clip(top_k - 1, 0, V - 1)]
    probs = jnp.where((top_k > 0) & (top_k < V) & (probs < kth), 0.0, probs)
    t = jnp.where(temperature > 0, temperature, 1.0)
    probs = jnp.where(probs > 0, probs ** (1.0 / t), 0.0)
    sampled = jax.random.categorical(key, jnp.log(probs / jnp.sum(probs)))
    return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)


def sample(logits_BV, keys_B, rows: SamplingRows, pen: Penalties):
    """One token per row [B] int32."""
    return jax.vmap(_one)(logits_BV, keys_B, rows.temperature, rows.top_p, rows.top_k, rows.presence, rows.frequency,
                          pen.occurrence, pen.seen)


def observe(pen: Penalties, tokens_B, weight_V, decay_B) -> Penalties:
    """After a step: every count decays, the new token's count grows by its weight, and it is marked seen."""
    onehot = jax.nn.one_hot(tokens_B, pen.occurrence.shape[1], dtype=jnp.float32)
    occ = pen.occurrence * decay_B[:, None] + onehot * weight_V[None, :]
    return Penalties(occ, pen.seen | (onehot > 0))


def split_keys(keys_B):
    """(keys for this step, keys for the next) from one key per row."""
    both = jax.vmap(lambda k: jax.random.split(k))(keys_B)
    return both[:, 0], both[:, 1]
