"""The sampler follows the official `rwkv` package's rule (rwkv/utils.py), batched on device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import chisquare

from rwkvjax.serve.sampling import Penalties, SamplingRows, observe, sample, token_weights


def official_probs(logits, temperature, top_p, top_k):
    """The official PIPELINE.sample_logits distribution (numpy), as a vector."""
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    sorted_ids = np.argsort(probs)
    sorted_probs = probs[sorted_ids][::-1]
    cutoff = float(sorted_probs[np.argmax(np.cumsum(sorted_probs) >= top_p)])
    probs[probs < cutoff] = 0
    if 0 < top_k < len(probs):
        probs[sorted_ids[:-top_k]] = 0
    probs = probs ** (1.0 / temperature)
    return probs / probs.sum()


def _draw(logits, n, **row):
    V = logits.shape[0]
    rows = SamplingRows.of([row] * n)
    keys = jax.random.split(jax.random.key(0), n)
    return np.asarray(jax.jit(sample)(jnp.broadcast_to(jnp.asarray(logits), (n, V)), keys, rows, Penalties.zeros(n, V)))


def test_sampled_frequencies_match_the_official_distribution():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2.0, 40).astype(np.float32)
    for temperature, top_p, top_k in [(1.0, 0.85, 0), (0.7, 0.9, 0), (1.5, 1.0, 5), (1.0, 0.5, 3)]:
        want = official_probs(logits.astype(np.float64), temperature, top_p, top_k)
        got = _draw(logits, 6000, temperature=temperature, top_p=top_p, top_k=top_k)
        assert set(np.unique(got)) <= set(np.flatnonzero(want)), (temperature, top_p, top_k)
        counts = np.bincount(got, minlength=len(logits))[want > 0]
        assert chisquare(counts, want[want > 0] * len(got)).pvalue > 1e-4, (temperature, top_p, top_k)


def test_greedy_and_penalties():
    logits = np.array([0.0, 3.0, 2.9, 1.0], np.float32)
    V = 4
    rows = SamplingRows.of([{"temperature": 0.0, "presence": 0.5, "frequency": 0.0}])
    pen = Penalties.zeros(1, V)
    tok = sample(jnp.asarray(logits)[None], jax.random.split(jax.random.key(0), 1), rows, pen)
    assert int(tok[0]) == 1
    pen = observe(pen, tok, jnp.ones(V), rows.decay)  # token 1 generated once: it loses 0.5
    tok = sample(jnp.asarray(logits)[None], jax.random.split(jax.random.key(1), 1), rows, pen)
    assert int(tok[0]) == 2
    pen = observe(pen, tok, jnp.ones(V), rows.decay)
    np.testing.assert_allclose(np.asarray(pen.occurrence[0]), [0, 0.996, 1.0, 0], rtol=1e-6)


def test_whitespace_and_digits_do_not_count():
    w = token_weights(lambda ids: bytes(ids), 256)
    assert w[ord(" ")] == w[ord("\t")] == w[ord("7")] == 0 and w[ord("a")] == w[ord("\n")] == 1
