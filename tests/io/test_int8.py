"""Int8 weight-only quantization: `convert --dtype int8` writes it, `rwkvjax.load` reads it, per-row scales, float32
recurrence and state, logits close to fp32 on the real rwkv.cpp tiny model, and the base-hash rule for tuned states."""

from __future__ import annotations

import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rwkvjax
from rwkvjax.errors import CheckpointError, CheckpointMismatch
from rwkvjax.io.convert import convert
from rwkvjax.io.formats import read_official
from rwkvjax.io.states import StateStore
from rwkvjax.model.params import QUANTIZED, params_hash, unstack_layers
from rwkvjax.model.quant import MARKER, MARKER_KEY, QInt8
from tests.conftest import RWKVCPP_DIR

TINY = RWKVCPP_DIR / "tiny-rwkv-7v0-834K-FP32.bin"
TEXT = b"def main():\n    print('hello, world')\n    return 0\n"


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "tiny-int8.safetensors"
    summary = convert(str(TINY), out, "int8")
    assert summary["params"] == 829_888 and summary["dtype"] == "int8"
    return out


def _logits(params, cfg, batch=1):
    toks = jnp.asarray([list(TEXT)] * batch, jnp.int32)
    return rwkvjax.forward(params, toks, rwkvjax.zero_state(cfg, batch), config=cfg)


def test_int8_file_layout_and_per_row_scales(int8_file, tiny_model):
    cfg, fp32 = tiny_model.arch, tiny_model.params
    with open(int8_file, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    assert header["__metadata__"][MARKER_KEY] == MARKER
    assert header["head.weight"]["dtype"] == "I8" and header["head.weight_scale"]["dtype"] == "F32"
    assert header["blocks.3.att.receptance.weight"]["dtype"] == "I8"
    assert header["blocks.3.att.w1"]["dtype"] == "F32"  # LoRAs, vectors and norms stay float32
    assert header["head.weight_scale"]["shape"] == [cfg.vocab_size]  # one scale per output row
    assert int8_file.stat().st_size < 0.5 * TINY.stat().st_size

    loaded = rwkvjax.load(int8_file)
    cfg2, q = loaded.arch, loaded.params
    assert cfg2 == cfg
    assert isinstance(q.head, QInt8) and q.head.q.dtype == jnp.int8 and q.head.scale.shape == (cfg.vocab_size,)
    assert isinstance(q.blocks.ffn_key, QInt8) and q.blocks.ffn_key.scale.shape == (cfg.n_layer, cfg.dim_ffn)
    assert q.blocks.w1.dtype == jnp.float32 and q.blocks.x_r.dtype == jnp.float32
    # per output row: scale = that row's absmax / 127, and q * scale reproduces the row within half a step
    sd, _ = read_official(TINY)
    W = sd["blocks.5.att.key.weight"]  # [out, in]
    Wq = q.blocks.W_k
    np.testing.assert_allclose(np.asarray(Wq.scale[5]), np.abs(W).max(axis=1) / 127, rtol=1e-6)
    err = np.abs(np.asarray(Wq.q[5], np.float32) * np.asarray(Wq.scale[5])[:, None] - W)
    assert np.all(err <= np.asarray(Wq.scale[5])[:, None] / 2 + 1e-7)
    # quantized on load from the fp32 file = read from the int8 file (same tensors, same content hash)
    q2 = rwkvjax.load(TINY, dtype="int8").params
    assert params_hash(q2) == params_hash(q) != params_hash(fp32)


def test_int8_logits_close_to_fp32_with_float32_state(int8_file, tiny_model):
    cfg, fp32 = tiny_model.arch, tiny_model.params
    q = rwkvjax.load(int8_file).params
    ref, _ = _logits(fp32, cfg)
    got, st = _logits(q, cfg)
    assert st.wkv.dtype == st.att_shift.dtype == st.ffn_shift.dtype == got.dtype == jnp.float32
    rel_max = float(jnp.max(jnp.abs(got - ref)) / jnp.std(ref))
    rel_mean = float(jnp.mean(jnp.abs(got - ref)) / jnp.std(ref))
    # measured 0.023 / 0.0046 (12 layers, C = 64: few weights per row, so the coarsest case of this model family)
    assert rel_max < 0.05 and rel_mean < 0.01, (rel_max, rel_mean)
    assert float(jnp.mean(jnp.argmax(got, -1) == jnp.argmax(ref, -1))) >= 0.95


def test_int8_decoding_layout_equals_stacked(int8_file):
    """The decoding layout (per-layer int8 matrices, widened a cache-sized block at a time) computes what the
    stacked forward (each layer's matrix widened whole) computes, for one token at a time at B=2."""
    loaded = rwkvjax.load(int8_file)
    cfg, q = loaded.arch, loaded.params
    ref, st_ref = _logits(q, cfg, batch=2)
    u = unstack_layers(q)
    assert isinstance(u.head.w, QInt8) and isinstance(u.blocks[3].ffn_value.w, QInt8)
    st, outs = rwkvjax.zero_state(cfg, 2), []
    toks = jnp.asarray([list(TEXT)] * 2, jnp.int32)
    for t in range(toks.shape[1]):
        lg, st = rwkvjax.forward(u, toks[:, t:t + 1], st, config=cfg)
        outs.append(lg)
    np.testing.assert_allclose(np.concatenate(outs, 1), ref, rtol=0, atol=2e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=2e-5), st, st_ref)


