"""Sampling from the session memory's mixture on the host, and the speculative-sampling rule, checked exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import chisquare

from rwkvjax.memory.memory import MemorySettings, SessionMemory
from rwkvjax.serve.mixture import MemoryDecoder, read_mark, read_upto
from rwkvjax.serve.sampling import Penalties, RowSampler, SamplingRows, inverse_cdf, observe, sample, verify_draft
from tests.serve.test_sampling import official_probs


def small(vocab: int) -> MemorySettings:
    """The smallest memory of a vocabulary (tests run many of them)."""
    return MemorySettings.for_vocab(vocab, MemorySettings.for_vocab(vocab).min_mb())


def _intervals(q):
    """Every token's interval of u in [0, 1) under the inverse CDF: (midpoint, length) per token with q > 0."""
    cum = np.concatenate([[0.0], np.cumsum(q)]) / np.sum(q)
    return [((cum[i] + cum[i + 1]) / 2, cum[i + 1] - cum[i]) for i in range(len(q)) if cum[i + 1] > cum[i]]


@pytest.mark.parametrize("seed", range(4))
def test_verify_draft_is_the_speculative_rule_exactly(seed):
    """Integrating over u exactly (the inverse CDF is constant on each token's interval): the draft is accepted
    with probability q[draft], and a rejection yields q without the draft, renormalised; together, q itself."""
    rng = np.random.default_rng(seed)
    q = rng.dirichlet(np.ones(7))
    q[rng.integers(7)] = 0.0  # a token the filters removed: never drawn, never accepted
    q /= q.sum()
    for draft in range(7):
        accept, rejected = 0.0, np.zeros(7)
        for u, width in _intervals(q):
            ok, token = verify_draft(q, draft, u)
            assert ok == (token == draft)
            if ok:
                accept += width
            else:
                rejected[token] += width
        assert accept == pytest.approx(q[draft], abs=1e-12)
        residual = np.where(np.arange(7) == draft, 0.0, q)
        if residual.sum() > 0:
            np.testing.assert_allclose(rejected / (1 - accept), residual / residual.sum(), atol=1e-12)
        # the token that follows, accepted draft or replacement, is distributed as q
        np.testing.assert_allclose(rejected + np.where(np.arange(7) == draft, accept, 0.0), q, atol=1e-12)


def test_verify_draft_frequencies():
    rng = np.random.default_rng(1)
    q = rng.dirichlet(np.ones(5))
    us = rng.random(20000)
    res = [verify_draft(q, 2, u) for u in us]
    acc = np.mean([ok for ok, _ in res])
    assert abs(acc - q[2]) < 4 * np.sqrt(q[2] * (1 - q[2]) / len(us))
    counts = np.bincount([t for ok, t in res if not ok], minlength=5)
    resid = np.where(np.arange(5) == 2, 0.0, q)
    keep = resid > 0
    assert counts[2] == 0
    assert chisquare(counts[keep], resid[keep] / resid.sum() * counts.sum()).pvalue > 1e-4


@pytest.mark.parametrize("temperature,top_p,top_k", [(1.0, 0.85, 0), (0.7, 0.9, 0), (1.5, 1.0, 5), (1.0, 0.5, 3),
                                                     (1.0, 1.0, 0)])
def test_host_sampler_is_the_official_rule(temperature, top_p, top_k):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2.0, 40)
    s = RowSampler({"temperature": temperature, "top_p": top_p, "top_k": top_k}, np.ones(40), 0)
    # top_p = 1 keeps everything (`sample` skips the cut); the reference's cumulative sum may end a rounding
    # error below 1, so it is asked for a hair less
    want = official_probs(logits.copy(), temperature, min(top_p, 1 - 1e-9), top_k)
    np.testing.assert_allclose(s.distribution(logits), want, rtol=1e-9, atol=1e-15)


def test_host_sampler_penalties_and_greedy_follow_the_device_sampler():
    """Penalties and their decay as `sample`/`observe` keep them on device; greedy is the argmax after them."""
    V = 12
    rng = np.random.default_rng(3)
    w = np.ones(V, np.float32)
    w[4] = 0.0  # a whitespace-like token: seen, but its count does not grow
    row = {"temperature": 0.0, "presence": 0.4, "frequency": 0.3, "decay": 0.9}
    host = RowSampler(row, w, 0)
    rows = SamplingRows.of([row])
    pen = Penalties.zeros(1, V)
    for _ in range(30):
        logits = rng.normal(0, 1.0, V).astype(np.float32)
        want = int(sample(jnp.asarray(logits)[None], jax.random.split(jax.random.key(0), 1), rows, pen)[0])
        got = inverse_cdf(host.distribution(logits.astype(np.float64)), host.uniform())
        assert got == want
        host.observe(got)
        pen = observe(pen, jnp.asarray([want]), jnp.asarray(w), rows.decay)
        np.testing.assert_allclose(host.occurrence, np.asarray(pen.occurrence[0]), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(host.seen, np.asarray(pen.seen[0]))


def test_plain_steps_and_verification_draw_the_same_tokens():
    """Fed the same model probabilities, a verification yields exactly the tokens plain steps draw from the same
    seed (one uniform per position either way), the memory learning the same tokens."""
    rng = np.random.default_rng(7)
    V = 256
    text = list(b"the quick brown fox jumps over the lazy dog; " * 4)
    base = SessionMemory(small(V))
    base.absorb(text)
    probs = rng.dirichlet(np.full(V, 0.2), size=9).astype(np.float32)
    row = {"temperature": 1.0, "top_p": 0.95}
    for seed in range(5):
        plain = MemoryDecoder(base.copy(), RowSampler(row, np.ones(V), seed), 8)
        spec = MemoryDecoder(base.copy(), RowSampler(row, np.ones(V), seed), 8)
        drafts = spec.drafts()
        assert drafts == list(b"the quic")
        seen = []
        out = spec.verify(probs, drafts, lambda t, n: seen.append((t, n)) and False)
        assert seen == [(t, n + 1) for n, t in enumerate(out)]  # every token, the replacement of a rejection too
        want = [plain.choose(probs[j], drafts[j] if j < len(drafts) else None) for j in range(len(out))]
        assert out == want
        assert spec.learned == plain.learned
        np.testing.assert_array_equal(spec.memory.a["hist"], plain.memory.a["hist"])


def test_read_marks():
    toks = [5, 6, 7, 8, 9]
    mark = read_mark(toks[:3])
    assert read_upto(mark, toks) == 3
    assert read_upto(mark, [5, 6, 0, 8]) == 0   # the conversation was edited: absorb it all
    assert read_upto(mark, [5, 6]) == 0
    assert read_upto(None, toks) == 0


@pytest.mark.parametrize("row", [{"temperature": 1.0}, {"temperature": 0.0}, {"temperature": 0.8, "top_p": 0.9},
                                 {"temperature": 1.0, "top_k": 5}, {"temperature": 1.2, "presence": 0.3,
                                                                    "frequency": 0.2}])
def test_probabilities_as_logits(row):
    """A mixture's probabilities go to the sampler as logits log p; the shortcut that skips the logarithm gives
    the same final distribution."""
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.full(64, 0.3))
    s = RowSampler(row, np.ones(64), 0)
    for t in rng.integers(64, size=5):
        s.observe(int(t))
    np.testing.assert_allclose(s.distribution_of_probs(p), s.distribution(np.log(p)), rtol=1e-9, atol=1e-15)
