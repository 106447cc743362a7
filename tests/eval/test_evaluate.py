"""Prequential evaluation: frozen arm == plain forward, held-out/canary data never trained on, determinism."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rwkvjax
from rwkvjax.eval.prequential import ARMS, EvalConfig, load_sessions, run_eval
from rwkvjax.eval.report import summarize, write_eval_report
from rwkvjax.model.init import init_params
from rwkvjax.text.tokenizer import ByteTokenizer
from rwkvjax.train.run import DEMO_TRACES

SMALL = rwkvjax.Config(256, 64, 1, 128, 32, 32, 32, 32)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    canary = tmp_path_factory.mktemp("canary") / "canary.txt"
    canary.write_text("The quick brown fox jumps over the lazy dog.\n" * 8)
    cfg = EvalConfig(traces=str(DEMO_TRACES), out=str(tmp_path_factory.mktemp("out")), ctx_len=32,
                     max_windows_per_session=3, canaries=(str(canary),), bootstrap=200)
    model = (SMALL, init_params(SMALL, 0, live_output=True))
    return cfg, model, run_eval(cfg, model, log=lambda m: None)


def test_frozen_arm_equals_plain_forward(result):
    cfg, (config, params), res = result
    s = res["sessions"][0]
    sess = load_sessions(cfg.traces, ByteTokenizer())[0]
    toks = np.asarray(sess.tokens)
    inputs = np.concatenate([[0], toks[:-1]])[None]
    logits, _ = rwkvjax.forward(params, jnp.asarray(inputs), rwkvjax.zero_state(config, 1), config=config)
    ref_bits = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(toks[None]))[0] / np.log(2)
    np.testing.assert_allclose(s["bits"]["frozen"], np.asarray(ref_bits), rtol=2e-5, atol=2e-5)


def test_heldout_and_canaries_never_reach_an_update(result):
    _, _, res = result
    held = {s["sid"] for s in res["sessions"] if s["heldout"]}
    train = {s["sid"] for s in res["sessions"] if not s["heldout"]}
    assert held and train
    for arm, trained in res["trained_sessions"].items():
        assert not held & set(trained), arm
        assert set(trained) <= train
        assert "canary.txt" not in trained
    assert set(res["trained_sessions"]["frozen"]) == set() == set(res["trained_sessions"]["carry"])
    assert set(res["trained_sessions"]["tuned"]) == train


def test_every_arm_reports_and_learning_arms_move(result, tmp_path):
    cfg, model, res = result
    summ = summarize(res)
    assert set(summ["arms"]) == set(ARMS)
    for a in ARMS:
        assert np.isfinite(summ["arms"][a]["train"]["bpb"]) and np.isfinite(summ["arms"][a]["heldout"]["bpb"])
    assert summ["arms"]["frozen"]["train"]["gain"] == 0.0
    first = res["sessions"][0]["bits"]
    assert np.array_equal(first["tuned"], first["frozen"])  # nothing learned before the first session
    later = [s for s in res["sessions"][1:]]
    assert any(not np.array_equal(s["bits"]["tuned"], s["bits"]["frozen"]) for s in later)
    assert any(not np.array_equal(s["bits"]["carry"], s["bits"]["frozen"]) for s in later)
    path = write_eval_report(res, tmp_path, "python cli.py eval ...")
    text = path.read_text()
    assert "| merges |" in text and "Verdict" in text and (tmp_path / "prequential.png").stat().st_size > 1000


def test_deterministic_with_a_seed(result):
    cfg, model, res = result
    again = run_eval(cfg, model, log=lambda m: None)
    for a, b in zip(res["sessions"], again["sessions"]):
        for arm in ARMS:
            np.testing.assert_array_equal(a["bits"][arm], b["bits"][arm])
