"""Model-level properties on the real rwkv.cpp tiny model: streaming, decode, dtypes, conversion, generation."""

from __future__ import annotations

import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rwkvjax
from rwkvjax.io.convert import convert
from rwkvjax.model.state import start_state
from rwkvjax.serve.generate import generate_ids
from tests.conftest import REPO, RWKVCPP_DIR

TEXT = b"def main():\n    print('hello, world')\n"


def _tokens(n=24, batch=2):
    ids = np.frombuffer((TEXT * 2)[: n * batch], np.uint8).reshape(batch, n)
    return jnp.asarray(ids, jnp.int32)


def test_forward_shapes_and_state_dtypes(tiny_model):
    cfg, params = tiny_model.arch, tiny_model.params
    toks = _tokens()
    logits, st = rwkvjax.forward(params, toks, rwkvjax.zero_state(cfg, 2), config=cfg)
    chex.assert_shape(logits, (2, toks.shape[1], cfg.vocab_size))
    chex.assert_shape(st.wkv, (cfg.n_layer, 2, cfg.n_head, cfg.head_size, cfg.head_size))
    chex.assert_shape([st.att_shift, st.ffn_shift], (cfg.n_layer, 2, cfg.n_embd))
    assert st.wkv.dtype == jnp.float32
    chex.assert_tree_all_finite((logits, st))


def test_streaming_two_calls_equal_one(tiny_model):
    cfg, params = tiny_model.arch, tiny_model.params
    toks = _tokens()
    full, st_full = rwkvjax.forward(params, toks, rwkvjax.zero_state(cfg, 2), config=cfg)
    a, st = rwkvjax.forward(params, toks[:, :9], rwkvjax.zero_state(cfg, 2), config=cfg)
    b, st = rwkvjax.forward(params, toks[:, 9:], st, config=cfg)
    np.testing.assert_allclose(np.concatenate([a, b], 1), full, rtol=0, atol=2e-5)
    chex.assert_trees_all_close(st, st_full, atol=2e-5)


def test_decode_steps_equal_sequence(tiny_model):
    cfg, params = tiny_model.arch, tiny_model.params
    toks = _tokens(n=12, batch=1)
    full, st_full = rwkvjax.forward(params, toks, rwkvjax.zero_state(cfg, 1), config=cfg)
    st, outs = rwkvjax.zero_state(cfg, 1), []
    for t in range(toks.shape[1]):
        lg, st = rwkvjax.forward(params, toks[:, t:t + 1], st, config=cfg)
        outs.append(lg)
    np.testing.assert_allclose(np.concatenate(outs, 1), full, rtol=0, atol=2e-5)
    chex.assert_trees_all_close(st, st_full, atol=2e-5)


def test_nonzero_initial_state_changes_logits(tiny_model):
    cfg, params = tiny_model.arch, tiny_model.params
    toks = _tokens(n=8, batch=1)
    S0 = jax.random.normal(jax.random.key(0), (cfg.n_layer, cfg.n_head, cfg.head_size, cfg.head_size)) * 0.5
    base, _ = rwkvjax.forward(params, toks, rwkvjax.zero_state(cfg, 1), config=cfg)
    tuned, _ = rwkvjax.forward(params, toks, start_state(S0, 1), config=cfg)
    assert float(jnp.max(jnp.abs(tuned - base))) > 1e-3


def test_bf16_weights_keep_float32_state_and_track_fp32(tiny_model):
    cfg, params = tiny_model.arch, tiny_model.params
    p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    toks = _tokens(n=16, batch=1)
    ref, _ = rwkvjax.forward(params, toks, rwkvjax.zero_state(cfg, 1), config=cfg)
    out, st = rwkvjax.forward(p16, toks, rwkvjax.zero_state(cfg, 1), config=cfg)
    assert st.wkv.dtype == jnp.float32 and out.dtype == jnp.float32
    rel = float(jnp.max(jnp.abs(out - ref)) / jnp.std(ref))
    assert rel < 0.1, rel  # bf16 weight rounding (~3 significant digits) through 12 layers
    agree = float(jnp.mean(jnp.argmax(out, -1) == jnp.argmax(ref, -1)))
    assert agree >= 0.9, agree


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_convert_round_trip(tmp_path, tiny_model, dtype):
    cfg, params = tiny_model.arch, tiny_model.params
    out = tmp_path / "tiny.safetensors"
    summary = convert(str(RWKVCPP_DIR / "tiny-rwkv-7v0-834K-FP32.bin"), out, dtype)
    assert summary["params"] == 829_888  # the fixture's documented parameter count
    loaded = rwkvjax.load(out)
    cfg2, params2 = loaded.arch, loaded.params
    assert cfg2 == cfg
    if dtype == "fp32":
        chex.assert_trees_all_equal(params2, params)
    else:
        chex.assert_trees_all_close(params2, params, rtol=1e-2, atol=1e-6)


def test_generate_is_seeded_and_uses_the_state(tiny_model):
    cfg, params = tiny_model.arch, tiny_model.params
    prompt = list(b"def ")
    run = lambda seed, state=None: list(generate_ids(params, cfg, prompt, max_tokens=20, temperature=1.0,
                                                     top_p=0.9, seed=seed, state=state))
    assert run(1) == run(1)
    assert len(run(1)) == 20 and all(0 <= t < 256 for t in run(1))
    greedy = list(generate_ids(params, cfg, prompt, max_tokens=10, temperature=0))
    toks = jnp.asarray([prompt], jnp.int32)
    lg, _ = rwkvjax.forward(params, toks, rwkvjax.zero_state(cfg, 1), config=cfg)
    assert greedy[0] == int(jnp.argmax(lg[0, -1]))
    S0 = jax.random.normal(jax.random.key(3), (cfg.n_layer, cfg.n_head, cfg.head_size, cfg.head_size))
    # this model's S0 moves logits by ~0.05, so one short sample rarely differs under the official sampler
    # (serve.sampling); over several seeds and 64 tokens the state must show
    long = lambda seed, state=None: list(generate_ids(params, cfg, prompt, max_tokens=64, temperature=1.0, top_p=0.9,
                                                      seed=seed, state=state))
    assert any(long(s, start_state(S0, 1)) != long(s) for s in range(8))


def test_cli_reports_bad_model_in_one_line(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"not a model at all" * 4)
    r = subprocess.run([sys.executable, str(REPO / "cli.py"), "generate", "--model", str(bad), "--prompt", "x"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and str(bad) in r.stderr and "Traceback" not in r.stderr
