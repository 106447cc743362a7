"""Prequential evaluation: frozen arm == plain forward, held-out/canary data never trained on, a limited or
interrupted run continues to the same results, no verdict from one held-out session."""

from __future__ import annotations

import dataclasses
import json
import re

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rwkvjax
from rwkvjax.errors import CheckpointMismatch
from rwkvjax.eval.config import MEMORY_ARMS
from rwkvjax.eval.prequential import ARMS, Arm, EvalConfig, load_sessions, run_eval, saved_results
from rwkvjax.eval.progress import Progress
from rwkvjax.eval.report import summarize, write_eval_report
from rwkvjax.model.init import init_params
from rwkvjax.model.value import Model
from rwkvjax.text.tokenizer import ByteTokenizer
from rwkvjax.train.run import DEMO_TRACES

SMALL = rwkvjax.Architecture(256, 64, 1, 128, 32, 32, 32, 32)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    canary = tmp_path_factory.mktemp("canary") / "canary.txt"
    canary.write_text("The quick brown fox jumps over the lazy dog.\n" * 8)
    cfg = EvalConfig(traces=str(DEMO_TRACES), out=str(tmp_path_factory.mktemp("out")), ctx_len=32,
                     max_windows_per_session=3, canaries=(str(canary),), bootstrap=200, tbptt_windows=2)
    model = Model(SMALL, init_params(SMALL, 0, live_output=True), ByteTokenizer())
    return cfg, model, run_eval(cfg, model, log=lambda m: None)


def test_frozen_arm_equals_plain_forward(result):
    cfg, model, res = result
    config, params = model.arch, model.params
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
        if arm in MEMORY_ARMS:  # a memory learns every session after scoring it, as a primed compressor does
            assert set(trained) == (set() if arm == "memory_alone" else held | train), arm
            continue
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


def test_memory_arms_learn_across_sessions_and_stand_beside_the_compressors(result, tmp_path):
    cfg, model, res = result
    first, later = res["sessions"][0]["bits"], res["sessions"][1:]
    # before any session every memory is empty: `memory` and `memory_alone` read the first session alike
    np.testing.assert_array_equal(first["memory"], first["memory_alone"])
    assert all(not np.array_equal(s["bits"]["memory"], s["bits"]["memory_alone"]) for s in later)
    for s in res["sessions"]:  # a memory beats the (untrained, random) model it is mixed with
        assert s["bits"]["memory_alone"].sum() < s["bits"]["frozen"].sum()
    # canaries: read with a copy of each memory; the empty one never changes, the learning ones may
    assert len(set(map(str, res["canary"]["memory_alone"]))) == 1
    assert all(np.isfinite(list(c.values())).all() for c in res["canary"]["memory"])
    summ = summarize(res)
    m = summ["memory"]
    assert set(m["vs_compressors"]) == {"memory_alone", "memory", "tuned_memory"}
    assert m["vs_compressors"]["memory_alone"]["history"] == "alone"
    ratio = m["vs_compressors"]["memory"]["ratio"]["xz -9e"]
    assert ratio == pytest.approx(summ["arms"]["memory"]["heldout"]["bpb"]
                                  / summ["compressors"]["xz -9e"]["heldout"]["primed"])
    assert m["across_sessions"]["gain"] == pytest.approx(summ["arms"]["memory_alone"]["heldout"]["bpb"]
                                                         - summ["arms"]["memory"]["heldout"]["bpb"])
    text = write_eval_report(res, tmp_path, "python cli.py eval ...").read_text()
    assert "The session memory against the compressors" in text and "Learning across sessions" in text


def _same_results(a: dict, b: dict) -> None:
    assert [s["sid"] for s in a["sessions"]] == [s["sid"] for s in b["sessions"]]
    for x, y in zip(a["sessions"], b["sessions"]):
        assert set(x["bits"]) == set(y["bits"]) == set(ARMS)
        for arm in ARMS:
            np.testing.assert_array_equal(x["bits"][arm], y["bits"][arm], err_msg=f"{x['sid']} {arm}")
        assert x["compressors"] == y["compressors"]
    assert a["canary"] == b["canary"]
    assert a["trained_sessions"] == b["trained_sessions"]
    assert a["merge_stats"] == b["merge_stats"]
    for arm in ARMS:
        assert a["timing"][arm]["updates"] == b["timing"][arm]["updates"]
        assert a["timing"][arm]["gate"] == b["timing"][arm]["gate"]


