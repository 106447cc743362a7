"""Offline hypernetwork training, measured (`eval.hypernet`): held-out figures are what an independent scorer
gets; the file round-trips."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import rwkvjax
from rwkvjax.eval.hypernet import run_hyper_train
from rwkvjax.eval.scoring import score_stream
from rwkvjax.eval.sessions import load_sessions, split_by_time
from rwkvjax.merges.dyntok import DynamicTokenizer, DynTokSettings, digit_protected
from rwkvjax.merges.hypernet import init_hypernet
from rwkvjax.merges.hypernet_io import load_hypernet, start_hypernet
from rwkvjax.model.init import init_params
from rwkvjax.model.params import params_hash
from rwkvjax.model.value import Model
from rwkvjax.text.tokenizer import ByteTokenizer
from rwkvjax.train.config import HyperTrainConfig
from rwkvjax.train.data import stream_windows
from rwkvjax.train.run import DEMO_TRACES

SMALL = rwkvjax.Architecture(256, 64, 1, 128, 32, 32, 32, 32)
LN2 = np.log(2.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hyper") / "h.safetensors"
    cfg = HyperTrainConfig(traces=str(DEMO_TRACES), out=str(out), ctx_len=32, batch=4, steps=6, warmup=2,
                           speed_steps=1, window=64, threshold=2, n_slots=16)
    model = Model(SMALL, init_params(SMALL, 0, live_output=True), ByteTokenizer())
    return cfg, model, run_hyper_train(cfg, model, progress=False)


def test_split_and_heldout_plain_figure_match_an_independent_scorer(run):
    cfg, model, res = run
    config, params = model.arch, model.params
    sessions = split_by_time(load_sessions(cfg.traces, ByteTokenizer()), cfg.heldout_fraction)
    held = [s for s in sessions if s.heldout]
    assert res["heldout_sessions"] == [s.sid for s in held]
    assert not set(res["heldout_sessions"]) & set(res["train_sessions"])
    bits = sum(float(score_stream(params, config, s.tokens, rwkvjax.zero_state(config, 1), max_len=32)[0].sum())
               for s in held) / LN2
    nbytes = sum(int(s.nbytes.sum()) for s in held)
    assert res["heldout"]["bytes"] == nbytes
    np.testing.assert_allclose(res["heldout"]["plain"]["bpb"], bits / nbytes, rtol=1e-6)


def test_heldout_merged_figure_continues_the_training_streams_tokenizer(run):
    """Untrained arm re-scored by hand: tokenizer state carried from the training sessions, state carried."""
    cfg, model, res = run
    config, params = model.arch, model.params
    tok = ByteTokenizer()
    sessions = split_by_time(load_sessions(cfg.traces, tok), cfg.heldout_fraction)
    dyn = DynamicTokenizer(DynTokSettings(v_base=256, window=64, threshold=2, n_slots=16,
                                          protected=digit_protected(tok.decode_bytes, 256)), tok.decode_bytes)
    for s in sessions:
        if not s.heldout:
            stream_windows(s.sid, s.tokens, 32, tok, dyn)
    hyper0 = init_hypernet(config, jax.random.key(cfg.seed))
    bits = 0.0
    for s in sessions:
        if s.heldout:
            wins = stream_windows(s.sid, s.tokens, 32, tok, dyn)
            state, prev = rwkvjax.zero_state(config, 1), 0
            for w in wins:
                nll, state = score_stream(params, config, w.units, state, prev_unit=prev, max_len=32, hyper=hyper0,
                                          tables=(w.slots, w.prior_slots, w.avail_from))
                bits += float(np.asarray(nll, np.float64).sum()) / LN2
                prev = int(w.units[-1])
    np.testing.assert_allclose(res["heldout"]["merges_untrained"]["bpb"], bits / res["heldout"]["bytes"], rtol=1e-6)
    assert res["heldout_steps_per_base_token"] < 1.0
    for arm in ("merges_untrained", "merges_trained"):
        assert np.isfinite(res["heldout"][arm]["bpb"]) and res["heldout"][arm]["score_speed_gain"] > 0
    assert res["train_speed"]["gain"] > 0


def test_saved_hypernet_round_trips_and_is_what_was_measured(run):
    cfg, model, res = run
    config, params = model.arch, model.params
    h = load_hypernet(cfg.out, config, params_hash(params))
    h0 = init_hypernet(config, jax.random.key(cfg.seed))
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(h), jax.tree.leaves(h0))]
    assert any(moved), "6 steps must move the hypernetwork"
    assert start_hypernet(config, None, cfg.seed) is not None
    same = start_hypernet(config, cfg.out, 0, params_hash(params))
    for a, b in zip(jax.tree.leaves(h), jax.tree.leaves(same)):
        np.testing.assert_array_equal(a, b)


def test_bad_hypernet_files_raise_errors_naming_file_and_field(run, tmp_path):
    cfg, model, _ = run
    config = model.arch
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hypernet(tmp_path / "nope.safetensors", config)
    with pytest.raises(ValueError, match="trained for model"):
        load_hypernet(cfg.out, config, "0" * 32)
    other = rwkvjax.Architecture(256, 128, 1, 256, 32, 32, 32, 32)
    with pytest.raises(ValueError, match=r"'inp.w1' has shape"):
        load_hypernet(cfg.out, other)
    t = load_file(cfg.out)
    from safetensors import safe_open
    with safe_open(cfg.out, "np") as f:
        md = f.metadata()
    bad = dict(t)
    bad["out.b2"] = np.full_like(t["out.b2"], np.nan)
    save_file(bad, str(tmp_path / "nan.safetensors"), metadata=md)
    with pytest.raises(ValueError, match=r"nan.safetensors: tensor 'out.b2' holds non-finite"):
        load_hypernet(tmp_path / "nan.safetensors", config)
    del bad["out.b2"]
    save_file(bad, str(tmp_path / "missing.safetensors"), metadata=md)
    with pytest.raises(ValueError, match=r"tensor 'out.b2' is missing"):
        load_hypernet(tmp_path / "missing.safetensors", config)
    save_file(t, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a hypernetwork file"):
        load_hypernet(tmp_path / "plain.safetensors", config)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_hypernet(tmp_path / "junk.safetensors", config)


def test_trainer_and_eval_start_from_the_file_and_reject_it_without_merges(run, tmp_path):
    from rwkvjax.eval.prequential import EvalConfig, run_eval
    from rwkvjax.train.config import TrainConfig
    from rwkvjax.train.run import Trainer
    cfg, model, _ = run
    config = model.arch
    tc = TrainConfig(ckpt_dir=str(tmp_path / "ck"), source=(str(DEMO_TRACES),), steps=1, ctx_len=32, merges=True,
                     hypernet=cfg.out, merge_slots=16, replay_per_step=0)
    with Trainer(tc, model=model) as tr:
        for a, b in zip(jax.tree.leaves(tr.learner.trainable0.hyper),
                        jax.tree.leaves(load_hypernet(cfg.out, config))):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="only used with --merges"):
        TrainConfig(ckpt_dir=str(tmp_path / "x"), hypernet=cfg.out)
    with pytest.raises(ValueError, match="trained for model"):
        Trainer(TrainConfig(**{**tc.to_dict(), "ckpt_dir": str(tmp_path / "ck2")}),
                model=Model(config, init_params(config, 1, live_output=True), ByteTokenizer()))
    with pytest.raises(ValueError, match="'merges' arm"):
        run_eval(EvalConfig(traces=str(DEMO_TRACES), out=str(tmp_path / "ev"), hypernet=cfg.out, arms=("frozen",)),
                 model)
