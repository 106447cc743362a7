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


class RowSampler:
    """One request's sampler on the host, for rows whose logits are made there (the session memory's mixture):
    the rule of `sample` (penalties, then top-p, top-k, temperature; temperature 0 is greedy after the
    penalties) on float64 logits, with the row's penalty counts kept here and one uniform drawn per token.

    `distribution` is the final sampling distribution of a step, so speculative decoding can test drafts against
    exactly what plain sampling draws from. Cutoffs are found by sorting (exact) where `sample` bisects to 2^-32 of
    the largest probability on device; the rule is the same.
    """

    def __init__(self, sampling: dict, weight_V: np.ndarray, seed: int):
        self.temperature = float(sampling.get("temperature", 1.0))
        self.top_p = float(sampling.get("top_p", 1.0))
        self.top_k = int(sampling.get("top_k", 0))
        self.presence = float(sampling.get("presence", 0.0))
        self.frequency = float(sampling.get("frequency", 0.0))
        self.decay = float(sampling.get("decay", 0.996))
        self.weight = np.asarray(weight_V, np.float64)
        V = self.weight.shape[0]
        self.occurrence = np.zeros(V, np.float64)
        self.seen = np.zeros(V, bool)
        self.penalized = self.presence != 0 or self.frequency != 0
        self.rng = np.random.Generator(np.random.PCG64(seed))

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def distribution(self, logits_V: np.ndarray) -> np.ndarray:
        """The distribution the next token is drawn from (float64 [V], sums to 1; greedy: one-hot)."""
        logits = np.asarray(logits_V, np.float64)
        if self.penalized:
            logits = logits - np.where(self.seen, self.presence + self.occurrence * self.frequency, 0.0)
        if self.greedy:
            return _one_hot(int(np.argmax(logits)), logits.shape[0])
        with np.errstate(under="ignore"):
            probs = np.exp(logits - logits.max())
        return self._filtered(probs / probs.sum())

    def distribution_of_probs(self, probs_V: np.ndarray) -> np.ndarray:
        """`distribution(log probs_V)` (a mixture's probabilities taken as logits): without penalties the
        softmax of log p is p itself, so the filters apply to it directly (no logarithm and exponential per id)."""
        if self.penalized:
            with np.errstate(divide="ignore"):
                return self.distribution(np.log(probs_V))
        probs = np.asarray(probs_V, np.float64)
        if self.greedy:
            return _one_hot(int(np.argmax(probs)), probs.shape[0])
        return self._filtered(probs / probs.sum())

    def _filtered(self, probs: np.ndarray) -> np.ndarray:
        """top-p, then top-k, then temperature, renormalised (probs sums to 1)."""
        V = probs.shape[0]
        if self.top_p < 1:
            desc = np.sort(probs)[::-1]
            cutoff = desc[min(int(np.searchsorted(np.cumsum(desc), self.top_p)), V - 1)]
            probs = np.where(probs < cutoff, 0.0, probs)
        if 0 < self.top_k < V and np.count_nonzero(probs) > self.top_k:
            kth = np.partition(probs, V - self.top_k)[V - self.top_k]
            probs = np.where(probs < kth, 0.0, probs)
        if self.temperature != 1:
            with np.errstate(under="ignore"):
                probs = np.where(probs > 0, probs ** (1.0 / self.temperature), 0.0)
        elif self.top_p >= 1 and not 0 < self.top_k < V:
            return probs
        return probs / probs.sum()

    def uniform(self) -> float:
        """The next uniform in [0, 1), one per token (greedy needs none: its distribution is one-hot)."""
        return 0.0 if self.greedy else float(self.rng.random())

    def draw(self, q: np.ndarray) -> int:
        """A token from `distribution`'s result, by the inverse CDF at the next uniform."""
        return inverse_cdf(q, self.uniform())

    def observe(self, token: int) -> None:
        """After a token: the counts decay, the token's grows by its weight, and it counts as seen (as `observe`)."""
        if self.penalized:
            self.occurrence *= self.decay
            self.occurrence[token] += self.weight[token]
            self.seen[token] = True


def _one_hot(i: int, V: int) -> np.ndarray:
    q = np.zeros(V)
    q[i] = 1.0
    return q


def inverse_cdf(q: np.ndarray, u: float) -> int:
    """The token whose interval of the cumulative distribution holds u * total (u in [0, 1)); tokens of zero
    probability have empty intervals and are never drawn (as `sample`'s `sum(cum <= u)`)."""
    cum = np.cumsum(q)
    return min(int(np.searchsorted(cum, u * cum[-1], side="right")), q.shape[0] - 1)


def verify_draft(q: np.ndarray, draft: int, u: float) -> tuple[bool, int]:
    """The speculative-sampling rule (Leviathan et al., ICML 2023, arXiv 2211.17192; Chen et al., arXiv
    2302.01318) for a proposer that puts all its mass on one token: accept `draft` with probability
    min(1, q[draft] / 1) = q[draft]; on rejection draw from norm(max(0, q - onehot(draft))), i.e. q without the
    draft, renormalised. (accepted, the token that follows).

    Realised with the one uniform `u` that plain sampling would use at this position: x = inverse_cdf(q, u) is
    the draft with probability q[draft], and given that it is not, it is distributed as q without the draft,
    renormalised, which is the rule exactly. So a speculative run draws the same tokens as a plain run that
    sees the same uniforms (greedy: q is one-hot, accepted iff the draft is the greedy token).
    """
    x = inverse_cdf(q, u)
    return x == draft, x
