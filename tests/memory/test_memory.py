"""The session memory on its own: an exact distribution, test-then-train, exact save and restore, a bounded file,
drafts that follow a match, and the device path of the model's opinion matching the host's."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest

from rwkvjax.errors import ConfigError, DataError
from rwkvjax.memory.memory import MemorySettings, SessionMemory, node_stretch_np


def _probs(rng, T, V, temp=1.0):
    logits = rng.standard_normal((T, V)) * 3 / temp
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


def _text_ids(n: int) -> np.ndarray:
    base = b"def load(path):\n    with open(path) as f:\n        return json.load(f)\n\nprint(load('a.json'))\n"
    return np.frombuffer((base * (n // len(base) + 1))[:n], np.uint8).astype(np.int64)


def _learn(mem: SessionMemory, probs, ids):
    st, bits = node_stretch_np(probs, ids, mem.settings.nbits)
    return mem.score(st, bits, ids)


@pytest.mark.parametrize("V", [256, 300, 65536])
def test_the_mixture_is_a_distribution_over_the_whole_vocabulary(V):
    rng = np.random.default_rng(0)
    mem = SessionMemory(MemorySettings.for_vocab(V, memory_mb=8))
    ids = rng.integers(0, min(V, 64), 400)
    ids[200:] = ids[:200]  # a repeat, so the match models and counters speak
    _learn(mem, _probs(rng, 400, V), ids)
    d = mem.distribution(_probs(rng, 1, V)[0])
    assert d.shape == (V,) and (d >= 0).all()
    assert abs(d.sum() - 1) < 1e-9
    assert d.max() > 2.0 / V  # the memory has an opinion (not the uniform mixture of nothing)


@pytest.mark.parametrize("V", [256, 65536])
def test_each_unit_is_scored_before_anything_learns_from_it(V):
    """bits[t] from `score` must equal -log2 of the distribution a copy gives before it sees unit t: an update
    made before scoring (a leak of the unit into its own prediction) would make the two differ."""
    rng = np.random.default_rng(1)
    mem = SessionMemory(MemorySettings.for_vocab(V, memory_mb=8))
    ids = np.tile(rng.integers(0, 200, 50), 6)
    probs = _probs(rng, len(ids), V)
    for t in range(len(ids)):
        before = mem.copy().distribution(probs[t])
        bits = _learn(mem, probs[t:t + 1], ids[t:t + 1])[0]
        assert bits == pytest.approx(-np.log2(before[ids[t]]), rel=1e-4, abs=1e-6), t
    # and it did learn: the repeated pattern ends far cheaper than it started
    assert bits < 1.0


def test_learning_from_history_beats_the_model_alone():
    rng = np.random.default_rng(2)
    ids = _text_ids(6000)
    probs = _probs(rng, len(ids), 256, temp=4.0)  # a weak model
    st, bits_lm = node_stretch_np(probs, ids, 8)
    mem = SessionMemory(MemorySettings.for_vocab(256, memory_mb=8))
    bits = mem.score(st, bits_lm, ids)
    assert bits[-2000:].mean() < 0.1 < bits_lm[-2000:].mean()
    # an empty memory starts as the model itself, up to its SSE map, whose start is the identity on 33 points of
    # the stretch domain between -8 and 8 (a probability beyond them is pulled in to that range)
    first = SessionMemory(MemorySettings.for_vocab(256, memory_mb=8)).score(st[:1], bits_lm[:1], ids[:1])
    assert abs(first[0] / bits_lm[0] - 1) < 0.01


def test_save_and_load_restore_the_memory_bit_for_bit(tmp_path):
    rng = np.random.default_rng(3)
    ids = _text_ids(3000)
    probs = _probs(rng, len(ids), 256)
    a = SessionMemory(MemorySettings.for_vocab(256, memory_mb=8))
    _learn(a, probs[:2000], ids[:2000])
    a.save(tmp_path / "m.safetensors")
    assert (os.stat(tmp_path / "m.safetensors").st_mode & 0o777) == 0o600
    b = SessionMemory.load(tmp_path / "m.safetensors")
    for k, v in a.state_dict()[1].items():
        assert np.array_equal(v, b.state_dict()[1][k]), k
    assert np.array_equal(_learn(a, probs[2000:], ids[2000:]), _learn(b, probs[2000:], ids[2000:]))
    # a copy-on-write load learns privately: the file stays as it was
    c = SessionMemory.load(tmp_path / "m.safetensors", private_copy=True)
    _learn(c, probs[2000:], ids[2000:])
    d = SessionMemory.load(tmp_path / "m.safetensors")
    assert d.symbols_seen == 2000 and c.symbols_seen == 3000


def test_memory_mb_bounds_the_file(tmp_path):
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 256, 50_000)
    for mb in (6, 8, 16):
        m = SessionMemory(MemorySettings.for_vocab(256, memory_mb=mb))
        m.absorb(ids)
        m.save(tmp_path / f"{mb}.safetensors")
        size = (tmp_path / f"{mb}.safetensors").stat().st_size
        assert size <= mb * (1 << 20) * 1.02, (mb, size)
        assert size >= mb * (1 << 20) * 0.5, (mb, size)  # and uses what it was given


def test_a_bounded_memory_keeps_the_recent_history():
    """The history is a ring: once it is full, a repeat of something recent is still found, a repeat of the
    oldest text is not."""
    rng = np.random.default_rng(5)
    m = SessionMemory(MemorySettings.for_vocab(256, memory_mb=8))
    cap = m.stats()["history_capacity"]
    old, recent = rng.integers(0, 256, 1000), rng.integers(0, 256, 1000)
    m.absorb(np.concatenate([old, rng.integers(0, 256, cap - 2000), recent, rng.integers(0, 256, 1000)]))
    a, b = m.copy(), m.copy()
    a.absorb(recent[:40])
    b.absorb(old[:40])
    assert a.draft(8) == recent[40:48].tolist()
    assert b.draft(8) == []


def test_draft_follows_the_latest_match():
    m = SessionMemory(MemorySettings.for_vocab(256, memory_mb=8))
    text = np.frombuffer(b"the quick brown fox jumps over the lazy dog. the quick brown", np.uint8)
    m.absorb(text)
    assert bytes(m.draft(6)) == b" fox j"
    assert SessionMemory(MemorySettings.for_vocab(256, memory_mb=8)).draft(4) == []


def test_bad_settings_and_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="memory-mb 2.*at least 6 MB"):
        MemorySettings.for_vocab(256, memory_mb=2)
    with pytest.raises(ConfigError, match="vocabulary"):
        MemorySettings.for_vocab(70000)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a memory")
    with pytest.raises(DataError, match="bad.safetensors"):
        SessionMemory.load(bad)
    m = SessionMemory(MemorySettings.for_vocab(256, memory_mb=8))
    with pytest.raises(ValueError, match="outside"):
        m.absorb([300])


def test_device_path_matches_host_path():
    from rwkvjax.memory.lm import path_stretch
    rng = np.random.default_rng(6)
    for V, nbits in ((256, 8), (300, 12)):
        logits = rng.standard_normal((20, V)).astype(np.float32) * 2
        ids = rng.integers(0, V, 20)
        st, nll = path_stretch(jnp.asarray(logits), jnp.asarray(ids), nbits)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        st_h, bits_h = node_stretch_np(p, ids, nbits)
        np.testing.assert_allclose(np.asarray(st), st_h, atol=1e-4)
        np.testing.assert_allclose(np.asarray(nll) / np.log(2), bits_h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("V", [256, 1000, 65536])
def test_learn_takes_the_models_opinions_from_its_probabilities_as_the_reference_does(V):
    """`learn` (one pass over the leaves under the path) gives the memory what `score` with the vectorised
    reference `node_stretch_np` gives it, bits and learned state alike."""
    from rwkvjax.memory import kernels as K
    rng = np.random.default_rng(V)
    nbits = MemorySettings.for_vocab(V).nbits
    for _ in range(20):
        probs = rng.dirichlet(np.full(V, 0.05)).astype(np.float32)
        probs[rng.integers(V, size=3)] = 0.0  # empty subtrees are clipped, not NaN
        sym = int(rng.integers(V))
        want, _ = node_stretch_np(probs, np.asarray([sym]), nbits)
        got = np.zeros(nbits, np.float32)
        K.path_stretch_probs(probs, sym, nbits, got)
        np.testing.assert_allclose(got, want[0], atol=2e-5)
    a = SessionMemory(MemorySettings.for_vocab(V, memory_mb=8))
    a.absorb(rng.integers(V, size=200))
    b = a.copy()
    for _ in range(30):
        probs = rng.dirichlet(np.full(V, 0.3)).astype(np.float32)
        sym = int(rng.integers(V))
        st, bits = node_stretch_np(probs, np.asarray([sym]), nbits)
        assert a.learn(sym, probs) == pytest.approx(b.score(st, bits, [sym])[0], abs=1e-3)
    for k in a.a:
        np.testing.assert_allclose(np.asarray(a.a[k], np.float64), np.asarray(b.a[k], np.float64), rtol=1e-4,
                                   atol=1e-6, err_msg=k)
