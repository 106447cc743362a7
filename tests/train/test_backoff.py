"""Learning that stops without a word (issue 25, item 1): the learning rate backs off while the update gate keeps
rolling updates back, one line says so, one warning says the run is stalled, the backoff survives a resume, and
`inspect` and the dashboard say "stalled"."""

from __future__ import annotations

import json
import logging
import shutil
import types
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

import rwkvjax
from rwkvjax.eval.inspect import format_inspect, inspect, learning_status
from rwkvjax.serve.dashboard.tail import MetricsTail
from rwkvjax.train.learner import Learner
from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
from rwkvjax.train.run import DEMO_MODEL, DEMO_TRACES, TrainConfig, Trainer
from rwkvjax.train.run_state import LrBackoff
from rwkvjax.train.trainable import init_trainable


def _step(backoff, step, decision):
    rec = {"step": step, "gate": decision}
    backoff.after_step(types.SimpleNamespace(step=step, record=rec))
    return rec


def test_the_rate_halves_after_k_rollbacks_in_a_row_down_to_the_floor_and_warns_once(caplog):
    learner = types.SimpleNamespace(lr_scale=1.0)
    b = LrBackoff(learner, lr=1.0, after=2, floor=0.2, warn_after=5)
    with caplog.at_level(logging.WARNING, logger="rwkvjax.train.run_state"):
        recs = [_step(b, i + 1, "rolled_back") for i in range(8)]
    assert [r["lr_scale"] for r in recs] == [1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2]  # floor 0.2 / lr 1.0
    assert learner.lr_scale == 0.2
    assert [r["step"] for r in recs if "lr_backoff" in r] == [2, 4, 6]  # at the floor: no more backoffs
    assert "learning rate 0.25 -> 0.2" in recs[5]["lr_backoff"]
    assert [r["step"] for r in recs if "stall_warning" in r] == [5]      # one warning per streak
    assert [r["stalled"] for r in recs] == [False] * 4 + [True] * 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and all("\n" not in x for x in lines)        # 3 backoffs + 1 warning, one line each
    assert sum("stalled" in x for x in lines) == 1
    # a quarantined window neither ends nor extends the streak; an accepted update ends it
    assert _step(b, 9, "quarantined")["rollback_streak"] == 8
    rec = _step(b, 10, "accepted")
    assert rec["rollback_streak"] == 0 and not rec["stalled"] and rec["lr_scale"] == 0.2  # the rate stays lower


def test_no_backoff_when_off_or_when_the_rate_is_already_at_the_floor():
    for after, lr in ((0, 1.0), (2, 0.01)):
        learner = types.SimpleNamespace(lr_scale=1.0)
        b = LrBackoff(learner, lr=lr, after=after, floor=0.01, warn_after=100)
        recs = [_step(b, i + 1, "rolled_back") for i in range(6)]
        assert learner.lr_scale == 1.0 and not any("lr_backoff" in r for r in recs)


