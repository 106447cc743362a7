"""Speculative decoding from the session memory: the text is the text of plain sampling from the mixture, token for
token (greedy, and sampled with the same seed), for bytes and for a World-size vocabulary; and when to verify."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import rwkvjax
from rwkvjax.memory.lm import mixture_bits
from rwkvjax.memory.memory import SessionMemory
from rwkvjax.model.init import init_params
from rwkvjax.model.params import unstack_layers
from rwkvjax.model.state import zero_state
from rwkvjax.serve.generate import generate_ids
from rwkvjax.serve.mixture import Costs, MemoryDecoder
from rwkvjax.serve.sampling import RowSampler
from tests.serve.test_mixture import small

K = 7


def _free_verification() -> Costs:
    """Costs under which verifying drafts always pays: every step with drafts speculates."""
    costs = Costs()
    costs.record("verify", 0.0)
    return costs


@functools.lru_cache(maxsize=None)
def _primed(vocab: int):
    """A tiny random model and a memory that has read (scored, so its mixers trust it) text repeating itself,
    and a prompt that starts one of the repeated passages again: the mixture's reply copies, with drafts
    accepted and some rejected where passages diverge."""
    cfg = rwkvjax.Architecture(vocab, 64, 2, 128, 32, 32, 32, 32)
    params = init_params(cfg, 0, live_output=True)
    rng = np.random.default_rng(vocab)
    if vocab == 256:
        # the latest passage drafts json, the four before it (the contexts' counts) say yaml
        common = b"def parse_config(path):\n    with open(path) as f:\n        return "
        history = list(b"\n".join([common + b"yaml.safe_load(f)\n"] * 4 + [common + b"json.load(f)\n"]))
        prompt = list(b"# read the settings\ndef parse_")
    else:
        passages = [rng.integers(1, vocab, 40) for _ in range(3)]
        passages[1][:12] = passages[0][:12]  # passages share beginnings: matches that diverge
        history = np.concatenate([passages[i % 3] for i in range(9)]).tolist()
        prompt = rng.integers(1, vocab, 8).tolist() + passages[0][:6].tolist()
    mem = SessionMemory(small(vocab))
    mixture_bits(params, cfg, history, zero_state(cfg, 1), mem)
    return cfg, unstack_layers(params), mem, prompt


@pytest.fixture(scope="module", params=[256, 65536], ids=["bytes", "world"])
def primed(request):
    return _primed(request.param)


@pytest.fixture(scope="module")
def primed_bytes():
    return _primed(256)


def _run(primed, n, **kw):
    cfg, params, mem, prompt = primed
    stats = {}
    out = list(generate_ids(params, cfg, prompt, max_tokens=n, memory=mem.copy(), stop_ids=(), stats=stats, **kw))
    return out, stats


def test_speculative_greedy_is_plain_greedy(primed):
    n = 60 if primed[0].vocab_size == 256 else 30
    plain, _ = _run(primed, n, temperature=0)
    assert len(plain) == n
    for recover in ("refeed", "rerun"):
        spec, stats = _run(primed, n, temperature=0, draft_tokens=K, costs=_free_verification(), recover=recover)
        assert spec == plain, recover
        assert stats["accepted"] >= 5 and stats["verifications"] >= 2, stats
    # the policy's own choice (measured costs) changes nothing either
    assert _run(primed, n, temperature=0, draft_tokens=K)[0] == plain


def test_speculative_sampling_draws_plain_sampling_s_tokens(primed_bytes):
    """Same seed, same uniforms: a draft is accepted exactly when plain sampling draws it."""
    primed = primed_bytes
    # hot enough that the mixture, which trusts this memory, still draws against some drafts
    kw = dict(temperature=1.5, top_p=1.0, presence_penalty=0.2, frequency_penalty=0.2)
    drafted = accepted = 0
    for seed in range(3):
        plain, _ = _run(primed, 50, seed=seed, **kw)
        for recover in ("refeed", "rerun"):
            spec, stats = _run(primed, 50, seed=seed, draft_tokens=K, costs=_free_verification(), recover=recover,
                               **kw)
            assert spec == plain, (seed, recover)
            drafted, accepted = drafted + stats["drafted"], accepted + stats["accepted"]
    assert 0 < accepted < drafted  # drafts accepted, and rejections the state recovered from


def test_no_memory_and_zero_drafts_are_the_plain_paths(primed_bytes):
    cfg, params, mem, prompt = primed = primed_bytes
    without = list(generate_ids(params, cfg, prompt, max_tokens=30, temperature=0, stop_ids=()))
    with_mem, stats = _run(primed, 30, temperature=0)
    assert stats["verifications"] == 0
    assert with_mem != without  # the memory changes greedy text: its mixers learned to trust it


def test_speculation_policy():
    """Verify when the expected tokens per second beat plain steps; a prompt that stops copying stops it."""
    V = 256
    mem = SessionMemory(small(V))
    mem.absorb(list(b"abcdefghij" * 3))
    dec = MemoryDecoder(mem, RowSampler({"temperature": 0.0}, np.ones(V), 0), K)
    drafts = dec.drafts()
    assert drafts == list(b"abcdefg")  # the match continues the repeating text
    mem2 = SessionMemory(small(V))
    mem2.absorb(list(b"xyzxyzxyzxyz"))
    assert mem2.draft(K) == list(b"xyz")  # the memory's match reaches the present after one period
    assert MemoryDecoder(mem2, RowSampler({}, np.ones(V), 0), K).drafts() == list(b"xyzxyzx")  # period 3, repeated
    costs = Costs()
    costs.record("step", 1.0)
    costs.record("verify", 2.5)
    dec.accept = 0.9   # expects 1 + 0.9 + ... + 0.9^7 = 5.7 tokens for 2.5 steps' time
    assert dec.speculate(1, drafts, costs) == K
    assert dec.speculate(3, drafts, costs) == K - 2  # two unfed tokens fill the chunk first
    assert dec.speculate(1, drafts[:3], costs) == 0    # fewer drafts than room: padded, and then refed ...
    costs.record("refeed", 0.5)
    assert dec.speculate(1, drafts[:3], costs) == 3    # ... which pays when refeeding is cheap enough
    assert dec.chunk([5], drafts[:3]) == [5] + drafts[:3] + drafts[2:3] * 4
    dec.accept = 0.3   # 1.4 tokens expected: plain steps are faster
    assert dec.speculate(1, drafts, costs) == 0
    probs = np.full(V, 1 / V, np.float32)
    dec.accept = 0.9
    for _ in range(12):  # plain steps whose greedy token is never the draft pull the estimate down
        dec.choose(probs, draft=ord("z"))
    assert dec.accept < 0.1
    assert MemoryDecoder(mem, RowSampler({}, np.ones(V), 0), 0).speculate(1, drafts, costs) == 0


def test_engine_rows_with_and_without_memory_decode_as_alone(primed_bytes):
    """The server's engine, rows with a memory (verifying drafts, some rejected) batched with rows without one:
    every request gets the tokens `generate` gives it alone; rows without a memory lose nothing."""
    import dataclasses
    import threading

    from rwkvjax.serve.engine import Engine, Request, Sampling
    from rwkvjax.serve.sampling import token_weights
    from rwkvjax.text.tokenizer import ByteTokenizer
    cfg, params, mem, prompt = primed_bytes
    tok = ByteTokenizer()
    weights = token_weights(tok.decode_bytes, cfg.vocab_size)
    cases = [(prompt, Sampling(max_tokens=40, temperature=0.0), True),
             (prompt, Sampling(max_tokens=40, temperature=1.0, top_p=0.9, seed=4, presence=0.2), True),
             (list(b"def "), Sampling(max_tokens=40, temperature=0.0), False),
             (list(b"import os\n"), Sampling(max_tokens=40, temperature=1.0, top_p=0.9, seed=3), False)]
    engine = Engine(params, cfg, tok, max_batch=4, memory=True, draft_tokens=K)
    engine.costs.record("verify", 0.0)  # verify whenever there are drafts
    done = [threading.Event() for _ in cases]
    reqs = []
    for (p, s, with_memory), ev in zip(cases, done):
        scratch = None
        if with_memory:
            scratch = mem.copy()
            scratch.absorb(p)  # what the app does before it submits
        reqs.append(Request(prompt=p, start=zero_state(cfg, 1), start_key="base", sampling=s,
                            emit=lambda kind, payload, ev=ev: ev.set() if kind in ("done", "error") else None,
                            memory=scratch, draft_tokens=K if with_memory else 0))
    engine.start()
    try:
        for r in reqs:
            engine.submit(r)
        assert all(ev.wait(300) for ev in done)
        assert engine.errors == 0
    finally:
        engine.stop()
    assert engine.stats()["speculation"]["accepted"] > 0
    for r, (p, s, with_memory) in zip(reqs, cases):
        alone = list(generate_ids(params, cfg, p, max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
                                  presence_penalty=s.presence, seed=s.seed or 0, weights=weights,
                                  memory=mem.copy() if with_memory else None))
        assert r.generated == alone, dataclasses.asdict(s)