def test_int8_back_to_fp32_is_the_dequantized_weights(int8_file, tmp_path):
    back = tmp_path / "back.safetensors"
    convert(str(int8_file), back, "fp32")
    q = rwkvjax.load(int8_file).params
    f = rwkvjax.load(back).params
    assert not isinstance(f.head, QInt8)
    want = np.asarray(q.head.q, np.float32) * np.asarray(q.head.scale)[:, None]
    np.testing.assert_array_equal(np.asarray(f.head).T, want)


def test_quantized_set_is_the_large_matrices():
    assert set(QUANTIZED) == {"W_r", "W_k", "W_v", "W_o", "ffn_key", "ffn_value", "head", "emb"}


def test_int8_without_marker_or_scale_is_refused(tmp_path, int8_file):
    from safetensors.numpy import load_file, save_file
    sd = load_file(str(int8_file))
    no_marker = tmp_path / "no-marker.safetensors"
    save_file(sd, str(no_marker))
    with pytest.raises(CheckpointError, match=f"lacks the metadata '{MARKER_KEY}: {MARKER}'"):
        rwkvjax.load(no_marker)
    no_scale = tmp_path / "no-scale.safetensors"
    save_file({k: v for k, v in sd.items() if k != "head.weight_scale"}, str(no_scale), metadata={MARKER_KEY: MARKER})
    with pytest.raises(CheckpointError, match="'head.weight' is int8 without a 'head.weight_scale'"):
        rwkvjax.load(no_scale)


def test_a_state_tuned_on_fp32_weights_is_refused_on_int8(tmp_path, int8_file, tiny_model):
    """Tuned states are tied to the exact weights (content hash): int8 weights are another base model."""
    cfg, fp32 = tiny_model.arch, tiny_model.params
    q = rwkvjax.load(int8_file).params
    store = StateStore(tmp_path / "states")
    wkv = np.zeros((cfg.n_layer, cfg.n_head, cfg.head_size, cfg.head_size), np.float32)
    store.put("proj", wkv, base_hash=params_hash(fp32), tokenizer="bytes")
    store.load("proj", base_hash=params_hash(fp32), tokenizer="bytes")
    with pytest.raises(CheckpointMismatch, match="was tuned for base model"):
        store.load("proj", base_hash=params_hash(q), tokenizer="bytes")
