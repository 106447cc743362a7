"""Next-token sampling on device, batched, one row per request, as the official `rwkv` package samples
(rwkv 0.8.32, `rwkv/utils.py`: PIPELINE.sample_logits and PIPELINE.generate):

1. penalties: every token generated so far loses `presence + occurrence * frequency` from its logit;
   occurrence counts decay by `decay` per step and a new token adds 1 (0 for whitespace and digit tokens);
2. softmax; keep the tokens whose probability reaches the one at which the sorted cumulative mass first
   reaches `top_p`; then the `top_k` most likely (0: all); both cutoffs are found by bisection on the
   probability (no sort of the vocabulary);
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


def _threshold(probs_BV, keep_BV_fn, target_B, iters: int = 32):
    """Per row, the largest t in [0, max p] with keep_BV_fn(probs >= t) >= target, by bisection: 32 halvings
    of a pass over the vocabulary instead of a sort (65536-row vocabularies sort slowly on CPU)."""
    lo = jnp.zeros(probs_BV.shape[:1], jnp.float32)
    hi = jnp.max(probs_BV, axis=-1) * (1 + 1e-6) + 1e-30

    def body(_, lohi):
        lo, hi = lohi
        mid = (lo + hi) / 2
        ok = keep_BV_fn(probs_BV >= mid[:, None]) >= target_B
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = jax.lax.fori_loop(0, iters, body, (lo, hi))
    return lo


def sample(logits_BV, keys_B, rows: SamplingRows, pen: Penalties):
    """One token per row [B] int32 (the official rule, the cutoffs found to 2^-32 of the largest probability)."""
    logits = logits_BV.astype(jnp.float32) - jnp.where(pen.seen, (rows.presence[:, None]
                                                                   + pen.occurrence * rows.frequency[:, None]), 0.0)
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def stochastic():
        probs = jax.nn.softmax(logits, axis=-1)
        V = probs.shape[-1]
        mass = lambda keep: jnp.sum(jnp.where(keep, probs, 0.0), axis=-1)
        use_p = rows.top_p < 1
        cut = jax.lax.cond(jnp.any(use_p), lambda: jnp.where(use_p, _threshold(probs, mass, rows.top_p), 0.0),
                           lambda: jnp.zeros(probs.shape[:1], jnp.float32))
        kept = jnp.where(probs < cut[:, None], 0.0, probs)
        use_k = (rows.top_k > 0) & (rows.top_k < V)
        count = lambda keep: jnp.sum(keep & (kept > 0), axis=-1)
        kth = jax.lax.cond(jnp.any(use_k), lambda: _threshold(kept, count, rows.top_k.astype(jnp.int32)),
                           lambda: jnp.zeros_like(cut))
        kept = jnp.where(use_k[:, None] & (kept < kth[:, None]), 0.0, kept)
        t = jnp.where(rows.temperature > 0, rows.temperature, 1.0)
        kept = jax.lax.cond(jnp.any(t != 1), lambda: jnp.where(kept > 0, kept ** (1.0 / t[:, None]), 0.0),
                            lambda: kept)
        # inverse CDF: one uniform per row, no per-token random numbers or logarithms
        cum = jnp.cumsum(kept, axis=-1)
        u = jax.vmap(lambda k: jax.random.uniform(k))(keys_B) * cum[:, -1]
        return jnp.minimum(jnp.sum(cum <= u[:, None], axis=-1), V - 1).astype(jnp.int32)

    sampled = jax.lax.cond(jnp.all(rows.temperature <= 0), lambda: greedy, stochastic)
    return jnp.where(rows.temperature > 0, sampled, greedy)


def observe(pen: Penalties, tokens_B, weight_V, decay_B) -> Penalties:
    """After a step: every count decays, the new token's count grows by its weight, and it is marked seen."""
    onehot = jax.nn.one_hot(tokens_B, pen.occurrence.shape[1], dtype=jnp.float32)
    occ = pen.occurrence * decay_B[:, None] + onehot * weight_V[None, :]
    return Penalties(occ, pen.seen | (onehot > 0))


def split_keys(keys_B):
    """(keys for this step, keys for the next) from one key per row."""
    both = jax.vmap(lambda k: jax.random.split(k))(keys_B)
    return both[:, 0], both[:, 1]