def test_limited_then_interrupted_run_continues_to_the_unbroken_runs_results(result, tmp_path):
    """--max-sessions 1, then a run interrupted while training on session 2, then a plain rerun: the same
    numbers as one unbroken run (every arm: learners, replay, update gate, dynamic merges, carried state)."""
    cfg, model, res = result
    out = tmp_path / "ev"
    first = run_eval(dataclasses.replace(cfg, out=str(out), max_sessions=1), model, log=lambda m: None)
    prog = out / "progress"
    assert sorted(p.name for p in prog.iterdir()) == ["arms.npz", "run.json", "session-0000.npz"]
    assert first["progress"]["scored"] == 1 and first["progress"]["total"] == 3
    assert "limited by --max-sessions 1: 1 of 3 sessions" in write_eval_report(first, out, "cmd").read_text()

    full = dataclasses.replace(cfg, out=str(out))
    calls = []

    def interrupted(self, s, wins):  # Ctrl-C arrives while session 2 is being trained on
        calls.append(s.sid)
        raise KeyboardInterrupt
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Arm, "train", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_eval(full, model, log=lambda m: None)
    assert calls == [res["sessions"][1]["sid"]]
    assert sorted(p.name for p in prog.iterdir()) == ["arms.npz", "run.json", "session-0000.npz"]  # no temp file
    assert Progress(out).done() == 1
    partial = saved_results(full, interrupted=True)
    assert partial["progress"]["scored"] == 1 and partial["progress"]["interrupted"]
    assert "interrupted after 1 of 3 sessions" in write_eval_report(partial, out, "cmd").read_text()

    logs = []
    again = run_eval(full, model, log=logs.append)
    assert "continuing after 1 finished session" in logs[0]
    _same_results(again, res)
    assert Progress(out).done() == 3 and len(list(prog.glob("session-*.npz"))) == 3
    assert run_eval(full, model, log=lambda m: None)["progress"]["scored"] == 3  # done: nothing recomputed


def test_a_continuation_with_other_settings_or_model_is_refused(result):
    cfg, model, _ = result
    prog = f"{cfg.out}/progress"
    with pytest.raises(CheckpointMismatch, match=rf"^{re.escape(prog)}: cannot continue this run: setting --ctx-len 16 "
                                                 r"differs from the saved run's 32; .* use a new --out"):
        run_eval(dataclasses.replace(cfg, ctx_len=16), model, log=lambda m: None)
    with pytest.raises(CheckpointMismatch, match="setting --arms"):
        run_eval(dataclasses.replace(cfg, arms=("frozen", "tuned")), model, log=lambda m: None)
    with pytest.raises(CheckpointMismatch, match="another base model"):
        run_eval(cfg, Model(SMALL, init_params(SMALL, 1, live_output=True), ByteTokenizer()), log=lambda m: None)


def test_no_verdict_from_one_heldout_session(result, tmp_path):
    """The demo stream has one held-out session: no interval, no better/worse claim, strict JSON."""
    _, _, res = result
    summ = summarize(res)
    assert summ["n_heldout_sessions"] == 1
    v = summ["verdict"]["heldout"]
    assert v["by_arm"] is None and "at least 2 held-out sessions; this run has 1" in v["note"]
    assert all(summ["arms"][a]["heldout"]["gain_ci95"] is None for a in ARMS)
    assert summ["verdict"]["train"]["by_arm"] is not None  # two training sessions: a verdict there
    text = write_eval_report(res, tmp_path, "cmd").read_text()
    assert "none on the held-out stream: a verdict needs at least 2 held-out sessions" in text
    assert "on the held-out stream: better" not in text and "on the held-out stream: worse" not in text

    def no_nan(x):
        raise AssertionError(f"summary.json holds {x}")
    saved = json.loads((tmp_path / "summary.json").read_text(), parse_constant=no_nan)
    assert saved["verdict"]["heldout"]["by_arm"] is None
