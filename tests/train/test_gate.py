"""The update gate: screening, rollback on canary damage, quarantine, the A-GEM projection, its state."""

from __future__ import annotations

import dataclasses
import random
import threading

import jax.numpy as jnp
import numpy as np
import pytest

import rwkvjax
from rwkvjax.train.data import stream_windows
from rwkvjax.train.gate import GateSettings, UpdateGate, robust_z
from rwkvjax.train.learner import Learner
from rwkvjax.train.loop import train_loop
from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
from rwkvjax.train.probe import default_canaries, read_texts
from rwkvjax.train.replay import ReplayBuffer, ReplaySettings
from rwkvjax.train.run import DEMO_MODEL
from rwkvjax.train.trainable import init_trainable

CTX = 64


@pytest.fixture(scope="module")
def demo():
    loaded = rwkvjax.load(DEMO_MODEL)
    config, params = loaded.arch, loaded.params
    return config, params, loaded.tokenizer, read_texts(default_canaries())


def _gate(demo, **kw):
    config, params, tok, canaries = demo
    return UpdateGate(config, params, tok, canaries, ctx_len=CTX, settings=GateSettings(**kw))


def _learner(demo, lr):
    config, params, _, _ = demo
    tr0 = init_trainable(config)
    tx = state_tuning_optimizer(tr0, OptimConfig(state_lr=lr, state_lr_final=lr, decay_steps=100))
    return Learner(config, params, tr0, tx, ctx_len=CTX, live_per_step=1, replay_per_step=1,
                   replay=ReplayBuffer(ReplaySettings(capacity=16)), max_traces=None)


def _windows(demo, name, text):
    tok = demo[2]
    return stream_windows(name, tok.encode(text), CTX, tok)


def test_robust_z_floors_the_mad():
    assert robust_z(1.0, [0.0] * 10, 1e-3) == pytest.approx(1.0 / 1.4826e-3)
    assert robust_z(0.0, [0.0, 1.0, 2.0], 1e-3) == pytest.approx(-1 / 1.4826)


def test_screen_skips_repeats_and_canary_copies(demo):
    gate = _gate(demo)
    text = "def parse(line):\n    key, _, value = line.partition('=')\n    return key.strip(), value\n" * 3
    first = _windows(demo, "a", text[:CTX])[0]
    assert gate.sources.screen(first) is None
    assert "redundant" in gate.sources.screen(dataclasses.replace(first, session="b"))
    canary = next(iter(demo[3].values()))
    w = _windows(demo, "c", canary[1000:1000 + CTX])[0]
    assert "canary passage" in gate.sources.screen(w)
    # a short shared phrase is not a copy
    w = _windows(demo, "d", "x = 1\n" + canary[1000:1000 + 40] + "\ny = 2 and more text after it")[0]
    assert gate.sources.screen(w) is None


def _run(learner, gate, windows, steps):
    recs = []

    def describe(step, upd):
        rec = {"step": step, "live_sessions": [w.session for w in upd.live]}
        recs.append(rec)
        return rec
    train_loop(learner, ([w] for w in windows), [gate], step=0, steps=steps, stop=threading.Event(),
               describe=describe)
    return recs


def test_a_damaging_update_is_rolled_back_and_leaves_nothing(demo):
    rng = random.Random(0)
    junk = "".join(chr(rng.randrange(33, 127)) for _ in range(CTX * 4))
    learner = _learner(demo, lr=50.0)  # a learning rate that wrecks the state in one step
    gate = _gate(demo, quarantine_bpb=100.0, project=False)
    recs = _run(learner, gate, _windows(demo, "junk", junk), steps=3)
    assert [r["gate"] for r in recs] == ["rolled_back"] * 3
    assert all("above its start" in r["gate_reason"] for r in recs)
    np.testing.assert_array_equal(np.asarray(learner.trainable.wkv), 0.0)   # nothing of it stayed
    assert len(learner.replay) == 0 and learner.updates == 0
    assert gate.counts["rolled_back"] == 3


def test_out_of_distribution_heavy_writes_are_quarantined(demo):
    rng = random.Random(1)
    noise = "".join(chr(rng.randrange(0x100, 0x250)) for _ in range(CTX))
    prose = read_texts(default_canaries())
    clean = next(iter(prose.values()))[5000:5000 + CTX * 2]
    learner = _learner(demo, lr=0.05)
    gate = _gate(demo, quarantine_bpb=2.0, quarantine_grad=1e-6, project=False)
    wins = _windows(demo, "noise", noise)[:2] + _windows(demo, "clean", clean)[:2]
    recs = _run(learner, gate, wins, steps=4)
    by = {r["live_sessions"][0]: [] for r in recs}
    for r in recs:
        by[r["live_sessions"][0]].append(r["gate"])
    assert by["noise"] == ["quarantined"] * 2 and by["clean"] == ["accepted"] * 2
    assert all(r["ood_ratio"] >= 2.0 for r in recs if r["gate"] == "quarantined")
    assert {w.session for w in learner.replay.windows} == {"clean"}  # quarantined windows never enter replay


def test_projection_removes_the_first_order_canary_increase(demo):
    """The learner applies the gate's projector to its own update (no hook edits the learner afterwards)."""
    learner = _learner(demo, lr=0.5)
    gate = _gate(demo)
    text = next(iter(demo[3].values()))[5000:5000 + CTX]
    wins = _windows(demo, "t", text)
    snap = learner.snapshot()
    start = np.asarray(snap.trainable.wkv)  # (the learner takes the snapshot's arrays back, and donates them)
    _, g = gate.canary.canary_and_grad(snap.trainable)
    learner.update(wins)  # the same update without the projector raises the canary loss to first order
    assert float(jnp.vdot(learner.trainable.wkv - start, g.wkv)) > 0
    learner.rollback(snap)
    learner.projector = gate.projector
    share = learner.update(wins).projected_share
    d = learner.trainable.wkv - start
    assert share is not None and 0.0 < share <= 1.0
    assert float(jnp.vdot(d, g.wkv)) <= 1e-6 * float(jnp.linalg.norm(d) * jnp.linalg.norm(g.wkv)) + 1e-12


def test_a_disabled_projector_leaves_the_update_and_says_nothing(demo):
    learner = _learner(demo, lr=0.5)
    learner.projector = _gate(demo, project=False).projector
    text = next(iter(demo[3].values()))[5000:5000 + CTX]
    assert learner.update(_windows(demo, "t", text)).projected_share is None
    assert learner.projector.grad is None  # nothing was read for it


def test_gate_state_round_trips(demo):
    gate = _gate(demo, slice_every=2)
    for i, w in enumerate(_windows(demo, "s", "some text that is long enough for a few windows " * 8)):
        gate.sources.divert(w)
    gate.start_canary, gate.last_canary, gate.ref_grad = 3.0, 2.9, 0.01
    gate.deltas.extend([0.001, -0.002])
    other = _gate(demo, slice_every=2)
    other.load_state_dict(gate.state_dict())
    assert other.state_dict() == gate.state_dict()
    assert len(other.sources.slice("")) == len(gate.sources.slice("")) > 0
    mine, theirs = gate.sources.redundancy._recent, other.sources.redundancy._recent
    assert list(theirs) == list(mine) and len(mine) > 0  # a resumed run screens alike
    again = _windows(demo, "t", "some text that is long enough for a few windows " * 4)[0]
    assert other.sources.screen(again) == gate.sources.screen(again)
