"""The training loop: hooks run at their periods and at the end, a veto rolls the update back, the learner
update is the one `train` and `eval` share."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import rwkvjax
from rwkvjax.model.init import init_params
from rwkvjax.train.data import Window
from rwkvjax.train.learner import Learner
from rwkvjax.train.loop import Hook, Veto, train_loop
from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
from rwkvjax.train.replay import ReplayBuffer, ReplaySettings
from rwkvjax.train.trainable import init_trainable

SMALL = rwkvjax.Architecture(256, 64, 1, 128, 32, 32, 32, 32)


def _learner(replay_per_step=1):
    params = init_params(SMALL, 0, live_output=True)
    tr0 = init_trainable(SMALL)
    tx = state_tuning_optimizer(tr0, OptimConfig(state_lr=0.1, decay_steps=10))
    return Learner(SMALL, params, tr0, tx, ctx_len=16, live_per_step=1, replay_per_step=replay_per_step,
                   replay=ReplayBuffer(ReplaySettings(capacity=8)), max_traces=None)


def _batches(n):
    rng = np.random.default_rng(0)
    for i in range(n):
        yield [Window(f"s{i}", rng.integers(1, 256, 16).astype(np.int32), 16, 16)]


class Recorder(Hook):
    def __init__(self, every):
        self.every, self.steps, self.ended = every, [], None

    def after_step(self, info):
        self.steps.append(info.step)

    def at_end(self, step, reason):
        self.ended = (step, reason)


class VetoEven(Hook):
    may_veto = True

    def after_step(self, info):
        return Veto("even step") if info.step % 2 == 0 else None


def _describe(step, upd):
    return {"step": step, "loss": upd.metrics["loss"]}


def test_hooks_run_at_their_period_and_at_the_end():
    every1, every3 = Recorder(1), Recorder(3)
    step, reason = train_loop(_learner(), _batches(7), [every1, every3], step=0, steps=7, stop=threading.Event(),
                              describe=_describe)
    assert (step, reason) == (7, "done")
    assert every1.steps == list(range(1, 8)) and every3.steps == [3, 6]
    assert every1.ended == (7, "done") == every3.ended


def test_source_end_without_step_budget_stops_and_with_budget_replays():
    rec = Recorder(1)
    assert train_loop(_learner(), _batches(2), [rec], step=0, steps=None, stop=threading.Event(),
                      describe=_describe) == (2, "source exhausted")
    empty_after = (b for b in list(_batches(2)) + [[]] * 3)  # [] = no new text: replay-only steps
    assert train_loop(_learner(), empty_after, [], step=0, steps=5, stop=threading.Event(),
                      describe=_describe) == (5, "done")


def test_a_veto_rolls_the_update_back():
    lr = _learner()
    seen = []

    class Watch(Hook):
        def after_step(self, info):
            seen.append((info.step, info.record.get("rolled_back"), np.asarray(info.learner.trainable.wkv).copy(),
                         len(info.learner.replay)))

    train_loop(lr, _batches(4), [VetoEven(), Watch()], step=0, steps=4, stop=threading.Event(), describe=_describe)
    (s1, r1, w1, n1), (s2, r2, w2, n2), (s3, r3, w3, n3), (s4, r4, w4, n4) = seen
    assert r1 is None and r2 == "even step" and r3 is None and r4 == "even step"
    np.testing.assert_array_equal(w2, w1)  # step 2 undone: S0 as after step 1
    assert n2 == n1 and n4 == n3  # and the replay buffer too
    assert not np.array_equal(w3, w1)


def test_at_end_runs_when_a_step_fails():
    rec = Recorder(1)

    def bad():
        yield from _batches(1)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        train_loop(_learner(), bad(), [rec], step=0, steps=5, stop=threading.Event(), describe=_describe)
    assert rec.ended == (1, "error")


def test_stop_event_interrupts():
    stop = threading.Event()

    class StopAt2(Hook):
        def after_step(self, info):
            if info.step == 2:
                stop.set()

    assert train_loop(_learner(), _batches(9), [StopAt2()], step=0, steps=9, stop=stop,
                      describe=_describe) == (2, "interrupted")
