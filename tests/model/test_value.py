"""The model value `rwkvjax.load` returns, and the public functions on it (`rwkvjax/api.py`): what the README's
library section shows works with no deep import."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import rwkvjax
from rwkvjax.errors import CheckpointError, CheckpointMismatch, ConfigError
from rwkvjax.eval.scoring import score_stream
from rwkvjax.io.states import StateStore
from rwkvjax.model.params import params_hash
from rwkvjax.model.state import start_state
from rwkvjax.serve.generate import generate_ids
from rwkvjax.text.tokenizer import ByteTokenizer, NoTokenizer
from rwkvjax.train.run import DEMO_MODEL
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "data" / "golden" / "tiny.safetensors"  # a test shape with no tokenizer


@pytest.fixture(scope="module")
def demo():
    return rwkvjax.load(DEMO_MODEL)


def _s0(model, seed=0):
    a = model.arch
    return np.random.default_rng(seed).normal(0, 0.3, (a.n_layer, a.n_head, a.head_size, a.head_size)).astype(
        np.float32)


def test_load_carries_what_applications_derived(demo):
    assert isinstance(demo, rwkvjax.Model) and isinstance(demo.tokenizer, ByteTokenizer)
    assert demo.arch.vocab_size == 256 and demo.dtype == "fp32" and demo.start_wkv_LHNN is None
    assert demo.hash == params_hash(demo.params) and demo.tokenizer_id == "bytes-256"
    assert rwkvjax.load(DEMO_MODEL, dtype="int8").dtype == "int8"
    with pytest.raises(ConfigError, match="dtype 'float32': choose one of"):
        rwkvjax.load(DEMO_MODEL, dtype="float32")


def test_a_model_without_a_tokenizer_runs_on_ids_and_says_why_text_fails():
    model = rwkvjax.load(GOLDEN)
    assert isinstance(model.tokenizer, NoTokenizer)
    logits, _ = model.forward([1, 2, 3])
    assert logits.shape == (1, 3, model.arch.vocab_size)
    with pytest.raises(CheckpointError, match=f"no tokenizer for a model with {model.arch.vocab_size} embedding rows"):
        rwkvjax.score(model, "text")


def test_stepping_one_token_at_a_time_equals_one_call(demo):
    """T = 1 runs the decoding layout; T > 1 the stacked one: the same logits and state."""
    ids = np.asarray(demo.tokenizer.encode("def main():\n    return 0\n"), np.int32)
    whole, st_whole = demo.forward(ids[None])
    state, steps = demo.initial_state(1), []
    for t in ids:
        logits, state = demo.forward([[t]], state)
        steps.append(np.asarray(logits[0, 0]))
    np.testing.assert_allclose(np.stack(steps), np.asarray(whole[0]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(state.wkv), np.asarray(st_whole.wkv), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match=r"\[B, T\] with T >= 1"):
        demo.forward(np.zeros((1, 0), np.int32))


def test_decoding_copy_keeps_the_hash_and_runs_the_same(demo):
    dec = demo.decoding()
    assert dec.hash == demo.hash and isinstance(dec.params.blocks, tuple)
    a, _ = demo.forward([5, 6, 7])
    b, _ = dec.forward([5, 6, 7])
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_score_and_generate_are_the_engines_figures(demo):
    text = "import os\nimport sys\n"
    ids = demo.tokenizer.encode(text)
    nll, _ = score_stream(demo.params, demo.arch, np.asarray(ids, np.int32), demo.initial_state(1))
    assert rwkvjax.score(demo, text) == pytest.approx(float(nll.sum() / np.log(2) / len(text)), rel=1e-6)
    want = bytes(generate_ids(demo.decode_params, demo.arch, ids, max_tokens=24, temperature=0)).decode(
        "utf-8", "replace")
    assert rwkvjax.generate(demo, text, max_tokens=24, temperature=0) == want
    cut = want[3:5]
    assert rwkvjax.generate(demo, text, max_tokens=24, temperature=0, stop=cut) == want[:want.index(cut)]


def test_a_file_that_ships_a_start_state_starts_from_it(tmp_path, demo):
    s0 = _s0(demo)
    sd = load_file(str(DEMO_MODEL))
    merged = tmp_path / "with_state.safetensors"
    save_file({**sd, **{f"blocks.{i}.att.time_state": s0[i] for i in range(demo.arch.n_layer)}}, str(merged))
    model = rwkvjax.load(merged)
    np.testing.assert_array_equal(model.start_wkv_LHNN, s0)
    assert model.hash == demo.hash  # the weights are the same base model
    got, _ = model.forward([10, 11, 12])
    want, _ = rwkvjax.forward(demo.params, np.asarray([[10, 11, 12]]), start_state(s0, 1), config=demo.arch)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    zero, _ = demo.forward([10, 11, 12])
    assert not np.allclose(np.asarray(got), np.asarray(zero))
    # export and import through RWKV-PEFT's format, with no deep import
    rwkvjax.write_time_state(tmp_path / "s.safetensors", model.start_wkv_LHNN)
    np.testing.assert_array_equal(demo.with_start(rwkvjax.read_time_state(tmp_path / "s.safetensors")).start_wkv_LHNN,
                                  s0)
    with pytest.raises(ConfigError, match="does not fit this model"):
        demo.with_start(s0[:, :1])


def test_use_state_reads_the_store_and_refuses_another_base_model(tmp_path, demo):
    s0, shift = _s0(demo, 1), np.full((demo.arch.n_layer, demo.arch.n_embd), 0.5, np.float32)
    store = StateStore(tmp_path / "states")
    store.put("proj", s0, base_hash=demo.hash, tokenizer=demo.tokenizer_id, att_shift=shift)
    tuned = rwkvjax.use_state(demo, "proj", tmp_path / "states")
    st = tuned.initial_state(2)
    np.testing.assert_array_equal(np.asarray(st.wkv[:, 1]), s0)
    np.testing.assert_array_equal(np.asarray(st.att_shift[:, 0]), shift)
    assert rwkvjax.score(tuned, "import os\n") != rwkvjax.score(demo, "import os\n")
    store.put("other", s0, base_hash="0" * 32, tokenizer=demo.tokenizer_id)
    with pytest.raises(CheckpointMismatch, match="was tuned for base model"):
        rwkvjax.use_state(demo, "other", tmp_path / "states")
