"""The compiled decode loop (`decode_n`, used by `generate`) samples exactly what the one-step path does, token for
token (greedy and seeded sampling, fp32 and int8, across block boundaries), and the server engine's batched decode,
which runs the same step on stacked rows, gives each request the tokens `generate` gives it alone."""

from __future__ import annotations

import dataclasses
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rwkvjax
from rwkvjax.model.state import zero_state
from rwkvjax.serve.decode import Carry, decode_n, decode_step, prefill
from rwkvjax.serve.engine import Engine, Request, Sampling
from rwkvjax.serve.generate import BLOCK, generate_ids
from rwkvjax.serve.sampling import Penalties, SamplingRows, token_weights
from rwkvjax.text.tokenizer import for_vocab
from tests.conftest import RWKVCPP_DIR

PROMPT = list(b"def main():\n    ")
SAMPLED = dict(temperature=1.0, top_p=0.9, top_k=0, presence_penalty=0.3, frequency_penalty=0.3)


@pytest.fixture(scope="module", params=["fp32", "int8"])
def model(request):
    loaded = rwkvjax.load(RWKVCPP_DIR / "tiny-rwkv-7v0-834K-FP32.bin", dtype=request.param)
    return loaded.arch, loaded.params, loaded.decode_params


def _one_step_at_a_time(params, cfg, prompt, n, *, seed=0, temperature=1.0, top_p=0.85, top_k=0,
                        presence_penalty=0.0, frequency_penalty=0.0):
    """The same sampling with one host round trip per token (`decode_step`, the engine's call)."""
    V = cfg.vocab_size
    rows = SamplingRows.of([{"temperature": temperature, "top_p": top_p, "top_k": top_k,
                             "presence": presence_penalty, "frequency": frequency_penalty}])
    state = prefill(params, cfg, prompt[:-1], zero_state(cfg, 1))
    carry = Carry(jnp.asarray([prompt[-1]], jnp.int32), state, Penalties.zeros(1, V), jax.random.key(seed)[None])
    out = []
    for _ in range(n):
        carry = decode_step(params, carry, rows, jnp.ones((V,), jnp.float32), config=cfg)
        t = int(carry.next_id[0])
        if t == 0:
            break
        out.append(t)
    return out


def test_loop_equals_one_step_at_a_time_greedy_and_sampled(model):
    cfg, _, dec = model
    n = 2 * BLOCK + 5  # crosses block boundaries: the carry (state, penalties, keys) continues exactly
    greedy = list(generate_ids(dec, cfg, PROMPT, max_tokens=n, temperature=0))
    assert len(greedy) == n
    assert greedy == _one_step_at_a_time(dec, cfg, PROMPT, n, temperature=0)
    for seed in range(3):
        got = list(generate_ids(dec, cfg, PROMPT, max_tokens=n, seed=seed, **SAMPLED))
        assert got == _one_step_at_a_time(dec, cfg, PROMPT, n, seed=seed, **SAMPLED), seed
    assert len({tuple(generate_ids(dec, cfg, PROMPT, max_tokens=n, seed=s, **SAMPLED)) for s in range(3)}) > 1


def test_greedy_loop_follows_the_forward_argmax(model):
    """Independent check of the decoding layout: greedy tokens = argmax of `forward` on the stacked weights."""
    cfg, params, dec = model
    got = list(generate_ids(dec, cfg, PROMPT, max_tokens=12, temperature=0))
    seq, st = list(PROMPT), rwkvjax.zero_state(cfg, 1)
    lg, st = rwkvjax.forward(params, jnp.asarray([seq]), st, config=cfg)
    want = []
    for _ in range(12):
        t = int(jnp.argmax(lg[0, -1]))
        want.append(t)
        lg, st = rwkvjax.forward(params, jnp.asarray([[t]]), st, config=cfg)
    assert got == want


def test_loop_limit_and_early_stop(model):
    cfg, _, dec = model
    V = cfg.vocab_size
    rows = SamplingRows.of([{"temperature": 0.0}])
    first = list(generate_ids(dec, cfg, PROMPT, max_tokens=1, temperature=0))[0]

    def run(stop, limit):
        carry = Carry(jnp.asarray([PROMPT[-1]], jnp.int32), prefill(dec, cfg, PROMPT[:-1], zero_state(cfg, 1)),
                      Penalties.zeros(1, V), jax.random.key(0)[None])
        _, toks, steps = decode_n(dec, carry, rows, jnp.ones((V,)), jnp.asarray(stop, jnp.int32), jnp.int32(limit),
                                  config=cfg, n=BLOCK)
        return np.asarray(toks[:, 0]), int(steps)

    toks, steps = run([-1], 5)
    assert steps == 5 and toks[0] == first and np.all(toks[5:] == -1) and np.all(toks[:5] >= 0)
    toks, steps = run([first], BLOCK)  # every row sampled a stop token after one step: the loop ends
    assert steps == 1 and toks[0] == first and np.all(toks[1:] == -1)


def test_engine_batched_decode_equals_generate(model):
    """Requests decoded together by the server's engine (rows stacked, joining at different steps) get the
    tokens each gets alone from the compiled loop."""
    cfg, _, dec = model
    tok = for_vocab(cfg.vocab_size)
    weights = token_weights(tok.decode_bytes, cfg.vocab_size)
    cases = [(list(b"def "), Sampling(max_tokens=20, temperature=0.0)),
             (list(b"import os\n"), Sampling(max_tokens=20, temperature=1.0, top_p=0.9, seed=3, presence=0.3,
                                             frequency=0.2)),
             (list(b"    return x"), Sampling(max_tokens=20, temperature=0.8, top_p=1.0, top_k=20, seed=11)),
             (list(b"class A:\n"), Sampling(max_tokens=20, temperature=1.0, top_p=0.7, seed=5))]
    engine = Engine(dec, cfg, tok, max_batch=4).start()
    try:
        done = [threading.Event() for _ in cases]
        reqs = [Request(prompt=p, start=zero_state(cfg, 1), start_key="base", sampling=s,
                        emit=lambda kind, payload, ev=ev: ev.set() if kind in ("done", "error") else None)
                for (p, s), ev in zip(cases, done)]
        for r in reqs:
            engine.submit(r)
        assert all(ev.wait(300) for ev in done)
        assert engine.errors == 0
    finally:
        engine.stop()
    for r, (prompt, s) in zip(reqs, cases):
        alone = list(generate_ids(dec, cfg, prompt, max_tokens=s.max_tokens, temperature=s.temperature,
                                  top_p=s.top_p, top_k=s.top_k, presence_penalty=s.presence,
                                  frequency_penalty=s.frequency, seed=s.seed or 0, weights=weights))
        assert r.generated == alone, dataclasses.asdict(s)