def test_a_scaled_update_moves_the_state_that_share_of_the_way(model):
    from rwkvjax.train.data import stream_windows
    config, params, tok = model.arch, model.params, model.tokenizer
    wins = stream_windows("s", tok.encode("def main():\n    return compute(1, 2)\n" * 4), 32, tok)[:1]

    def moved(scale):
        tr0 = init_trainable(config)
        tx = state_tuning_optimizer(tr0, OptimConfig(state_lr=0.5, state_lr_final=0.5, decay_steps=10))
        learner = Learner(config, params, tr0, tx, ctx_len=32, live_per_step=1, max_traces=None)
        learner.lr_scale = scale
        learner.update(wins)
        return np.asarray(learner.trainable.wkv)
    full, half = moved(1.0), moved(0.5)
    assert np.abs(full).max() > 0
    np.testing.assert_allclose(half, 0.5 * full, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def demo():
    # a trained model: a random one's canaries only get better whatever the update
    return rwkvjax.load(DEMO_MODEL)


def _cfg(traces, ckpt, steps, **kw):
    # a tiny canary bound and a learning rate that wrecks the state: the gate refuses every update
    return TrainConfig(ckpt_dir=str(ckpt), source=(str(traces),), steps=steps, ctx_len=16, merges=False,
                       replay_per_step=1, model=str(DEMO_MODEL), memory=False, lr=50.0, lr_final=50.0,
                       gate_canary_rel=1e-6, gate_quarantine_bpb=1e6, gate_slice_every=0, save_every=3,
                       lr_backoff_after=2, stall_warn_after=3, **kw)


def _records(ckpt: Path) -> list[dict]:
    return [json.loads(x) for x in (ckpt / "metrics.jsonl").read_text().splitlines()]


def test_a_run_whose_every_update_is_refused_backs_off_warns_resumes_and_says_stalled(demo, tmp_path, caplog):
    traces = tmp_path / "projects"
    shutil.copytree(DEMO_TRACES, traces)
    ckpt = tmp_path / "ck"
    chex.clear_trace_counter()  # every Trainer compiles its own step
    with caplog.at_level(logging.WARNING, logger="rwkvjax.train.run_state"):
        Trainer(_cfg(traces, ckpt, 6), model=demo).run(progress=False)
    recs = _records(ckpt)
    assert [r["gate"] for r in recs] == ["rolled_back"] * 6
    assert [r["lr_scale"] for r in recs] == [1, 0.5, 0.5, 0.25, 0.25, 0.125]
    assert [r["step"] for r in recs if r.get("stall_warning")] == [3]
    said = [r.getMessage() for r in caplog.records]
    assert sum("learning rate" in x and "->" in x for x in said) == 3 and sum("stalled" in x for x in said) == 1

    # the backoff is run state: a resumed run goes on from the checkpoint's rate and streak
    caplog.clear()
    chex.clear_trace_counter()
    t = Trainer(_cfg(traces, ckpt, 8), model=demo)
    assert t.learner.lr_scale == 0.125 and t.backoff.streak == 6
    t.run(progress=False)
    recs = _records(ckpt)
    assert [r["lr_scale"] for r in recs[6:]] == [0.125, 0.0625] and recs[-1]["rollback_streak"] == 8
    assert not any("stalled" in r.getMessage() for r in caplog.records)  # the warning was given already

    rep = inspect(ckpt)
    assert rep["learning"]["stalled"] and rep["learning"]["rollback_streak"] == 8
    assert rep["learning"]["lr"] == pytest.approx(50.0 * 0.0625)
    text = format_inspect(rep)
    assert "stalled: the last 8 updates were all rolled back" in text

    tail = MetricsTail(ckpt / "metrics.jsonl")
    tail.poll()
    got = tail.since(-1, 0)
    assert got["stalled"].startswith("stalled: the last 8 updates were all rolled back")
    assert [e["step"] for e in got["events"] if e["decision"] == "learning rate backed off"] == [2, 4, 6, 8]


def test_inspect_says_learning_until_the_streak_reaches_the_setting():
    cfg = {"gate": True, "lr": 1.0, "stall_warn_after": 3}
    rows = [{"step": 1, "gate": "accepted"}, {"step": 2, "gate": "rolled_back"}, {"step": 3, "gate": "rolled_back"}]
    s = learning_status(rows, cfg, None)
    assert not s["stalled"] and s["text"].startswith("learning: 2 updates")
    # a run from before the trainer counted: the trailing rolled-back records (quarantined ones skipped)
    rows += [{"step": 4, "gate": "quarantined"}, {"step": 5, "gate": "rolled_back"}]
    s = learning_status(rows, cfg, {"scale": 0.5, "streak": 3})
    assert s["stalled"] and s["rollback_streak"] == 3 and s["text"].startswith("stalled:") and s["lr"] == 0.5
    assert learning_status(rows, {**cfg, "gate": False}, None) is None


def test_the_dashboard_says_stalled_only_while_the_newest_record_does(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "gate": "rolled_back", "rollback_streak": 3, "stalled": True, "lr": 0.25},
            {"step": 2, "gate": "accepted", "rollback_streak": 0, "stalled": False, "lr": 0.25}]
    path.write_text(json.dumps(rows[0]) + "\n")
    tail = MetricsTail(path)
    tail.poll()
    assert tail.since(-1, 0)["stalled"] == ("stalled: the last 3 updates were all rolled back by the update gate "
                                            "(learning rate now 0.25); lower --lr or raise --gate-canary-rel")
    with open(path, "a") as f:
        f.write(json.dumps(rows[1]) + "\n")
    tail.poll()
    assert tail.since(-1, 0)["stalled"] is None


def test_scale_update_is_exact_on_a_tree():
    from rwkvjax.train.learner import scale_update
    before = {"a": jax.numpy.ones(3), "b": jax.numpy.zeros(2)}
    after = {"a": jax.numpy.full(3, 3.0), "b": jax.numpy.full(2, -2.0)}
    out = scale_update(before, after, 0.25)
    np.testing.assert_allclose(np.asarray(out["a"]), 1.5)
    np.testing.assert_allclose(np.asarray(out["b"]), -0.5)


def test_a_backoff_or_stall_warning_is_recorded_whatever_the_log_cadence(tmp_path):
    from rwkvjax.train.hooks import MetricsLog
    log_ = MetricsLog(tmp_path / "metrics.jsonl", every=10)
    for step, extra in ((1, {}), (2, {"lr_backoff": "halved"}), (3, {"stall_warning": "stalled"}), (4, {})):
        log_.after_step(types.SimpleNamespace(step=step, record={"step": step, **extra}))
    assert [r["step"] for r in _records(tmp_path)] == [2, 3]
